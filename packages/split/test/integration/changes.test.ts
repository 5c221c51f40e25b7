// Weight and endpoint changes while traffic flows: established connections keep their backend and are never
// reset; new connections follow the new table.
import { createCgroup, describePrivileged, waitForLine, type Cgroup } from '@mesh/testkit';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { SplitDatapath } from '../../src/index.js';
import { dialScript, namedServer, route, service, slice, snapshot, expectWithinThreeSigma, type NamedServer } from '../support.js';

const VIP = '127.0.0.110';
const holdScript = fileURLToPath(new URL('../fixtures/hold.mjs', import.meta.url));

describePrivileged('changes under traffic', () => {
  let cg: Cgroup;
  let dp: SplitDatapath;
  let v1: NamedServer, v2: NamedServer, v1b: NamedServer;

  beforeAll(async () => {
    cg = await createCgroup('splitchg');
    dp = SplitDatapath.load();
    dp.attach(cg.path);
    v1 = await namedServer('v1', '127.0.0.4', { keepOpen: true });
    v1b = await namedServer('v1b', '127.0.0.6', { keepOpen: true });
    v2 = await namedServer('v2', '127.0.0.5', { keepOpen: true });
  });
  afterAll(async () => {
    dp?.close();
    await cg?.close();
    for (const s of [v1, v1b, v2]) await s?.close();
  });

  const topology = (w1: number, w2: number, v1Endpoints: NamedServer[] = [v1]) =>
    snapshot({
      services: [service('ratings', VIP, 80), service('ratings-v1', '127.0.0.111', 80), service('ratings-v2', '127.0.0.112', 80)],
      endpointSlices: [
        // Both v1 servers listen on their own port: one slice per port, as Kubernetes would have for two pods
        // on different ports.
        ...v1Endpoints.map((s, i) => slice('ratings-v1', [s.host], s.port, { name: `ratings-v1-${i}` })),
        slice('ratings-v2', [v2.host], v2.port),
      ],
      httpRoutes: [route('ratings', 'ratings', 80, [['ratings-v1', w1], ['ratings-v2', w2]])],
    });

  async function newConnections(n: number): Promise<Record<string, number>> {
    const r = await cg.run(process.execPath, [dialScript, VIP, '80', String(n), '32'], { timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { byName: Record<string, number>; errors: Record<string, number> };
    expect(out.errors).toEqual({});
    return out.byName;
  }

  it('100 long-lived connections keep their backend through two weight changes; new ones follow the weights', async () => {
    dp.apply(topology(90, 10));
    const hold = cg.spawn(process.execPath, [holdScript, VIP, '80', '100'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const [opened] = await waitForLine(hold, /^\{"opened":100.*$/, 30_000);
    const initial = JSON.parse(opened) as { byName: Record<string, number> };
    expect((initial.byName.v1 ?? 0) + (initial.byName.v2 ?? 0)).toBe(100);

    const rounds: [number, number][] = [[50, 50], [10, 90]];
    for (const [i, [w1, w2]] of rounds.entries()) {
      const stats = dp.apply(topology(w1, w2)).stats;
      // A weight change rewrites one service entry and no endpoint.
      expect(stats).toEqual({ serviceWrites: 1, serviceDeletes: 0, endpointWrites: 0, endpointDeletes: 0 });
      hold.stdin!.write('ping\n');
      const [line] = await waitForLine(hold, new RegExp(`^\\{"round":${i + 1},.*$`), 30_000);
      expect(JSON.parse(line)).toEqual({ round: i + 1, same: 100, changed: 0, dead: 0, errors: 0 });
      const n = 2000;
      const got = await newConnections(n);
      const p = w1 / (w1 + w2);
      await expectWithinThreeSigma(got.v1 ?? 0, n, p, async () => (await newConnections(n)).v1 ?? 0);
    }
    hold.stdin!.end();
  });

  it('an endpoint removed from its slice gets no new connection; one added gets its share', async () => {
    dp.apply(topology(100, 0, [v1, v1b]));
    const both = await newConnections(1000);
    await expectWithinThreeSigma(both.v1 ?? 0, 1000, 0.5, async () => (await newConnections(1000)).v1 ?? 0);
    const stats = dp.apply(topology(100, 0, [v1b])).stats;
    // Two service addresses change endpoints (ratings through its route, ratings-v1 itself): each gets a new
    // table version (ratings: v1b + v2; ratings-v1: v1b), then their old slots go (3 + 2).
    expect(stats).toEqual({ serviceWrites: 2, serviceDeletes: 0, endpointWrites: 3, endpointDeletes: 5 });
    const before = v1.accepted;
    const after = await newConnections(500);
    expect(after).toEqual({ v1b: 500 });
    expect(v1.accepted).toBe(before);
  });

  it('connections made while endpoint tables are swapped 60 times never find a service without backends', async () => {
    dp.apply(topology(50, 50, [v1]));
    const n = 6000;
    const dialing = cg.run(process.execPath, [dialScript, VIP, '80', String(n), '16'], { timeoutMs: 120_000 });
    // Alternate v1's endpoints between two servers: every apply writes a new table version and drops the old one.
    for (let i = 0; i < 60; i++) {
      dp.apply(topology(50, 50, i % 2 ? [v1] : [v1b]));
      await new Promise((r) => setTimeout(r, 5));
    }
    const r = await dialing;
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { done: number; byName: Record<string, number>; errors: Record<string, number> };
    expect(out.errors).toEqual({});
    expect(out.done).toBe(n);
    expect(Object.values(out.byName).reduce((a, b) => a + b, 0)).toBe(n);
    // The swaps happened while the client dialled: both tables served some of its connections.
    expect(out.byName.v1).toBeGreaterThan(0);
    expect(out.byName.v1b).toBeGreaterThan(0);
    // Lookups that met a half-swapped table, if any, were retried (table_retry) rather than refused.
    expect(dp.counters().connect_no_backend).toBe(0n);
  });
});
