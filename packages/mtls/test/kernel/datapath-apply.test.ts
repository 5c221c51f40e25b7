// MtlsDatapath.apply: the maps get exactly what the snapshot says, a second identical apply writes nothing,
// and a snapshot with any bad part throws naming it before a map is touched (the previous one stays in force).
import { codec as c } from '@mesh/bpf';
import { createCgroup, describePrivileged, type Cgroup } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { MtlsDatapath, MtlsSnapshotError, type MtlsSnapshot } from '../../src/datapath/index.js';

describePrivileged('MtlsDatapath.apply', () => {
  let cg: Cgroup;
  let dp: MtlsDatapath;

  const good = (): MtlsSnapshot => ({
    dataplane: { outbound: { ipv4: '127.0.0.50', ipv6: '::1', port: 15001 }, inboundSource: { ipv4: '10.0.0.3' } },
    enrolled: [{ cgroup: cg.path, mode: 'STRICT', ports: { 8080: 'PERMISSIVE', 9090: 'STRICT' } }, { cgroup: 12345n }],
    destinations: ['10.1.0.7', '10.1.0.8:8080', '[fd00::7]:443', '::ffff:10.1.0.9'],
  });

  beforeAll(async () => {
    cg = await createCgroup('mtlsapply');
    dp = MtlsDatapath.load({ maxConnections: 1000, maxDestinations: 100, maxWorkloads: 10 });
  });
  afterAll(async () => {
    dp?.close();
    await cg?.close();
  });

  it('writes what the snapshot says, and a second identical apply writes nothing', () => {
    expect(dp.apply(good())).toEqual({ written: 1 + 4 + 3 + 2, deleted: 0 });
    expect(dp.fill()).toEqual({
      workloads: { used: 2, max: 10 },
      destinations: { used: 4, max: 100 },
      ports: { used: 3, max: 65536 },
      connections: { used: 0, max: 1000 },
      local_pairs: { used: 0, max: 65536 },
      local_connections: { used: 0, max: 65536 },
    });
    const dests = [...dp.destsMap.keys()].map((k) => `${k.family}:${c.bytesToIp(k.family === 2 ? k.addr.subarray(0, 4) : k.addr)}:${k.port}`).sort();
    // An IPv4-mapped address is held as IPv4, as the programs look it up.
    expect(dests).toEqual(['10:fd00::7:443', '2:10.1.0.7:0', '2:10.1.0.8:8080', '2:10.1.0.9:0']);
    expect(dp.apply(good())).toEqual({ written: 0, deleted: 0 });
  });

  it('a bad part throws naming it, and nothing is written', () => {
    const bad: [string, (s: MtlsSnapshot) => void, RegExp][] = [
      ['port', (s) => (s.dataplane.outbound.port = 0), /dataplane\.outbound\.port: expected a port/],
      ['family', (s) => (s.dataplane.outbound.ipv4 = '::1'), /dataplane\.outbound\.ipv4: expected an IPv4 address/],
      ['source', (s) => (s.dataplane.inboundSource.ipv6 = 'nope'), /dataplane\.inboundSource\.ipv6: expected an IP address/],
      ['cgroup', (s) => (s.enrolled[1] = { cgroup: `${cg.path}/missing` }), /enrolled\[1\]\.cgroup: .*ENOENT|enrolled\[1\]\.cgroup: .*no such/i],
      ['twice', (s) => (s.enrolled[1] = { cgroup: cg.path }), /enrolled\[1\]\.cgroup: cgroup \d+ enrolled twice/],
      ['mode', (s) => (s.enrolled[0]!.ports = { 8080: 'DISABLE' as 'STRICT' }), /enrolled\[0\]\.ports\.8080: expected "STRICT" or "PERMISSIVE"/],
      ['dest', (s) => s.destinations.push('10.1.0.10:99999'), /destinations\[5\]: expected a port/],
      ['dest text', (s) => s.destinations.push('web.default'), /destinations\[5\]: expected "ip", "ip:port"/],
    ];
    for (const [what, spoil, message] of bad) {
      const s = good();
      // Changes that would be written if the snapshot were applied in part.
      s.destinations.unshift('10.2.0.1');
      s.enrolled[0]!.mode = 'PERMISSIVE';
      spoil(s);
      expect(() => dp.apply(s), what).toThrow(MtlsSnapshotError);
      expect(() => dp.apply(s), what).toThrow(message);
      expect(dp.fill().destinations.used, what).toBe(4);
      expect(dp.fill().ports.used, what).toBe(3);
    }
  });

  it('withdrawing deletes: no workload, no destination, only the data plane addresses left', () => {
    const s = good();
    expect(dp.apply({ ...s, enrolled: [], destinations: [] })).toEqual({ written: 0, deleted: 2 + 4 + 3 });
    expect(dp.fill()).toMatchObject({ workloads: { used: 0 }, destinations: { used: 0 }, ports: { used: 0 } });
  });

  it('originalDestination: a peer without a port is a TypeError; an unknown peer is undefined', () => {
    expect(() => dp.originalDestination('10.0.0.1')).toThrow(TypeError);
    expect(dp.originalDestination('10.0.0.1:40000')).toBeUndefined();
  });
});
