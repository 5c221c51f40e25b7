// A connect() sees one service's entry whole, and sees it at all, while the agent rewrites entries: 10,000 applies
// each give two services new endpoints (entries rewritten, new table versions, old slots retired and freed after
// a grace period for later applies to reuse) while 8 clients dial the first; no connection reaches the second's
// backends, every connect() is served (a lookup that missed the entry would let it through to the bare service
// address) and none finds the slots of the version it read gone (table_retry; retired-slots.test.ts holds a
// reader across an apply).
import { createCgroup, describePrivileged, spawnTracked, stopProcess, waitForLine, type Cgroup } from '@mesh/testkit';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setImmediate as tick } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { SplitDatapath } from '../../src/index.js';
import { SERVICE_WRITE_FLAGS } from '../../src/table.js';
import { service, slice, snapshot } from '../support.js';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));
const HOSTS = { a1: '127.0.0.16', a2: '127.0.0.17', b1: '127.0.0.18', b2: '127.0.0.19' };
type Ports = Record<keyof typeof HOSTS, number>;
const APPLIES = 10_000;
const REWRITES = 200_000;
const args = Object.entries(HOSTS).map(([n, h]) => `${n}=${h}`);

describePrivileged('whole service entries under concurrent updates', () => {
  let cg: Cgroup;
  let dp: SplitDatapath;
  // The backends run in their own processes: the apply loop keeps this one's event loop busy.
  let tcpServers: ChildProcess;
  let tcp: Ports;
  const sinks: ChildProcess[] = [];

  /** UDP backends that count what they receive, until their stdin closes. */
  async function udpSinks(): Promise<{ proc: ChildProcess; ports: Ports }> {
    const proc = spawnTracked(process.execPath, [fixture('udp-sink.mjs'), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    sinks.push(proc);
    return { proc, ports: JSON.parse((await waitForLine(proc, /^\{.*\}$/, 30_000))[0]) };
  }

  beforeAll(async () => {
    cg = await createCgroup('splittorn');
    dp = SplitDatapath.load();
    dp.attach(cg.path);
    tcpServers = spawnTracked(process.execPath, [fixture('servers.mjs'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    tcp = JSON.parse((await waitForLine(tcpServers, /^\{.*\}$/, 30_000))[0]);
  });
  afterAll(async () => {
    dp?.close();
    await cg?.close();
    if (tcpServers) await stopProcess(tcpServers);
    for (const p of sinks) await stopProcess(p);
  });

  // Apply i gives both services a new endpoint (a1 ↔ a2, b1 ↔ b2): both entries and their slots are replaced.
  const topology = (i: number, proto: 'TCP' | 'UDP', port: number, ports: Ports) => {
    const pick = (x: 'a' | 'b') => (i % 2 ? (`${x}1` as const) : (`${x}2` as const));
    return snapshot({
      services: [service('a', '127.0.0.150', port, { protocol: proto }), service('b', '127.0.0.151', port, { protocol: proto })],
      endpointSlices: (['a', 'b'] as const).map((x) => slice(x, [HOSTS[pick(x)]], ports[pick(x)], { protocol: proto })),
    });
  };

  async function applyWhileDialling(dialer: ChildProcess, proto: 'TCP' | 'UDP', port: number, ports: Ports) {
    await waitForLine(dialer, /^\{"started":true\}$/, 30_000);
    const t0 = performance.now();
    for (let i = 1; i <= APPLIES; i++) {
      expect(dp.apply(topology(i, proto, port, ports)).stats).toEqual({ serviceWrites: 2, serviceDeletes: 0, endpointWrites: 2, endpointDeletes: 2 });
      if (i % 50 === 0) await tick();
    }
    const ms = performance.now() - t0;
    dialer.stdin!.end();
    return ms;
  }

  const show = (c: Record<string, bigint>) => JSON.stringify(c, (_, v) => (typeof v === 'bigint' ? Number(v) : v));

  it(`TCP: ${APPLIES.toLocaleString('en')} applies swapping two services' endpoints while 8 clients dial one: none reaches the other's`, async () => {
    dp.apply(topology(0, 'TCP', 80, tcp));
    const before = dp.counters();
    const dialer = cg.spawn(process.execPath, [fixture('dial-until.mjs'), '127.0.0.150', '80', '8', '1000000'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const ms = await applyWhileDialling(dialer, 'TCP', 80, tcp);
    const [line] = await waitForLine(dialer, /^\{"done":.*$/, 60_000);
    const out = JSON.parse(line) as { done: number; byName: Record<string, number>; errors: Record<string, number> };
    const c = dp.counters();
    console.log(`torn TCP: ${APPLIES} applies in ${ms.toFixed(0)} ms, ${out.done} connections, counters ${show(c)}`);
    expect(out.errors).toEqual({});
    expect(Object.keys(out.byName).sort()).toEqual(['a1', 'a2']);
    expect((out.byName.a1 ?? 0) + (out.byName.a2 ?? 0)).toBe(out.done);
    expect(c.connect_rewrite - before.connect_rewrite).toBe(BigInt(out.done));
    // No connect() found the slots of the version it read gone: they are deleted after a grace period.
    expect(c.table_retry - before.table_retry).toBe(0n);
    // The applies overlapped the dialling: both of a's tables served it.
    expect(out.done).toBeGreaterThanOrEqual(500);
  }, 300_000);

  it(`connected UDP (a connect() every ~50 µs): ${APPLIES.toLocaleString('en')} applies, every connect() served, none to the other's`, async () => {
    const { proc: sink, ports: udp } = await udpSinks();
    dp.apply(topology(0, 'UDP', 53, udp));
    const before = dp.counters();
    const dialer = cg.spawn(process.execPath, [fixture('udp-dial.mjs'), '127.0.0.150', '53', '8', '2000000'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const ms = await applyWhileDialling(dialer, 'UDP', 53, udp);
    const [line] = await waitForLine(dialer, /^\{"connects":.*$/, 60_000);
    const out = JSON.parse(line) as { connects: number; errors: Record<string, number> };
    sink.stdin!.end();
    const { received } = JSON.parse((await waitForLine(sink, /^\{"received":.*$/, 30_000))[0]) as { received: Ports };
    const c = dp.counters();
    console.log(`torn UDP: ${APPLIES} applies in ${ms.toFixed(0)} ms, ${out.connects} connects, received ${JSON.stringify(received)}, counters ${show(c)}`);
    expect(c.connect_rewrite - before.connect_rewrite).toBe(BigInt(out.connects));
    expect(c.table_retry - before.table_retry).toBe(0n);
    expect(out.errors).toEqual({});
    expect({ b1: received.b1, b2: received.b2 }).toEqual({ b1: 0, b2: 0 });
    expect(received.a1).toBeGreaterThan(0);
    expect(received.a2).toBeGreaterThan(0);
  }, 300_000);

  // The race is a few hundred nanoseconds wide, rarely met at the pace of real applies: here both entries are
  // rewritten back to back as the table writes them. Replacing writes (before) let a connect() miss its service
  // about once per 100,000 rewrites while dialling like this; in place, an entry's element never moves.
  it(`connected UDP while both entries are rewritten ${REWRITES.toLocaleString('en')} times back to back: every connect() finds its service`, async () => {
    const { ports: udp } = await udpSinks();
    dp.apply(topology(1, 'UDP', 53, udp));
    const entries = dp.servicesMap.getBatch();
    expect(entries).toHaveLength(2);
    const before = dp.counters();
    const dialer = cg.spawn(process.execPath, [fixture('udp-dial.mjs'), '127.0.0.150', '53', '8', '5000000'], { stdio: ['pipe', 'pipe', 'pipe'] });
    await waitForLine(dialer, /^\{"started":true\}$/, 30_000);
    const t0 = performance.now();
    for (let i = 0; i < REWRITES; i++) {
      dp.servicesMap.setBatch(entries, SERVICE_WRITE_FLAGS);
      if (i % 2000 === 0) await tick();
    }
    const ms = performance.now() - t0;
    dialer.stdin!.end();
    const out = JSON.parse((await waitForLine(dialer, /^\{"connects":.*$/, 60_000))[0]) as { connects: number; errors: Record<string, number> };
    const c = dp.counters();
    console.log(`torn rewrites: ${REWRITES} in ${ms.toFixed(0)} ms, ${out.connects} connects, counters ${show(c)}`);
    // A connect() that missed its service went to the bare address: not rewritten, and refused there.
    expect(c.connect_rewrite - before.connect_rewrite).toBe(BigInt(out.connects));
    expect(out.errors).toEqual({});
  }, 300_000);
});
