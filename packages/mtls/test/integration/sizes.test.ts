// The mtls tables' capacities: sized from a config's counts (twice, a floor, a power of two) or given; a snapshot
// that outgrows one is refused whole, naming the option and the agent's flag, and the tables keep what they held.
import { describePrivileged } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { MtlsDatapath, mtlsTableSizesFor, type MtlsSnapshot } from '../../src/datapath/index.js';

const dataplane: MtlsSnapshot['dataplane'] = { outbound: { ipv4: '127.0.0.50', port: 15001 }, inboundSource: { ipv4: '10.0.0.3' } };

it('sizes follow the counts: twice, at least the floors, a power of two', () => {
  expect(mtlsTableSizesFor({ workloads: 0, ports: 0, destinations: 0 })).toEqual({ maxWorkloads: 1024, maxPorts: 4096, maxDestinations: 4096 });
  expect(mtlsTableSizesFor({ workloads: 600, ports: 3000, destinations: 5000 })).toEqual({ maxWorkloads: 2048, maxPorts: 8192, maxDestinations: 16384 });
});

describePrivileged('mtls table capacities', () => {
  let mtls: MtlsDatapath;
  beforeAll(() => {
    mtls = MtlsDatapath.load({ maxWorkloads: 2, maxPorts: 3, maxDestinations: 4, maxConnections: 5 });
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
});
