// A known-peer set larger than http_peers is written as far as it fits, never refused: the peers already known
// stay known (their series keep their names), the new ones fill what room is left, and the rest are counted
// (unnamedPeers) so that the agent can say how many peers show as "unknown". Metrics capacity must not refuse
// the config the routing is part of.
import { describePrivileged } from '@mesh/testkit';
import { afterAll, expect, it } from 'vitest';

import { MetricsDatapath, type MetricsInput } from '../../src/index.js';

const input = (addresses: string[]): MetricsInput => ({ knownAddresses: () => addresses, local: () => undefined, peer: () => undefined });
const addrs = (n: number, from: number) => Array.from({ length: n }, (_, i) => `127.62.0.${from + i}`);

describePrivileged('a known-peer set larger than its table', () => {
  const dp = MetricsDatapath.load({ maxPeers: 8 });
  afterAll(() => dp.close());

  it('writes what fits, the known peers first, and counts the rest; a set that fits again names them all', async () => {
    expect(dp.setKnownPeers(addrs(5, 1))).toEqual({ known: 5, unnamed: 0 });
    expect(dp.unnamedPeers()).toBe(0);

    // 5 known, 7 new, a table of 8: the 5 stay, 3 new ones fit, 4 are left out. Given new ones first.
    const bigger = input([...addrs(7, 100), ...addrs(5, 1)]);
    await dp.check(bigger);
    await dp.applyPart(bigger);
    expect(dp.fill().http_peers).toEqual({ used: 8, max: 8 });
    expect(dp.unnamedPeers()).toBe(4);
    const inMap = new Set(dp.knownPeers());
    for (const a of addrs(5, 1)) expect(inMap.has(a), a).toBe(true);
    expect(addrs(7, 100).filter((a) => inMap.has(a))).toHaveLength(3);

    // Six of the new ones alone: they fit, and every one is named.
    const smaller = input(addrs(6, 100));
    await dp.applyPart(smaller);
    expect(dp.unnamedPeers()).toBe(0);
    expect(new Set(dp.knownPeers())).toEqual(new Set(addrs(6, 100)));
  }, 30_000);
});
