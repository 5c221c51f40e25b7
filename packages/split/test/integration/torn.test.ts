// A connect() sees one service's entry whole while the agent rewrites entries: 10,000 applies each replace the
// endpoints of two services (new table versions, entries replaced, old slots freed for reuse by the next apply)
// while 8 clients dial the first; no connection reaches the second's backends.
import { createCgroup, describePrivileged, spawnTracked, stopProcess, waitForLine, type Cgroup } from '@mesh/testkit';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setImmediate as tick } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { SplitDatapath } from '../../src/index.js';
import { service, slice, snapshot } from '../support.js';

const dialUntil = fileURLToPath(new URL('../fixtures/dial-until.mjs', import.meta.url));
const serversScript = fileURLToPath(new URL('../fixtures/servers.mjs', import.meta.url));
const HOSTS = { a1: '127.0.0.16', a2: '127.0.0.17', b1: '127.0.0.18', b2: '127.0.0.19' };
const APPLIES = 10_000;

describePrivileged('whole service entries under concurrent updates', () => {
  let cg: Cgroup;
  let dp: SplitDatapath;
  let servers: ChildProcess;
  let port: Record<keyof typeof HOSTS, number>;

  beforeAll(async () => {
    cg = await createCgroup('splittorn');
    dp = SplitDatapath.load();
    dp.attach(cg.path);
    // The backends run in their own process: the apply loop below keeps this one's event loop busy.
    servers = spawnTracked(process.execPath, [serversScript, ...Object.entries(HOSTS).map(([n, h]) => `${n}=${h}`)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const [line] = await waitForLine(servers, /^\{.*\}$/, 30_000);
    port = JSON.parse(line);
  });
  afterAll(async () => {
    dp?.close();
    await cg?.close();
    if (servers) await stopProcess(servers);
  });

  // Every apply gives both services a new endpoint (a1 ↔ a2, b1 ↔ b2): both entries and their slots are replaced.
  const topology = (i: number) =>
    snapshot({
      services: [service('a', '127.0.0.150', 80), service('b', '127.0.0.151', 80)],
      endpointSlices: [
        slice('a', [i % 2 ? HOSTS.a1 : HOSTS.a2], i % 2 ? port.a1 : port.a2),
        slice('b', [i % 2 ? HOSTS.b1 : HOSTS.b2], i % 2 ? port.b1 : port.b2),
      ],
    });

  it(`${APPLIES.toLocaleString('en')} applies swapping two services' endpoints while 8 clients dial one: none reaches the other's`, async () => {
    dp.apply(topology(0));
    const dialer = cg.spawn(process.execPath, [dialUntil, '127.0.0.150', '80', '8', '1000000'], { stdio: ['pipe', 'pipe', 'pipe'] });
    await waitForLine(dialer, /^\{"started":true\}$/, 30_000);
    const t0 = performance.now();
    for (let i = 1; i <= APPLIES; i++) {
      expect(dp.apply(topology(i)).stats).toEqual({ serviceWrites: 2, serviceDeletes: 0, endpointWrites: 2, endpointDeletes: 2 });
      if (i % 50 === 0) await tick();
    }
    const ms = performance.now() - t0;
    dialer.stdin!.end();
    const [line] = await waitForLine(dialer, /^\{"done":.*$/, 60_000);
    const out = JSON.parse(line) as { done: number; byName: Record<string, number>; errors: Record<string, number> };
    console.log(`torn: ${APPLIES} applies in ${ms.toFixed(0)} ms, ${out.done} connections, counters ${JSON.stringify(dp.counters(), (_, v) => (typeof v === 'bigint' ? Number(v) : v))}`);
    expect(out.errors).toEqual({});
    expect(Object.keys(out.byName).sort()).toEqual(['a1', 'a2']);
    expect((out.byName.a1 ?? 0) + (out.byName.a2 ?? 0)).toBe(out.done);
    // The applies overlapped the dialling: both of a's tables served it.
    expect(out.done).toBeGreaterThanOrEqual(500);
  }, 300_000);
});
