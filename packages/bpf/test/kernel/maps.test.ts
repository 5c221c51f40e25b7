// Map semantics against the real kernel, one map type per block, through maps created from user space.
import { describePrivileged } from '@mesh/testkit';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';

import { BpfError, BpfMap, codec as c, numPossibleCpus, PerCpuMap } from '../../src/index.js';

const opened: { close(): void }[] = [];
function track<T extends { close(): void }>(m: T): T {
  opened.push(m);
  return m;
}
afterEach(() => opened.splice(0).forEach((m) => m.close()));

const pair = c.struct({ a: c.u32, b: c.u64 });

describePrivileged('hash', () => {
  it('get/set/delete with update flags any, noexist, exist', () => {
    const m = track(BpfMap.create({ type: 'hash', maxEntries: 16 }, { key: c.u32, value: pair }));
    expect(m.get(1)).toBeUndefined();
    m.set(1, { a: 10, b: 100n });
    expect(m.get(1)).toEqual({ a: 10, b: 100n });
    expect(() => m.set(1, { a: 11, b: 0n }, 'noexist')).toThrow(expect.objectContaining({ code: 'EEXIST', op: 'map_update' }));
    expect(() => m.set(2, { a: 11, b: 0n }, 'exist')).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    m.set(1, { a: 12, b: 1n }, 'exist');
    expect(m.get(1)).toEqual({ a: 12, b: 1n });
    expect(m.delete(1)).toBe(true);
    expect(m.delete(1)).toBe(false);
    expect(m.has(1)).toBe(false);
  });

  it('is full at maxEntries: E2BIG names the map', () => {
    const m = track(BpfMap.create({ type: 'hash', maxEntries: 4, name: 'tiny' }, { key: c.u32, value: c.u32 }));
    for (let i = 0; i < 4; i++) m.set(i, i);
    const err = (() => {
      try {
        m.set(99, 1);
      } catch (e) {
        return e as BpfError;
      }
    })();
    expect(err).toBeInstanceOf(BpfError);
    expect(err?.code).toBe('E2BIG');
    expect(err?.message).toMatch(/^map_update tiny: .*\(E2BIG\)/);
  });

  it('iterates every key once, and entries() matches get()', () => {
    const m = track(BpfMap.create({ type: 'hash', maxEntries: 1000 }, { key: c.u32, value: c.u32 }));
    for (let i = 0; i < 500; i++) m.set(i, i * 3);
    const keys = [...m.keys()].sort((a, b) => a - b);
    expect(keys).toEqual(Array.from({ length: 500 }, (_, i) => i));
    for (const [k, v] of m) expect(v).toBe(k * 3);
    expect(m.clear()).toBe(500);
    expect([...m.keys()]).toEqual([]);
  });

  it('batch update, lookup and delete agree with single operations', () => {
    const m = track(BpfMap.create({ type: 'hash', maxEntries: 5000 }, { key: c.u32, value: c.u64 }));
    const entries = Array.from({ length: 3000 }, (_, i) => [i, BigInt(i) * 7n] as const);
    expect(m.setBatch(entries)).toBe(3000);
    expect(m.get(2999)).toBe(2999n * 7n);
    const got = m.getBatch({ batchSize: 128 });
    expect(got.length).toBe(3000);
    expect(new Map(got)).toEqual(new Map(entries));
    expect(m.deleteBatch(entries.slice(0, 1000).map(([k]) => k))).toBe(1000);
    expect(m.get(0)).toBeUndefined();
    expect(m.get(1000)).toBe(7000n);
    const drained = m.getBatch({ batchSize: 500, andDelete: true });
    expect(drained.length).toBe(2000);
    expect([...m.keys()].length).toBe(0);
  });

  it('count() is the number of keys: empty, after inserts, after deletes, at capacity', () => {
    const m = track(BpfMap.create({ type: 'hash', maxEntries: 2048 }, { key: c.u32, value: c.u32 }));
    expect(m.count()).toBe(0);
    m.setBatch(Array.from({ length: 1500 }, (_, i) => [i * 7, i] as [number, number]));
    expect(m.count()).toBe(1500);
    for (let i = 0; i < 100; i++) m.delete(i * 7);
    expect(m.count()).toBe(1400);
    m.setBatch(Array.from({ length: 648 }, (_, i) => [100_000 + i, i] as [number, number]));
    expect(m.count()).toBe(2048);
    const arr = track(BpfMap.create({ type: 'array', maxEntries: 33 }, { key: c.u32, value: c.u32 }));
    expect(arr.count()).toBe(33); // an array has every index
  });

  it('take() looks up and deletes in one step', () => {
    const m = track(BpfMap.create({ type: 'hash', maxEntries: 4 }, { key: c.u32, value: c.u32 }));
    m.set(5, 55);
    expect(m.take(5)).toBe(55);
    expect(m.take(5)).toBeUndefined();
  });
});

describePrivileged('lru_hash', () => {
  it('evicts the least recently used entry instead of failing when full', () => {
    const m = track(BpfMap.create({ type: 'lru_hash', maxEntries: 128 }, { key: c.u32, value: c.u32 }));
    for (let i = 0; i < 1000; i++) m.set(i, i);
    const n = [...m.keys()].length;
    expect(n).toBeGreaterThan(0);
    expect(n).toBeLessThanOrEqual(128);
    // The newest key survives eviction.
    expect(m.get(999)).toBe(999);
  });
});

describePrivileged('array', () => {
  it('has every index from creation, zeroed; delete is refused', () => {
    const m = track(BpfMap.create({ type: 'array', maxEntries: 8 }, { key: c.u32, value: c.u64 }));
    expect([...m.values()]).toEqual(Array(8).fill(0n));
    m.set(3, 42n);
    expect(m.get(3)).toBe(42n);
    expect(m.get(8)).toBeUndefined();
    expect(() => m.delete(3)).toThrow(expect.objectContaining({ code: 'EINVAL', op: 'map_delete' }));
    expect(() => m.set(3, 1n, 'noexist')).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    const batch = m.getBatch({ batchSize: 3 });
    expect(batch.map(([k]) => k)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });
});

describePrivileged('per-CPU maps', () => {
  const counters = c.struct({ packets: c.u64n, bytes: c.u64n });

  it('percpu_array returns one value per possible CPU and setPerCpu writes each slot', () => {
    const n = numPossibleCpus();
    const m = track(PerCpuMap.create({ type: 'percpu_array', maxEntries: 2 }, { key: c.u32, value: counters }));
    expect(m.get(0)).toEqual(Array(n).fill({ packets: 0, bytes: 0 }));
    m.setPerCpu(1, Array.from({ length: n }, (_, i) => ({ packets: i + 1, bytes: 10 * (i + 1) })));
    const got = m.get(1)!;
    expect(got.length).toBe(n);
    expect(got.map((v) => v.packets)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(m.getReduced(1, (a, b) => ({ packets: a.packets + b.packets, bytes: a.bytes + b.bytes }))).toEqual({
      packets: (n * (n + 1)) / 2,
      bytes: (10 * n * (n + 1)) / 2,
    });
    expect(() => m.setPerCpu(1, [{ packets: 1, bytes: 1 }, ...Array(n).fill({ packets: 0, bytes: 0 })])).toThrow(RangeError);
  });

  it('percpu_hash: set() writes the same value to every CPU; values with odd sizes are padded per slot', () => {
    const odd = c.struct({ x: c.u32, y: c.u8 }); // 8 bytes with padding; per-CPU slots round to 8
    const m = track(PerCpuMap.create({ type: 'percpu_hash', maxEntries: 8 }, { key: c.u16, value: odd }));
    m.set(7, { x: 1, y: 2 });
    expect(m.get(7)).toEqual(Array(numPossibleCpus()).fill({ x: 1, y: 2 }));
    expect([...m.keys()]).toEqual([7]);
    expect(m.getBatch()).toEqual([[7, Array(numPossibleCpus()).fill({ x: 1, y: 2 })]]);
  });

  it('a per-CPU map cannot be opened as a plain map, nor the reverse', () => {
    const m = track(PerCpuMap.create({ type: 'percpu_array', maxEntries: 1 }, { key: c.u32, value: c.u64 }));
    const dir = mkdtempSync('/sys/fs/bpf/mesh-test-');
    try {
      m.pin(join(dir, 'pc'));
      expect(() => BpfMap.openPinned(join(dir, 'pc'), { key: c.u32, value: c.u64 })).toThrow(/percpu_array: open it with perCpuMap/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describePrivileged('lpm_trie', () => {
  const key = c.struct({ prefixlen: c.u32, addr: c.ipv4 });
  it('lookups return the longest matching prefix', () => {
    const m = track(BpfMap.create({ type: 'lpm_trie', maxEntries: 16, flags: 1 /* BPF_F_NO_PREALLOC */ }, { key, value: c.u32 }));
    m.set({ prefixlen: 8, addr: '10.0.0.0' }, 8);
    m.set({ prefixlen: 16, addr: '10.1.0.0' }, 16);
    m.set({ prefixlen: 32, addr: '10.1.2.3' }, 32);
    expect(m.get({ prefixlen: 32, addr: '10.9.9.9' })).toBe(8);
    expect(m.get({ prefixlen: 32, addr: '10.1.9.9' })).toBe(16);
    expect(m.get({ prefixlen: 32, addr: '10.1.2.3' })).toBe(32);
    expect(m.get({ prefixlen: 32, addr: '11.0.0.1' })).toBeUndefined();
    expect([...m.keys()].length).toBe(3);
  });
});

describePrivileged('queue', () => {
  it('take() pops in FIFO order; set() pushes', () => {
    const m = track(BpfMap.create({ type: 'queue', maxEntries: 4 }, { key: c.none, value: c.u32 }));
    for (const v of [3, 1, 2]) m.set(undefined, v);
    expect([m.take(undefined), m.take(undefined), m.take(undefined), m.take(undefined)]).toEqual([3, 1, 2, undefined]);
  });
});

describePrivileged('pinning', () => {
  it('a pinned map is the same map when opened again by path, after its first handle closed', () => {
    const dir = mkdtempSync('/sys/fs/bpf/mesh-test-');
    try {
      const a = BpfMap.create({ type: 'hash', maxEntries: 4 }, { key: c.u32, value: c.u32 });
      a.set(1, 111);
      a.pin(join(dir, 'm'));
      const id = a.info().id;
      a.close();
      const b = track(BpfMap.openPinned(join(dir, 'm'), { key: c.u32, value: c.u32 }));
      expect(b.info().id).toBe(id);
      expect(b.get(1)).toBe(111);
      expect(() => BpfMap.openPinned(join(dir, 'nope'), { key: c.u32, value: c.u32 })).toThrow(
        expect.objectContaining({ code: 'ENOENT', op: 'map_open_pinned' }),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
