// The mtls tables' capacities: sized from a config's counts (twice, a floor, a power of two) or given; a snapshot
// that outgrows one is refused whole, naming the option and the agent's flag, and the tables keep what they held.
import { describePrivileged } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { MtlsDatapath, mtlsTableSizesFor, type MtlsSnapshot } from '../../src/datapath/index.js';

const dataplane: MtlsSnapshot['dataplane'] = { outbound: { ipv4: '127.0.0.50', port: 15001 }, inboundSource: { ipv4: '10.0.0.3' } };

it('sizes follow the counts: twice, at least the floors, a power of two', () => {
  expect(mtlsTableSizesFor({ workloads: 0, ports: 0, destinations: 0 })).toEqual({ maxWorkloads: 1024, maxPorts: 4096, maxDestinations: 4096, maxLocalPairs: 4096 });
  expect(mtlsTableSizesFor({ workloads: 600, ports: 3000, destinations: 5000, localPairs: 3000 })).toEqual({ maxWorkloads: 2048, maxPorts: 8192, maxDestinations: 16384, maxLocalPairs: 8192 });
  // Pairs grow with the square of a node's workloads: sized from a config up to a cap, beyond it only by the flag.
  expect(mtlsTableSizesFor({ workloads: 600, ports: 3000, destinations: 5000, localPairs: 360_000 }).maxLocalPairs).toBe(65536);
});

describePrivileged('mtls table capacities', () => {
  let mtls: MtlsDatapath;
  beforeAll(() => {
    mtls = MtlsDatapath.load({ maxWorkloads: 2, maxPorts: 3, maxDestinations: 4, maxConnections: 5, maxLocalPairs: 2 });
  });
  afterAll(() => mtls?.close());

  it('the maps are made with the sizes given', () => {
    expect([mtls.enrolledMap.maxEntries, mtls.portsMap.maxEntries, mtls.destsMap.maxEntries, mtls.origMap.maxEntries]).toEqual([2, 3, 4, 5]);
  });

  it('a snapshot that outgrows a table is refused whole naming the option and the flag; the tables keep what they held', () => {
    const fits: MtlsSnapshot = { dataplane, enrolled: [{ cgroup: 11n, mode: 'STRICT' }, { cgroup: 12n }], destinations: ['10.1.0.1:80', '10.1.0.2:80'] };
    mtls.apply(fits);
    const held = () => [[...mtls.enrolledMap.entries()].length, [...mtls.portsMap.entries()].length, [...mtls.destsMap.entries()].length];
    expect(held()).toEqual([2, 1, 2]);
    const tooMany = (s: Partial<MtlsSnapshot>) => () => mtls.apply({ ...fits, ...s });
    expect(tooMany({ enrolled: [...fits.enrolled, { cgroup: 13n }] })).toThrow(
      /^3 enrolled workload cgroups do not fit mtls_enrolled \(2 entries\): raise maxWorkloads \(mesh-agent: --mtls-max-workloads/,
    );
    expect(tooMany({ enrolled: [{ cgroup: 11n, mode: 'STRICT', ports: { 80: 'PERMISSIVE', 81: 'STRICT', 82: 'STRICT' } }] })).toThrow(/^4 port modes .* do not fit mtls_ports \(3 entries\): raise maxPorts \(mesh-agent: --mtls-max-ports/);
    expect(tooMany({ destinations: ['10.1.0.9', '10.1.0.1:80', '10.1.0.2:80', '10.1.0.3:80', '10.1.0.4:80'] })).toThrow(/^5 mesh destinations do not fit mtls_dests \(4 entries\): raise maxDestinations \(mesh-agent: --mtls-max-destinations/);
    expect(() => mtls.check({ ...fits, destinations: ['10.1.0.1', '10.1.0.2', '10.1.0.3', '10.1.0.4', '10.1.0.5'] })).toThrow(/do not fit mtls_dests/);
    expect(held()).toEqual([2, 1, 2]);
  });

  it('local pairs: checked whole against the enrolled cgroups, the destinations and mtls_pairs; dropLocalPairs removes only what the new snapshot drops', () => {
    const base: MtlsSnapshot = { dataplane, enrolled: [{ cgroup: 11n, mode: 'STRICT' }, { cgroup: 12n }], destinations: ['10.1.0.1:80', '10.1.0.2:80'] };
    const pairs = (...p: [bigint, string][]) => ({ ...base, localPairs: p.map(([cgroup, destination]) => ({ cgroup, destination })) });
    mtls.apply(pairs([11n, '10.1.0.2:80'], [12n, '10.1.0.1:80']));
    const held = () => [...mtls.localPairsMap.keys()].map((k) => `${k.cgroupId}`).sort();
    expect(held()).toEqual(['11', '12']);
    expect(() => mtls.apply(pairs([13n, '10.1.0.1:80']))).toThrow(/^localPairs\[0\]\.cgroup: cgroup 13 is not enrolled$/);
    expect(() => mtls.apply(pairs([11n, '10.1.0.3:80']))).toThrow(/^localPairs\[0\]\.destination: 10\.1\.0\.3:80 is not a mesh destination$/);
    expect(() => mtls.apply(pairs([11n, '10.1.0.1:80'], [11n, '10.1.0.2:80'], [12n, '10.1.0.1:80']))).toThrow(
      /^3 allowed local pairs .* do not fit mtls_pairs \(2 entries\): raise maxLocalPairs \(mesh-agent: --mtls-max-local-pairs/,
    );
    expect(() => mtls.dropLocalPairs(pairs([11n, '10.1.0.1:80'], [11n, '10.1.0.2:80'], [12n, '10.1.0.1:80']))).toThrow(/do not fit mtls_pairs/);
    expect(held()).toEqual(['11', '12']);
    // The pair of cgroup 12 dropped, that of 11 kept; the new one (11 → .1) is written by apply, not here.
    expect(mtls.dropLocalPairs(pairs([11n, '10.1.0.2:80'], [11n, '10.1.0.1:80']))).toEqual({ written: 0, deleted: 1 });
    expect(held()).toEqual(['11']);
    mtls.apply(base);
    expect(held()).toEqual([]);
  });
});
