// 10,000 real connections through a VIP split by weight land within 3 sigma of the binomial expectation.
import { createCgroup, describePrivileged, type Cgroup } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { SnapshotError, SplitDatapath } from '../../src/index.js';
import { dialScript, namedServer, route, service, slice, snapshot, expectWithinThreeSigma, type NamedServer } from '../support.js';

const VIP = '127.0.0.100';

describePrivileged('weighted split per connection', () => {
  let cg: Cgroup;
  let dp: SplitDatapath;
  let v1: NamedServer, v2: NamedServer;

  beforeAll(async () => {
    cg = await createCgroup('split');
    dp = SplitDatapath.load();
    dp.attach(cg.path);
    v1 = await namedServer('v1', '127.0.0.2');
    v2 = await namedServer('v2', '127.0.0.3');
  });
  afterAll(async () => {
    dp?.close();
    await cg?.close();
    await v1?.close();
    await v2?.close();
  });

  const topology = (w1: number | undefined, w2: number | undefined) =>
    snapshot({
      services: [service('reviews', VIP, 80), service('reviews-v1', '127.0.0.101', 80), service('reviews-v2', '127.0.0.102', 80)],
      endpointSlices: [slice('reviews-v1', [v1.host], v1.port), slice('reviews-v2', [v2.host], v2.port)],
      httpRoutes: [route('reviews', 'reviews', 80, [['reviews-v1', w1], ['reviews-v2', w2]])],
    });

  async function dial(count: number): Promise<{ done: number; byName: Record<string, number>; peers: Record<string, number>; errors: Record<string, number> }> {
    const r = await cg.run(process.execPath, [dialScript, VIP, '80', String(count), '32'], { timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout);
  }

  it('90/10: 10,000 connections split within 3 sigma; every one sees the VIP as its peer', async () => {
    const res = dp.apply(topology(90, 10));
    expect(res.routes[0]!.parents[0]!.conditions.map((c) => `${c.type}=${c.status}`)).toEqual(['Accepted=True', 'ResolvedRefs=True']);
    const n = 10_000;
    const r = await dial(n);
    expect(r.errors).toEqual({});
    expect(r.done).toBe(n);
    expect((r.byName.v1 ?? 0) + (r.byName.v2 ?? 0)).toBe(n);
    await expectWithinThreeSigma(r.byName.v1 ?? 0, n, 0.9, async () => (await dial(n)).byName.v1 ?? 0);
    expect(r.peers).toEqual({ [`${VIP}:80`]: n });
    expect(dp.counters().connect_rewrite).toBeGreaterThanOrEqual(BigInt(n));
    // Each socket's dialled address is forgotten when the socket is released: the table does not grow.
    expect(dp.fill().connections.used).toBe(0);
    expect(dp.counters().orig_full).toBe(0n);
  });

  it('0/100 sends everything to one side; the weight-0 backend gets nothing', async () => {
    dp.apply(topology(0, 100));
    const before = v1.accepted;
    const r = await dial(1000);
    expect(r.byName).toEqual({ v2: 1000 });
    expect(v1.accepted).toBe(before);
  });

  it('weight defaults to 1: two refs without weights split evenly', async () => {
    dp.apply(topology(undefined, undefined));
    const n = 2000;
    const r = await dial(n);
    await expectWithinThreeSigma(r.byName.v1 ?? 0, n, 0.5, async () => (await dial(n)).byName.v1 ?? 0);
  });

  it('all weights 0: the route is accepted, connections are refused rather than sent anywhere', async () => {
    const res = dp.apply(topology(0, 0));
    expect(res.routes[0]!.parents[0]!.conditions[0]!.message).toMatch(/weight 0/);
    const before = v1.accepted + v2.accepted;
    const r = await dial(20);
    expect(r.done).toBe(20);
    expect(r.errors).toEqual({ ECONNREFUSED: 20 });
    expect(v1.accepted + v2.accepted).toBe(before);
    expect(dp.counters().connect_no_backend).toBeGreaterThanOrEqual(20n);
  });

  it('an invalid snapshot is rejected whole: maps untouched, traffic keeps following the previous one', async () => {
    dp.apply(topology(90, 10));
    const before = { services: dp.servicesMap.getBatch(), endpoints: dp.endpointsMap.getBatch() };
    for (const bad of [
      topology(-1, 10),
      topology(2.5, 10),
      // A VIP collision: a new Service claims the address of reviews.
      { ...topology(50, 50), services: [...topology(50, 50).services, service('imposter', VIP, 80)] },
    ]) {
      expect(() => dp.apply(bad)).toThrow(SnapshotError);
    }
    expect({ services: dp.servicesMap.getBatch(), endpoints: dp.endpointsMap.getBatch() }).toEqual(before);
    const n = 2000;
    const r = await dial(n);
    await expectWithinThreeSigma(r.byName.v1 ?? 0, n, 0.9, async () => (await dial(n)).byName.v1 ?? 0);
  });
});
