// A ring buffer drained by a native thread keeps every record while JS is blocked (a loaded machine starves the
// event loop), counts what its bounded queue cannot hold, and closes without leaving a thread or an fd behind.
import { describePrivileged, fdCount, packet, threadsOf } from '@mesh/testkit';
import { readdirSync } from 'node:fs';
import { afterEach, expect, it } from 'vitest';

import { codec as c, liveHandles, packedRecords, type BpfObject } from '../../src/index.js';
import { dropEvent, lpmV4Key, testprog, testprogs } from '../programs.js';

const names = testprogs.tc_filter;
let obj: BpfObject | undefined;
afterEach(() => obj?.close());

function loadDropping(): BpfObject {
  const o = testprog(names.name).load();
  o.map(names.maps.deny_v4, { key: lpmV4Key, value: c.u32 }).set({ prefixlen: 8, addr: '198.0.0.0' }, 7);
  return o;
}

const denied = (sport: number) => packet({ family: 4, proto: 'udp', src: '198.18.9.9', dst: '198.18.0.1', sport, dport: 2 });

// Blocks the JS thread (no event loop turn), as a busy or starved event loop does.
const block = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

// The kernel ring (drop_events) holds 256 KiB / 64-byte records = 4,096 records. Chunks of 1,000 records 50 ms
// apart leave the thread 200 ms to drain before the kernel ring would fill, even on a loaded machine.
const CHUNK = 1000;
const GAP_MS = 50;

function produce(o: BpfObject, chunks: number): void {
  const prog = o.program(names.programs.tc_filter);
  for (let i = 1; i <= chunks; i++) {
    prog.testRun(denied(i), { repeat: CHUNK });
    block(GAP_MS);
  }
}

async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
}

const threads = () => readdirSync('/proc/self/task').length;

describePrivileged('ring buffer drained by a native thread', () => {
  it('JS blocked for 2 s while 40,000 records (10x the kernel ring) are produced: all arrive, in order', async () => {
    obj = loadDropping();
    const got: ReturnType<typeof dropEvent.decode>[] = [];
    const rb = obj.ringBuffer(names.maps.drop_events, (b) => got.push(...b), { codec: dropEvent, thread: { queueBytes: 64 << 20 } });
    produce(obj, 40); // 40 x 50 ms = 2 s without an event loop turn
    await until(() => got.length >= 40 * CHUNK, 20_000);
    expect(got.length).toBe(40 * CHUNK);
    // Chunk i's records carry source port i: ring order is production order.
    expect(got.every((e, i) => e.sport === Math.floor(i / CHUNK) + 1 && e.ruleId === 7)).toBe(true);
    expect(rb.stats()).toMatchObject({ records: 40 * CHUNK, dropped: 0, queuedBytes: 0 });
  }, 60_000);

  it('a full queue drops records and counts them; the first ones stay, in order', async () => {
    obj = loadDropping();
    const got: ReturnType<typeof dropEvent.decode>[] = [];
    // Room for exactly 1,000 records of dropEvent.size bytes.
    const rb = obj.ringBuffer(names.maps.drop_events, (b) => got.push(...b), { codec: dropEvent, thread: { queueBytes: 1000 * dropEvent.size } });
    produce(obj, 10);
    await until(() => got.length >= CHUNK, 20_000);
    await new Promise((r) => setTimeout(r, 100));
    expect(got.length).toBe(CHUNK);
    expect(got.every((e) => e.sport === 1)).toBe(true);
    expect(rb.stats()).toMatchObject({ records: CHUNK, dropped: 9 * CHUNK });
    // Once JS took them, the queue has room again.
    produce(obj, 1);
    await until(() => got.length >= 2 * CHUNK, 20_000);
    expect(got.length).toBe(2 * CHUNK);
    expect(rb.stats().dropped).toBe(9 * CHUNK);
  }, 60_000);

  it('packed: one Buffer per batch holds the records in order, each after its length; a full queue drops and counts', async () => {
    obj = loadDropping();
    const got: ReturnType<typeof dropEvent.decode>[] = [];
    let buffers = 0;
    // Room for exactly 1,000 records with their 4-byte lengths.
    const rb = obj.ringBuffer(
      names.maps.drop_events,
      (batches) => {
        for (const buf of batches) {
          buffers++;
          packedRecords(buf, (b, start, end) => {
            expect(end - start).toBe(dropEvent.size);
            got.push(dropEvent.decode(b, start));
          });
        }
      },
      { thread: { queueBytes: 1000 * (dropEvent.size + 4), packed: true } },
    );
    produce(obj, 3);
    await until(() => got.length >= CHUNK, 20_000);
    await new Promise((r) => setTimeout(r, 100));
    expect(got.length).toBe(CHUNK);
    expect(got.every((e) => e.sport === 1 && e.ruleId === 7)).toBe(true);
    expect(rb.stats()).toMatchObject({ records: CHUNK, dropped: 2 * CHUNK, queuedBytes: 0 });
    // Far fewer Buffers than records: the thread queues up to 256 records a chunk and a batch takes every chunk queued.
    expect(buffers).toBeLessThanOrEqual(CHUNK / 256 + 1);
    produce(obj, 1);
    expect(rb.consume()).toBeGreaterThanOrEqual(0);
    await until(() => got.length >= 2 * CHUNK, 20_000);
    expect(got.slice(CHUNK).every((e) => e.sport === 1)).toBe(true);
    expect(got.length).toBe(2 * CHUNK);
    expect(() => obj!.ringBuffer(names.maps.drop_events, () => {}, { codec: dropEvent, thread: { packed: true } })).toThrow(
      'ring buffer drop_events: thread.packed hands over raw records; it does not take a codec',
    );
  }, 60_000);

  it('packed with reuse: every batch is lent in one kept Buffer, the records in order', () => {
    obj = loadDropping();
    const prog = obj.program(names.programs.tc_filter);
    const memories = new Set<ArrayBufferLike>();
    const got: number[] = [];
    let batches = 0;
    const rb = obj.ringBuffer(
      names.maps.drop_events,
      (bufs) => {
        for (const buf of bufs) {
          batches++;
          memories.add(buf.buffer);
          packedRecords(buf, (b, start) => got.push(dropEvent.decode(b, start).sport));
        }
      },
      { thread: { packed: true, reuse: true } },
    );
    // Batches of 300, 600, 100 and 300 records, each delivered at once: the later ones fit the memory the largest
    // one grew to, the first ones smaller than it.
    [300, 600, 100, 300].forEach((n, i) => {
      prog.testRun(denied(i + 1), { repeat: n });
      expect(rb.consume()).toBe(n);
    });
    expect(batches).toBe(4);
    expect(got).toEqual([...[300, 600, 100, 300].entries()].flatMap(([i, n]) => new Array<number>(n).fill(i + 1)));
    // One allocation, grown once: at most two memories for four batches (a new Buffer each before).
    expect(memories.size).toBeLessThanOrEqual(2);
    expect(() => obj!.ringBuffer(names.maps.drop_events, () => {}, { thread: { reuse: true } })).toThrow(
      'ring buffer drop_events: thread.reuse lends the packed batch; it needs thread.packed',
    );
  });

  it('consume() delivers the ring and the queue synchronously, in batches of maxBatch', () => {
    obj = loadDropping();
    const sizes: number[] = [];
    const rb = obj.ringBuffer(names.maps.drop_events, (b) => sizes.push(b.length), { maxBatch: 64, thread: {} });
    obj.program(names.programs.tc_filter).testRun(denied(1), { repeat: 300 });
    expect(rb.consume()).toBe(300);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(300);
    expect(sizes.every((n) => n <= 64)).toBe(true);
    expect(rb.consume()).toBe(0);
  });

  it('close() joins the thread and frees its fds, twice is harmless, use after close is a TypeError', () => {
    obj = loadDropping();
    const prog = obj.program(names.programs.tc_filter);
    // One warm-up round: lazily opened fds (libbpf's feature probes) are not leaks.
    obj.ringBuffer(names.maps.drop_events, () => {}, { thread: {} }).close();
    const fds = fdCount(), tasks = threads(), live = liveHandles();
    for (let i = 0; i < 50; i++) {
      const rb = obj.ringBuffer(names.maps.drop_events, () => {}, { thread: { queueBytes: 1 << 20 } });
      expect(threads()).toBe(tasks + 1);
      prog.testRun(denied(1), { repeat: 10 });
      rb.close();
      rb.close();
      expect(() => rb.consume()).toThrow(TypeError);
    }
    expect(threads()).toBe(tasks);
    expect(fdCount()).toBe(fds);
    expect(liveHandles()).toBe(live);
  });

  it('thread.nice is the drain thread\'s nice value (the thread is named ringbuf)', async () => {
    obj = loadDropping();
    const rb = obj.ringBuffer(names.maps.drop_events, () => {}, { thread: { nice: -7 } });
    // The thread sets its nice value as it starts.
    const niceOf = () =>
      threadsOf().filter((t) => t.comm === 'ringbuf').map((t) => t.nice);
    await until(() => niceOf()[0] === -7, 5000);
    expect(niceOf()).toEqual([-7]);
    rb.close();
    expect(niceOf()).toEqual([]);
  });

  // For producers that submit without a wake-up (BPF_RB_NO_WAKEUP): the thread drains on a timer too. With no
  // records at all it still wakes every pollMs; without pollMs it sleeps until woken.
  it('thread.pollMs: the drain thread also wakes every pollMs milliseconds', async () => {
    obj = loadDropping();
    const switchesOf = () =>
      threadsOf().filter((t) => t.comm === 'ringbuf').map((t) => t.voluntarySwitches);
    for (const [pollMs, atLeast, below] of [[0, 0, 5], [10, 10, Infinity]] as const) {
      const rb = obj.ringBuffer(names.maps.drop_events, () => {}, { thread: pollMs ? { pollMs } : {} });
      await new Promise((r) => setTimeout(r, 50));
      const before = switchesOf();
      expect(before).toHaveLength(1);
      await new Promise((r) => setTimeout(r, 500));
      const woke = switchesOf()[0]! - before[0]!;
      expect(woke, `pollMs ${pollMs}`).toBeGreaterThanOrEqual(atLeast);
      expect(woke, `pollMs ${pollMs}`).toBeLessThan(below);
      rb.close();
    }
  });

  it('refuses a queue size out of range, naming it', () => {
    obj = loadDropping();
    expect(() => obj!.ringBuffer(names.maps.drop_events, () => {}, { thread: { queueBytes: 100 } })).toThrow(RangeError);
    expect(() => obj!.ringBuffer(names.maps.drop_events, () => {}, { thread: { queueBytes: 1.5 * 4096 + 0.5 } })).toThrow(/queueBytes/);
    expect(() => obj!.ringBuffer(names.maps.drop_events, () => {}, { thread: { nice: -21 } })).toThrow(/thread.nice must be an integer in \[-20, 19\]/);
    expect(() => obj!.ringBuffer(names.maps.drop_events, () => {}, { thread: { pollMs: 2.5 } })).toThrow(/thread.pollMs must be an integer in \[0, 10000\]/);
    expect(() => obj!.ringBuffer(names.maps.drop_events, () => {}, { thread: { pollMs: 10_001 } })).toThrow(/thread.pollMs/);
  });
});
