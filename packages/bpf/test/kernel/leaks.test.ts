// Opening and closing 1,000 objects, maps, ring buffers and links leaves the fd count where it started.
import { createCgroup, describePrivileged, fdCount, openFds, type Cgroup } from '@mesh/testkit';
import { once } from 'node:events';
import { setFlagsFromString } from 'node:v8';
import { Worker } from 'node:worker_threads';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { BpfMap, codec as c, embedded, liveHandles, ObjectSpec } from '../../src/index.js';

const guard = embedded.skb_guard;
const tc = embedded.tc_filter;

describePrivileged('fd ownership', () => {
  let cg: Cgroup;
  beforeAll(async () => {
    cg = await createCgroup('leak');
  });
  afterAll(async () => cg?.close());

  it('1,000 rounds of load, open, attach, consume and close leave no fd and no handle behind', () => {
    // One warm-up round: lazily opened fds (the addon itself, libbpf's feature probes) are not leaks.
    const round = () => {
      const obj = ObjectSpec.embedded(guard.name).load();
      const stats = obj.perCpuMap(guard.maps.skb_stats, { key: c.u32, value: c.struct({ p: c.u64, b: c.u64 }) });
      stats.get(0);
      const blocked = obj.map(guard.maps.blocked_ports, { key: c.u16, value: c.u64 });
      blocked.set(80, 0n);
      const ingress = obj.program(guard.programs.skb_ingress).attachCgroup(cg.path);
      obj.program(guard.programs.skb_egress).attachCgroup(cg.path);
      ingress.info();
      const standalone = BpfMap.create({ type: 'lru_hash', maxEntries: 8 }, { key: c.u32, value: c.u32 });
      standalone.set(1, 1);
      standalone.close();
      // Closing the object closes its links, maps and programs.
      obj.close();
    };
    const ringRound = () => {
      using obj = ObjectSpec.embedded(tc.name).load();
      const rb = obj.ringBuffer(tc.maps.drop_events, () => {});
      rb.consume();
    };
    round();
    ringRound();
    const fds = fdCount();
    const handles = liveHandles();
    for (let i = 0; i < 1000; i++) round();
    for (let i = 0; i < 100; i++) ringRound();
    expect({ fds: fdCount(), handles: liveHandles() }, JSON.stringify(openFds().slice(-5))).toEqual({ fds, handles });
  });

  it('a worker thread that exits with handles open releases them (environment cleanup hook)', async () => {
    const fds = fdCount();
    const entry = new URL('../../dist/index.js', import.meta.url).href;
    const worker = new Worker(
      `import(${JSON.stringify(entry)}).then(({ BpfMap, ObjectSpec, codec }) => {
         const held = [ObjectSpec.embedded('tc_filter').load()];
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
