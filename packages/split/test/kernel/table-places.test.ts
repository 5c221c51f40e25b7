// A service handed again as the same object at the same place in the list is taken as installed without a
// lookup (a one-weight reload of 50,000 services): removals, moves and changes around such services are still
// written, and what the maps hold is what a table made afresh writes.
import { describePrivileged } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { type CompiledService, compile, SplitDatapath, validate } from '../../src/index.js';
import { service, slice, snapshot } from '../support.js';

const compiled = (n: number, tag = 0) =>
  compile(
    validate(
      snapshot({
        services: Array.from({ length: n }, (_, i) => service(`s${i}`, `127.0.70.${i + 1}`, 80)),
        endpointSlices: Array.from({ length: n }, (_, i) => slice(`s${i}`, [`127.0.71.${i + 1}`, `127.0.72.${tag + i + 1}`], 8080)),
      }),
    ),
  ).services;

describePrivileged('split table: services found by their place', () => {
  let dp: SplitDatapath;
  let fresh: SplitDatapath;
  beforeAll(() => {
    dp = SplitDatapath.load({ maxServices: 64, maxEndpoints: 256 });
    fresh = SplitDatapath.load({ maxServices: 64, maxEndpoints: 256 });
  });
  afterAll(() => {
    dp?.close();
    fresh?.close();
  });

  /** Service address → its endpoints' addresses, as the maps hold them. */
  const routes = (d: SplitDatapath) => {
    const eps = new Map<string, string[]>();
    for (const [k, v] of d.endpointsMap.getBatch()) eps.set(`${k.svcId}.${k.version}.${k.backend}.${k.index}`, [`${v.addr[0]}.${v.addr[1]}.${v.addr[2]}.${v.addr[3]}:${v.port}`]);
    const out: Record<string, string[]> = {};
    for (const [k, v] of d.servicesMap.getBatch()) {
      const list: string[] = [];
      for (let i = 0; i < v.nendpoints[0]!; i++) list.push(...(eps.get(`${v.id}.${v.version}.0.${i}`) ?? ['missing']));
      out[`${k.addr[0]}.${k.addr[1]}.${k.addr[2]}.${k.addr[3]}:${k.port}`] = list.sort();
    }
    return { routes: out, slots: d.endpointsMap.count() };
  };
  // Compared once the replaced slots are deleted (after a grace period: see ServiceTable).
  const same = async (list: CompiledService[]) => {
    const a = dp.applyCompiled({ services: list, routes: [] });
    fresh.applyCompiled({ services: [], routes: [] });
    fresh.applyCompiled({ services: [...list], routes: [] });
    await Promise.all([dp.reclaimed(), fresh.reclaimed()]);
    expect(routes(dp)).toEqual(routes(fresh));
    return a.stats;
  };

  it('removes, moves and changes services around those kept in place', async () => {
    const all = compiled(6);
    await same(all);
    // The same objects at the same places: nothing written.
    expect(await same([...all])).toEqual({ serviceWrites: 0, serviceDeletes: 0, endpointWrites: 0, endpointDeletes: 0 });
    // The last one removed; then one from the middle (those after it move up a place).
    expect((await same(all.slice(0, 5))).serviceDeletes).toBe(1);
    expect((await same([...all.slice(0, 2), ...all.slice(3, 5)])).serviceDeletes).toBe(1);
    // A list changed in place after it was applied (the table keeps a copy): the changed service is written.
    const list = [...all.slice(0, 2), ...all.slice(3, 5)];
    await same(list);
    list[1] = compiled(6, 100)[1]!;
    expect((await same(list)).endpointWrites).toBe(2);
    // Back to all six, one of them changed.
    const back = [...all];
    back[4] = compiled(6, 50)[4]!;
    const s = await same(back);
    expect(s.serviceWrites).toBe(4);
    expect(routes(dp).routes['127.0.70.5:80']).toEqual(['127.0.71.5:8080', '127.0.72.55:8080']);
  });
});
