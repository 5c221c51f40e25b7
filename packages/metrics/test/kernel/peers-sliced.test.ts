// The known peers of a big config (20,000 workloads' and endpoints' addresses) are written in batches with the
// event loop served between them: an agent's /healthz answers meanwhile. Before, applyPart wrote them in one
// synchronous block (~150 ms at 20,000 addresses on a loaded 2-CPU machine) once check() had made the keys.
import { describePrivileged, loopTurnsWhile } from '@mesh/testkit';
import { afterAll, expect, it } from 'vitest';

import { MetricsDatapath, type MetricsInput } from '../../src/index.js';

const input = (addresses: string[]): MetricsInput => ({ knownAddresses: () => addresses, local: () => undefined, peer: () => undefined });
const addrs = (n: number, second: number) => Array.from({ length: n }, (_, i) => `127.${second}.${(i >> 8) & 0xff}.${i & 0xff}`);

describePrivileged('known peers written in slices', () => {
  const dp = MetricsDatapath.load({ maxPeers: 65_536 });
  afterAll(() => dp.close());

  it('writes 20,000 new and removes 20,000 old peer addresses with the event loop turning between batches', async () => {
    // As the agent does: the input checked is the input applied (check() made its keys already).
    const first = input(addrs(20_000, 60));
    await dp.check(first);
    const turnsFirst = await loopTurnsWhile(() => dp.applyPart(first));
    expect(dp.fill().http_peers!.used).toBe(20_000);

    const second = input(addrs(20_000, 61));
    await dp.check(second);
    const turnsSecond = await loopTurnsWhile(() => dp.applyPart(second));
    // The two sets are disjoint: 20,000 entries means the first set went and the second came.
    expect(dp.fill().http_peers!.used).toBe(20_000);
    // 20 batches of 1,024 written (and, the second time, 20 deleted): the loop turned between them.
    expect(turnsFirst).toBeGreaterThanOrEqual(10);
    expect(turnsSecond).toBeGreaterThanOrEqual(20);
  }, 60_000);
});
