// The HTTP/2 records' consumer is woken in batches, not per record: the programs submit without a wake-up until a
// quarter of the ring waits, and the drain thread also drains on a 20 ms timer. A wake-up per record (a context
// switch of the drain thread, and the kernel's work to wake it, per frame) cost more than all the rest per
// request (bench:metrics). h2load against nginx (h2c), both in the mesh: the streams are all counted, exact, and
// the drain thread's context switches stay far below the streams; a stream's frames (its request's HEADERS, the
// response's HEADERS and the DATA that ends it) come in two ring entries, not one per frame.
import { describePrivileged, ensureTool, threadsOf } from '@mesh/testkit';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { startNginxH2, topology, type Topology } from '../support.js';

const HOST = '127.0.0.14';
const REQUESTS = 10_000;

const ringThreads = () => new Set(threadsOf().filter((t) => t.comm === 'ringbuf').map((t) => t.tid));
/** A thread's context switches so far (voluntary: it waited; nonvoluntary: it was preempted). */
const switches = (tid: number): number => {
  const t = threadsOf().find((x) => x.tid === tid)!;
  return t.voluntarySwitches + t.involuntarySwitches;
};

describePrivileged('HTTP/2 records wake their consumer in batches', () => {
  let t: Topology;
  let dir: string;
  let port: number;
  let tid: number;

  beforeAll(async () => {
    t = await topology('meth2wake');
    const before = ringThreads();
    t.dp.consumeH2();
    const mine = [...ringThreads()].filter((x) => !before.has(x));
    expect(mine).toHaveLength(1);
    tid = mine[0]!;
    ({ dir, port } = await startNginxH2(t.cg, HOST, { prefix: 'mesh-h2-wake-', keepaliveRequests: REQUESTS + 100, locations: '    location / { return 200 "ok\\n"; }' }));
  }, 30_000);
  afterAll(async () => {
    await t?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(`h2load -n ${REQUESTS} -c 8 -m 1: every stream counted; the drain thread switched fewer than once per 10 streams`, async () => {
    const s0 = switches(tid);
    const r = await t.cg.run(ensureTool('h2load'), ['-n', String(REQUESTS), '-c', '8', '-m', '1', `http://${HOST}:${port}/`], { timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`status codes: ${REQUESTS} 2xx`));
    // Read before anything here consumes the ring itself (readH2): how often the thread switched meanwhile.
    await new Promise((res) => setTimeout(res, 300));
    const woke = switches(tid) - s0;
    const deadline = performance.now() + 30_000;
    let counted = 0;
    while (performance.now() < deadline) {
      counted = t.dp.readH2().http.filter((x) => x.port === port && x.direction === 'server' && x.status === 200).reduce((a, x) => a + x.count, 0);
      if (counted >= REQUESTS) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(counted).toBe(REQUESTS);
    expect(t.dp.readCounters().h2_drops).toBe(0);
    // A stream's frames (request HEADERS; response HEADERS, then in nginx's next packet the DATA that ends it) in
    // two ring entries: one record per packet, and the response's HEADERS-only record held back to go out with
    // the next; a few more entries for each connection's SETTINGS.
    const { entries, records, frames, bytes } = t.dp.readH2().counters!;
    console.log(`drain thread: ${woke} context switches for ${REQUESTS} streams; ${entries} ring entries, ${records} records, ${frames} frames, ${bytes} bytes`);
    expect(woke).toBeLessThan(REQUESTS / 10);
    expect(entries).toBeLessThan(REQUESTS * 2.2);
    expect(frames).toBeGreaterThanOrEqual(REQUESTS * 3);
  }, 180_000);
});

// While the consumer is behind (its thread not yet scheduled, or, here, not started), the records that keep coming
// ask for no wake-up each: one per quarter of the ring that fills. A wake-up asked for is the kernel's irq_work, a
// self-interrupt per record (on this VM an APIC write that traps: 11-14 % of the programs' time under h2load, perf).
// 2,400 streams (about 200 ring bytes each since the connection's identity goes once per direction, not in every
// record: ~470 KiB) into the 1 MiB ring with nothing draining it, then the
// consumer starts and counts every one: no record lost, no wake-up missed for good.
describePrivileged('HTTP/2 records ask for a wake-up once per quarter of the ring, not each while the consumer is behind', () => {
  const STREAMS = 2_400;
  let t: Topology;
  let dir: string;
  let port: number;

  beforeAll(async () => {
    t = await topology('meth2late');
    ({ dir, port } = await startNginxH2(t.cg, HOST, { prefix: 'mesh-h2-wake2-', keepaliveRequests: STREAMS + 100, locations: '    location / { return 200 "ok\\n"; }' }));
  }, 30_000);
  afterAll(async () => {
    await t?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(`h2load -n ${STREAMS} with no consumer running: one wake-up asked for (at most 4); then every stream counted`, async () => {
    const w0 = t.dp.readCounters().h2_wakeups;
    const r = await t.cg.run(ensureTool('h2load'), ['-n', String(STREAMS), '-c', '8', '-m', '1', `http://${HOST}:${port}/`], { timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`status codes: ${STREAMS} 2xx`));
    const asked = t.dp.readCounters().h2_wakeups - w0;
    console.log(`${asked} wake-ups asked for while ${STREAMS} streams' records waited in the ring`);
    expect(asked).toBeGreaterThan(0);
    expect(asked).toBeLessThanOrEqual(4);
    t.dp.consumeH2();
    const deadline = performance.now() + 30_000;
    let counted = 0;
    while (performance.now() < deadline) {
      counted = t.dp.readH2().http.filter((x) => x.port === port && x.direction === 'server' && x.status === 200).reduce((a, x) => a + x.count, 0);
      if (counted >= STREAMS) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(counted).toBe(STREAMS);
    expect(t.dp.readCounters().h2_drops).toBe(0);
  }, 180_000);
});
