// Opening and closing objects, maps, ring buffers and links, 1,000 times, leaves the fd count where it started.
import { createCgroup, describePrivileged, fdCount, openFds, type Cgroup } from '@mesh/testkit';
import { once } from 'node:events';
import { setFlagsFromString } from 'node:v8';
import { Worker } from 'node:worker_threads';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { BpfMap, codec as c, liveHandles, ObjectSpec } from '../../src/index.js';
import { testprog, testprogFile, testprogs } from '../programs.js';

const guard = testprogs.skb_guard;
const tc = testprogs.tc_filter;

describePrivileged('fd ownership', () => {
  let cg: Cgroup;
  beforeAll(async () => {
    cg = await createCgroup('leak');
  });
  afterAll(async () => cg?.close());

  // A round that loads an object costs ~13 ms here and ~45 ms on a slower machine of the same kind (libbpf 1.1
  // reads and parses the kernel's 5 MiB BTF on every load), and up to 3x that on a loaded CI machine; the other
  // operations cost under 1 ms. Fd and handle counts are compared exactly, so one leaked fd per round shows
  // after any number of rounds: the cheap operations repeat 1,000 times on one loaded object, loads 100 times.
  it('1,000 rounds of open, attach, consume and close on a loaded object leave no fd and no handle behind', () => {
    using obj = testprog(guard.name).load();
    using tcObj = testprog(tc.name).load();
    // One warm-up round: lazily opened fds (the addon itself, libbpf's feature probes) are not leaks.
    const round = () => {
      const stats = obj.perCpuMap(guard.maps.skb_stats, { key: c.u32, value: c.struct({ p: c.u64, b: c.u64 }) });
      stats.get(0);
      const blocked = obj.map(guard.maps.blocked_ports, { key: c.u16, value: c.u64 });
      blocked.set(80, 0n);
      const ingress = obj.program(guard.programs.skb_ingress).attachCgroup(cg.path);
      const egress = obj.program(guard.programs.skb_egress).attachCgroup(cg.path);
      ingress.info();
      const standalone = BpfMap.create({ type: 'lru_hash', maxEntries: 8 }, { key: c.u32, value: c.u32 });
      standalone.set(1, 1);
      const rb = tcObj.ringBuffer(tc.maps.drop_events, () => {});
      rb.consume();
      for (const h of [rb, standalone, egress, ingress, blocked, stats]) h.close();
    };
    round();
    const fds = fdCount();
    const handles = liveHandles();
    for (let i = 0; i < 1000; i++) round();
    expect({ fds: fdCount(), handles: liveHandles() }, JSON.stringify(openFds().slice(-5))).toEqual({ fds, handles });
  });

  // 100 loads: ~1.5 s here, ~5 s on the slower machine, ~15 s with it loaded; the budget is 4x that.
  it('100 rounds of load, open, attach, consume and close leave no fd and no handle behind', { timeout: 60_000 }, () => {
    const round = () => {
      const obj = testprog(guard.name).load();
      obj.perCpuMap(guard.maps.skb_stats, { key: c.u32, value: c.struct({ p: c.u64, b: c.u64 }) }).get(0);
      obj.map(guard.maps.blocked_ports, { key: c.u16, value: c.u64 }).set(80, 0n);
      obj.program(guard.programs.skb_ingress).attachCgroup(cg.path).info();
      obj.program(guard.programs.skb_egress).attachCgroup(cg.path);
      // Closing the object closes its links, maps and programs.
      obj.close();
    };
    const ringRound = () => {
      using obj = testprog(tc.name).load();
      obj.ringBuffer(tc.maps.drop_events, () => {}).consume();
    };
    round();
    ringRound();
    const fds = fdCount();
    const handles = liveHandles();
    for (let i = 0; i < 90; i++) round();
    for (let i = 0; i < 10; i++) ringRound();
    expect({ fds: fdCount(), handles: liveHandles() }, JSON.stringify(openFds().slice(-5))).toEqual({ fds, handles });
  });

  it('a worker thread that exits with handles open releases them (environment cleanup hook)', async () => {
    const fds = fdCount();
    const entry = new URL('../../dist/index.js', import.meta.url).href;
    const worker = new Worker(
      `import(${JSON.stringify(entry)}).then(({ BpfMap, ObjectSpec, codec }) => {
         const held = [ObjectSpec.file(${JSON.stringify(testprogFile(testprogs.tc_filter.name))}).load()];
         for (let i = 0; i < 50; i++) held.push(BpfMap.create({ type: 'array', maxEntries: 1 }, { key: codec.u32, value: codec.u32 }));
         globalThis.held = held;
         const port = require('node:worker_threads').parentPort;
         // A listener keeps the worker alive until terminate(): it must not exit on its own before the check.
         port.on('message', () => {});
         port.postMessage(held.length);
       });`,
      { eval: true },
    );
    const [n] = (await once(worker, 'message')) as [number];
    expect(n).toBe(51);
    expect(fdCount(), JSON.stringify(openFds().map((f) => f.target))).toBeGreaterThan(fds + 50);
    await worker.terminate();
    expect(fdCount()).toBe(fds);
  });

  it('handles dropped without close() are released by the garbage collector', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const fds = fdCount();
    (() => {
      for (let i = 0; i < 200; i++) BpfMap.create({ type: 'array', maxEntries: 1 }, { key: c.u32, value: c.u32 });
    })();
    expect(fdCount()).toBe(fds + 200);
    for (let i = 0; i < 20 && fdCount() > fds; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
    expect(fdCount()).toBe(fds);
  });
});
