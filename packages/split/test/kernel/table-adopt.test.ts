// What a killed or failed apply leaves in the maps, and how the table gets back to the truth. Endpoint slots no
// service entry points at (an apply killed between its batches: new versions written, or old ones not yet
// deleted) are retired when the table adopts the maps (deleted after a grace period), and ids are never reused; a batch the kernel refuses
// half-way leaves the table re-read from the maps, so the next apply is planned from what is installed.
import { describePrivileged } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { compile, ServiceTable, SplitDatapath, validate } from '../../src/index.js';
import { addr16, fromAddr16 } from '../../src/maps.js';
import { service, slice, snapshot } from '../support.js';

const svc = (i: number, eps: string[]) => ({ svc: service(`s${i}`, `127.0.64.${i}`, 80), slice: slice(`s${i}`, eps, 8080) });
const services = (list: ReturnType<typeof svc>[]) => compile(validate(snapshot({ services: list.map((s) => s.svc), endpointSlices: list.map((s) => s.slice) }))).services;

describePrivileged('split table after an interrupted apply', () => {
  let dp: SplitDatapath;
  beforeAll(() => {
    dp = SplitDatapath.load({ maxServices: 8, maxEndpoints: 12 });
  });
  afterAll(() => dp?.close());

  const slots = () => [...dp.endpointsMap.getBatch()].map(([k]) => `${k.svcId}.${k.version}.${k.backend}.${k.index}`).sort();
  /** Every slot a service entry points at. */
  const referenced = () =>
    [...dp.servicesMap.getBatch()]
      .flatMap(([, v]) => Array.from({ length: v.nbackends }, (_, b) => Array.from({ length: v.nendpoints[b]! }, (_, i) => `${v.id}.${v.version}.${b}.${i}`)).flat())
      .sort();
  const junk = (svcId: number, version: number, n: number) =>
    Array.from({ length: n }, (_, index) => [{ svcId, version, backend: 0, index }, { addr: addr16('127.0.65.1'), port: 9, family: 2, check: 0 }] as const);

  it('adopt retires endpoint slots no service points at (gone after a grace period), and new ids are above every id seen', async () => {
    const table = new ServiceTable(dp.servicesMap, dp.endpointsMap);
    table.adopt();
    table.apply(services([svc(1, ['127.0.65.1', '127.0.65.2']), svc(2, ['127.0.65.3'])]));
    const installed = referenced();
    expect(slots()).toEqual(installed);
    // What a SIGKILL between batches leaves: a next version of service 1 written but not switched to, a slot
    // past a service's count, and slots of a service id whose entry was never written.
    const v1 = [...dp.servicesMap.getBatch()].find(([k]) => k.addr.equals(addr16('127.0.64.1')))![1];
    dp.endpointsMap.setBatch([...junk(v1.id, v1.version + 1, 2), ...junk(v1.id, v1.version, 3).slice(2), ...junk(40, 1, 2)]);
    expect(slots()).toHaveLength(installed.length + 5);

    const restarted = new ServiceTable(dp.servicesMap, dp.endpointsMap);
    expect(restarted.adopt()).toBe(2);
    expect(restarted.orphansFound).toBe(5);
    expect(restarted.retiredSlots).toBe(5);
    await restarted.reclaimed();
    expect(slots()).toEqual(installed);
    restarted.apply(services([svc(1, ['127.0.65.1', '127.0.65.2']), svc(2, ['127.0.65.3']), svc(3, ['127.0.65.4'])]));
    const ids = [...dp.servicesMap.getBatch()].map(([k, v]) => [fromAddr16(k.addr, 2), v.id] as const).sort();
    expect(ids.find(([a]) => a === '127.0.64.3')![1]).toBeGreaterThan(40);
    expect(slots()).toEqual(referenced());
  });

  it('a batch the kernel refuses half-way: the table is re-read from the maps and the next apply converges', async () => {
    const table = new ServiceTable(dp.servicesMap, dp.endpointsMap);
    table.adopt();
    table.apply(services([svc(1, ['127.0.65.1', '127.0.65.2']), svc(2, ['127.0.65.3'])]));
    await table.reclaimed();
    expect(slots()).toEqual(referenced());
    // Slots the table does not know of fill the endpoint map: 3 installed + 8 unknown of 12.
    dp.endpointsMap.setBatch(junk(50, 1, 8));
    // Moving every endpoint needs 3 new slots: the capacity check (3 + 3 <= 12) passes, the kernel refuses the 2nd.
    const moved = services([svc(1, ['127.0.66.1', '127.0.66.2']), svc(2, ['127.0.66.3'])]);
    expect(() => table.apply(moved)).toThrow(/E2BIG|no space|full/i);
    // Re-read: the slots nothing points at (the unknown ones, the half-written new version) are retired, then gone.
    await table.reclaimed();
    expect(slots()).toEqual(referenced());
    expect(table.size).toBe(2);
    table.apply(moved);
    await table.reclaimed();
    expect(slots()).toEqual(referenced());
    const eps = [...dp.endpointsMap.getBatch()].map(([, v]) => fromAddr16(v.addr, 2)).sort();
    expect(eps).toEqual(['127.0.66.1', '127.0.66.2', '127.0.66.3']);
  });

  it('a new version goes above one retired but not yet deleted: no live slot is written onto a retired key', async () => {
    const table = new ServiceTable(dp.servicesMap, dp.endpointsMap);
    table.adopt();
    table.apply(services([svc(5, ['127.0.65.5'])]));
    await table.reclaimed();
    const v5 = [...dp.servicesMap.getBatch()].find(([k]) => k.addr.equals(addr16('127.0.64.5')))![1];
    // An apply undone after writing version v+1 of service 5: its slot stays, retired by the next adoption.
    dp.endpointsMap.setBatch(junk(v5.id, v5.version + 1, 1));
    const restarted = new ServiceTable(dp.servicesMap, dp.endpointsMap);
    restarted.adopt();
    expect(restarted.retiredSlots).toBe(1);
    // Before its grace period has passed, service 5 changes endpoints: v+2, so deleting v+1 takes nothing live.
    restarted.apply(services([svc(5, ['127.0.65.6'])]));
    const now5 = [...dp.servicesMap.getBatch()].find(([k]) => k.addr.equals(addr16('127.0.64.5')))![1];
    expect(now5.version).toBe(v5.version + 2);
    await restarted.reclaimed();
    expect(slots()).toEqual(referenced());
    expect([...dp.endpointsMap.getBatch()].map(([, v]) => fromAddr16(v.addr, 2))).toEqual(['127.0.65.6']);
  });
});
