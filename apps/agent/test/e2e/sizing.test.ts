// The routing tables are sized from the config (twice its service addresses and endpoint slots, at least
// 1,024 / 4,096, a power of two) unless --max-services/--max-endpoints pin them; the per-connection tables from
// --max-connections. A later config past those sizes is rejected naming the flag, the previous one in force; a
// restart with a smaller config makes the routing tables anew and keeps the live connections' state.
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';

import { capturedOutput, describePrivileged, run, signalChild, waitForExit, waitForLine } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { LOAD, type LoadResult, type MeshEnv, meshEnvPerTest, runLoad, splitConfig, startBackends, testNet } from './harness.js';

const NET = testNet();
/** The extra Services' VIPs: a block of their own. */
const EXTRA_NET = testNet();

/** `n` more Services, each on a VIP of its own in EXTRA_NET and selecting web-a. */
function extraServices(n: number): string {
  let out = '';
  for (let i = 0; i < n; i++) {
    out += `---
apiVersion: v1
kind: Service
metadata: { name: extra-${i} }
spec: { clusterIP: ${EXTRA_NET}.${Math.floor(i / 250)}.${1 + (i % 250)}, selector: { app: web, version: a }, ports: [{ port: 8080 }] }
`;
  }
  return out;
}

/** max_entries of each pinned split map, from the kernel. */
async function capacities(env: MeshEnv): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const m of ['split_services', 'split_endpoints', 'split_orig', 'split_revnat']) {
    const r = await run('bpftool', ['-j', 'map', 'show', 'pinned', join(env.pinRoot, 'maps', 'split', m)], { timeoutMs: 10_000 });
    expect(r.code, r.stderr).toBe(0);
    out[m] = (JSON.parse(r.stdout) as { max_entries: number }).max_entries;
  }
  return out;
}

/** Requests from the client workload to `url`, `n` of them over one second. */
async function load(env: MeshEnv, url: string, n: number): Promise<LoadResult> {
  const child = env.meshRun('client', [process.execPath, LOAD], { URL: url, RATE: String(n), SECONDS: '1' });
  const line = await waitForLine(child, /^\{.*\}$/, 40_000);
  return JSON.parse(line[0]) as LoadResult;
}

/** A client workload holding one TCP connection to `host:port`, printing the peer the kernel reports for it
 *  (getpeername, never Node's cached copy) every 200 ms. */
const HOLDER = `
const net = require('node:net');
const s = net.connect(8080, process.env.VIP, () => {
  let n = 0;
  const tick = () => { const o = {}; s._handle.getpeername(o); console.log(JSON.stringify({ n: n++, peer: o.address + ':' + o.port })); };
  tick();
  setInterval(tick, 200);
});
s.on('error', (e) => { console.log(JSON.stringify({ error: e.message })); process.exit(1); });
setTimeout(() => process.exit(0), 60000);
`;

function peers(child: ChildProcess): { n: number; peer?: string; error?: string }[] {
  return capturedOutput(child).stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
}

describePrivileged('agent table sizes from the config', () => {
  const newEnv = meshEnvPerTest();

  it('600 services: the service table holds 2,048 entries, the endpoint table its floor 4,096; the connection tables --max-connections', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [1, 1], extraServices(600)));
    await env.startAgent(['--max-connections', '3000']);
    // 603 service addresses → 1,206 → 2,048; 604 endpoint slots → 1,208 → the floor; 3,000 → 4,096 slots.
    expect(await capacities(env)).toEqual({ split_services: 2048, split_endpoints: 4096, split_orig: 4096, split_revnat: 3000 });
    await startBackends(env);
    const r = await load(env, `http://${EXTRA_NET}.2.100:8080/`, 10);
    expect(r.errors).toEqual([]);
    expect(r.byBody).toEqual({ a: 10 });
  }, 120_000);

  it('--max-services and --max-endpoints pin the sizes whatever the config', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [1, 1]));
    await env.startAgent(['--max-services', '100', '--max-endpoints', '300']);
    const c = await capacities(env);
    expect([c.split_services, c.split_endpoints]).toEqual([100, 300]);
  }, 60_000);

  it('a config that outgrows the tables is rejected naming --max-services; the previous config stays in force', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [1, 1]));
    const agent = await env.startAgent();
    expect((await capacities(env)).split_services).toBe(1024);

    env.writeConfig(splitConfig(NET, [1, 1], extraServices(1100)));
    await expect.poll(() => agent.logs().find((l) => String(l.msg).startsWith('config rejected')), { timeout: 30_000 }).toBeTruthy();
    const rejected = agent.logs().find((l) => String(l.msg).startsWith('config rejected'))!;
    expect(rejected.msg).toBe('config rejected; the previous config stays in force');
    expect(String((rejected.problems as string[])[0])).toMatch(/1103 service addresses .* do not fit the service table \(1024 entries\): raise maxServices \(mesh-agent: --max-services/);
    expect(agent.logs().filter((l) => l.msg === 'config applied').map((l) => l.generation)).toEqual([1]);
    await startBackends(env);
    const r = await load(env, `http://${NET}.1.2:8080/`, 10);
    expect(r.errors).toEqual([]);
    expect(r.byBody).toEqual({ a: 10 });
  }, 120_000);

  it('a restart with a smaller config shrinks the routing tables, keeps a live connection\'s peer, and routes', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [1, 0], extraServices(600)));
    let agent = await env.startAgent();
    expect((await capacities(env)).split_services).toBe(2048);
    await startBackends(env);
    const holder = env.meshRun('client', [process.execPath, '-e', HOLDER], { VIP: `${NET}.1.1` });
    await waitForLine(holder, /"n":0/, 20_000);
    expect(peers(holder)[0]).toEqual({ n: 0, peer: `${NET}.1.1:8080` });

    signalChild(agent.child, 'SIGTERM');
    expect(await waitForExit(agent.child, 10_000)).toBe(0);
    env.writeConfig(splitConfig(NET, [1, 0]));
    agent = await env.startAgent();
    const resized = agent.logs().find((l) => String(l.msg).startsWith('tables of another capacity made anew'));
    expect(resized?.maps).toEqual(['split_services', 'split_endpoints']);
    expect(await capacities(env)).toEqual({ split_services: 1024, split_endpoints: 4096, split_orig: 16384, split_revnat: 16384 });

    // The connection made before the restart still shows the service it dialled (its state was carried)…
    const seen = peers(holder).length;
    await expect.poll(() => peers(holder).length, { timeout: 10_000 }).toBeGreaterThan(seen + 1);
    expect(peers(holder).at(-1)).toMatchObject({ peer: `${NET}.1.1:8080` });
    // …and new connections route through the new tables.
    const r = await load(env, `http://${NET}.1.1:8080/`, 10);
    expect(r.errors).toEqual([]);
    expect(r.byBody).toEqual({ a: 10 });
  }, 120_000);
  it('a restart that makes the routing tables anew never leaves connects on empty tables: 0 failed requests', async () => {
    const env = await newEnv();
    // 3,000 services: the new agent's first apply takes long enough that programs switched before it would be seen.
    env.writeConfig(splitConfig(NET, [1, 1], extraServices(3000)));
    let agent = await env.startAgent();
    await startBackends(env);
    let restarted = Promise.resolve();
    let readyAt = Infinity;
    const loadStart = Date.now();
    const result = runLoad(env, NET, 50, 20, () => {
      restarted = (async () => {
        await new Promise((r) => setTimeout(r, 1000));
        signalChild(agent.child, 'SIGTERM');
        expect(await waitForExit(agent.child, 10_000)).toBe(0);
        agent = await env.startAgent(['--max-services', '7000']);
        readyAt = Date.now();
      })();
    });
    const r = await result;
    await restarted;
    // The new agent switched the programs while the load still ran.
    expect(readyAt - loadStart).toBeLessThan(18_000);
    expect((await capacities(env)).split_services).toBe(7000);
    expect(agent.logs().some((l) => String(l.msg).startsWith('tables of another capacity made anew') || String(l.msg).startsWith('pinned maps do not fit'))).toBe(true);
    expect(r.errors).toEqual([]);
    expect(r.failed).toBe(0);
    expect(r.ok).toBe(r.sent);
  }, 180_000);
});
