// Ring buffer records reach JS from the event loop, in batches, without consume() being called.
import { describePrivileged, packet } from '@mesh/testkit';
import { afterEach, expect, it } from 'vitest';

import { codec as c, RingBuffer, type BpfObject } from '../../src/index.js';
import { dropEvent, lpmV4Key, testprog, testprogs } from '../programs.js';

const names = testprogs.tc_filter;
let obj: BpfObject | undefined;
afterEach(() => obj?.close());

function loadDropping(): BpfObject {
  const o = testprog(names.name).load();
  o.map(names.maps.deny_v4, { key: lpmV4Key, value: c.u32 }).set({ prefixlen: 8, addr: '198.0.0.0' }, 7);
  return o;
}

const denied = packet({ family: 4, proto: 'udp', src: '198.18.9.9', dst: '198.18.0.1', sport: 1, dport: 2 });

describePrivileged('ring buffer', () => {
  it('delivers 1,000 records from the event loop, in batches, each decoded', async () => {
    obj = loadDropping();
    const got: ReturnType<typeof dropEvent.decode>[] = [];
    let calls = 0;
    const done = new Promise<void>((resolve) => {
      obj!.ringBuffer(
        names.maps.drop_events,
        (batch) => {
          calls++;
          got.push(...batch);
          if (got.length >= 1000) resolve();
        },
        { codec: dropEvent },
      );
    });
    // One syscall runs the program 1,000 times: 1,000 records wait in the ring before JS sees any.
    obj.program(names.programs.tc_filter).testRun(denied, { repeat: 1000 });
    expect(got.length).toBe(0);
    await done;
    expect(got.length).toBe(1000);
    expect(calls).toBeLessThan(1000);
    expect(got.every((e) => e.ruleId === 7 && e.sport === 1 && e.dport === 2)).toBe(true);
    // Timestamps are monotonic in ring order.
    expect(got.every((e, i) => i === 0 || e.tsNs >= got[i - 1]!.tsNs)).toBe(true);
  });

  it('maxBatch bounds the records per callback', () => {
    obj = loadDropping();
    const sizes: number[] = [];
    const rb = obj.ringBuffer(names.maps.drop_events, (b) => sizes.push(b.length), { maxBatch: 64 });
    obj.program(names.programs.tc_filter).testRun(denied, { repeat: 300 });
    expect(rb.consume()).toBe(300);
    expect(sizes).toEqual([64, 64, 64, 64, 44]);
    expect(rb.stats()).toEqual({ records: 300, batches: 5 });
  });

  it('raw records are Buffers of the record size; an idle ring never calls back', async () => {
    obj = loadDropping();
    const batches: Buffer[][] = [];
    obj.ringBuffer(names.maps.drop_events, (b) => batches.push(b), { ref: false });
    await new Promise((r) => setTimeout(r, 50));
    expect(batches).toEqual([]);
    obj.program(names.programs.tc_filter).testRun(denied);
    await new Promise((r) => setTimeout(r, 50));
    expect(batches.length).toBe(1);
    expect(batches[0]![0]!.length).toBe(dropEvent.size);
  });

  it('close() stops delivery; use after close is a TypeError', () => {
    obj = loadDropping();
    let n = 0;
    const rb = obj.ringBuffer(names.maps.drop_events, (b) => (n += b.length));
    rb.close();
    rb.close();
    obj.program(names.programs.tc_filter).testRun(denied);
    expect(() => rb.consume()).toThrow(TypeError);
    expect(n).toBe(0);
  });

  it('RingBuffer.open refuses a map that is not a ringbuf', () => {
    obj = loadDropping();
    const m = obj.map(names.maps.verdicts, { key: c.u32, value: c.u64 });
    expect(() => RingBuffer.open(m, () => {})).toThrow(/verdicts is array, not a ringbuf/);
  });
});
