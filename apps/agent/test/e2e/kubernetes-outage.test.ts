// The API server stopped for 60 s under load (issue 19, Done-when 2): every request of a client pod through a
// Service's cluster IP succeeds and follows the last state in force; /readyz and the source's metric say the
// watches are down; a route changed meanwhile is applied once the server is back, and both report healthy again.
import { setTimeout as sleep } from 'node:timers/promises';

import { describePrivileged } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { httpGet, meshEnvPerTest, sample } from './harness.js';
import { startKubeNode, tally } from './kube-node.js';

const OUTAGE_MS = 60_000;
const RATE = 20;

async function until<T>(what: string, read: () => Promise<T> | T, ok: (v: T) => boolean, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${JSON.stringify(v)}`);
    await sleep(100);
  }
}

/** When the last answer that was not b's came (0 if none). */
function lastNotB(rs: [number, string][]): number {
  for (let i = rs.length - 1; i >= 0; i--) if (rs[i]![1] !== 'b') return rs[i]![0];
  return 0;
}

describePrivileged('mesh-agent with the Kubernetes source: the API server away', () => {
  const newEnv = meshEnvPerTest();

  it('API server stopped for 60 s under load: 0 failed requests, the last state in force, /readyz and metrics say so; changes made meanwhile applied after it returns', async () => {
    const env = await newEnv();
    await using node = await startKubeNode(env);
    node.server.create(node.route([100, 0]));
    await node.startAgent();
    const readyz = () => httpGet('127.0.0.1', env.port, '/readyz', 3000);
    const healthy = async () => sample(await env.metrics(), 'mesh_kubernetes_source_healthy')[0];
    expect(await healthy()).toBe(1);

    // Long enough for the outage, the informers' backoff (at most 30 s) and a margin after it.
    const load = node.trace(RATE, 3 + OUTAGE_MS / 1000 + 50);
    await until('the first answers', () => load.results().length, (n) => n >= RATE, 20_000);
    await sleep(2000);

    const stoppedAt = Date.now();
    await node.server.stop();
    const down = await until('/readyz to say the watches are down', readyz, (r) => r.status === 503, 20_000);
    expect(down.body).toMatch(/^not ready: kubernetes: watches down since .*; the last state stays in force/);
    expect(await healthy()).toBe(0);
    expect(sample(await env.metrics(), 'mesh_agent_ready')[0]).toBe(0);
    // A change made while the agent cannot see it.
    node.server.replace(node.route([0, 100]));
    await sleep(stoppedAt + OUTAGE_MS - Date.now());
    expect((await readyz()).status).toBe(503);

    const backAt = Date.now();
    await node.server.listen();
    await until('/readyz once the server is back', readyz, (r) => r.status === 200, 60_000);
    // The change made meanwhile is in force: every answer from 1 s on is b's.
    const caughtUp = await until(
      'the route changed meanwhile to carry the traffic',
      () => load.results(),
      (rs) => {
        const lastA = lastNotB(rs);
        return rs.filter(([t]) => t > lastA).length >= 2 * RATE;
      },
      60_000,
    );
    const switchedAt = lastNotB(caughtUp);
    expect(await healthy()).toBe(1);
    expect(sample(await env.metrics(), 'mesh_kubernetes_watch_restarts_total', { resource: 'httproutes' })[0]).toBeGreaterThan(0);

    const all = await load.done();
    const errors = all.filter(([, body]) => body.startsWith('ERR'));
    expect(errors.slice(0, 5), `${errors.length} of ${all.length} requests failed`).toEqual([]);
    // The last state held for the whole outage, and the new one from the switch on.
    const during = tally(all, stoppedAt, backAt);
    expect(Object.keys(during)).toEqual(['a']);
    expect(during.a).toBeGreaterThan(0.5 * RATE * (OUTAGE_MS / 1000));
    expect(Object.keys(tally(all, switchedAt + 1))).toEqual(['b']);
    console.log(`outage ${backAt - stoppedAt} ms: ${all.length} requests, 0 failed; ${during.a} answered by a while the server was away; route changed meanwhile in force ${switchedAt - backAt} ms after it returned`);
  }, 360_000);
});
