// Reads a scrape makes in a few syscalls rather than one per key: count() through batch lookups (equal to the
// key walk, for hashes, LRU hashes, arrays and per-CPU arrays), and getBatch({ max }) reading an array's first
// entries only.
import { describePrivileged } from '@mesh/testkit';
import { afterEach, expect, it } from 'vitest';

import { BpfMap, codec as c, PerCpuMap } from '../../src/index.js';

const opened: { close(): void }[] = [];
function track<T extends { close(): void }>(m: T): T {
  opened.push(m);
  return m;
}
afterEach(() => opened.splice(0).forEach((m) => m.close()));

describePrivileged('batch reads', () => {
  it.each(['hash', 'lru_hash'] as const)('count() of a %s equals its entries, across several batches', (type) => {
    const m = track(BpfMap.create({ type, maxEntries: 20_000 }, { key: c.u32, value: c.u64 }));
    expect(m.count()).toBe(0);
    const entries: [number, bigint][] = Array.from({ length: 10_001 }, (_, i) => [i * 7, BigInt(i)]);
    for (let i = 0; i < entries.length; i += 4096) m.setBatch(entries.slice(i, i + 4096));
    expect(m.count()).toBe(10_001);
    m.deleteBatch(entries.slice(0, 5_000).map(([k]) => k));
    expect(m.count()).toBe(5_001);
  });

  it('count() of an array or a per-CPU array is its size, as the key walk says', () => {
    expect(track(BpfMap.create({ type: 'array', maxEntries: 5_000 }, { key: c.u32, value: c.u64 })).count()).toBe(5_000);
    expect(track(PerCpuMap.create({ type: 'percpu_array', maxEntries: 300 }, { key: c.u32, value: c.u64 })).count()).toBe(300);
  });

  it('getBatch({ max }) reads an array from index 0 up to max, whatever the batch size', () => {
    const m = track(PerCpuMap.create({ type: 'percpu_array', maxEntries: 1_000 }, { key: c.u32, value: c.u64 }));
    for (const i of [0, 1, 2, 299, 300, 999]) m.set(i, BigInt(i + 1));
    for (const batchSize of [1, 7, 256, 1_000]) {
      const got = m.getBatch({ batchSize, max: 301 });
      expect(got.map(([k]) => k)).toEqual(Array.from({ length: 301 }, (_, i) => i));
      expect(got[299]![1].every((v) => v === 300n)).toBe(true);
      expect(got[300]![1].every((v) => v === 301n)).toBe(true);
    }
    expect(m.getBatch({ max: 5_000 })).toHaveLength(1_000);
  });
});
