// The machine's kubectl creates, patches and deletes an HTTPRoute on the test API server while a client pod
// sends one new connection per request to a Service's cluster IP (issue 19, Done-when 3): the traffic follows
// each change within 2 s, and the split over new connections is within 3 sigma of the route's weights.
import { setTimeout as sleep } from 'node:timers/promises';

import { describePrivileged, findTool } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { meshEnvPerTest } from './harness.js';
import { NS, startKubeNode, tally } from './kube-node.js';

const RATE = 50;
const FOLLOW_MS = 2000;
const WINDOW_MS = 6000;

describePrivileged('mesh-agent with the Kubernetes source, driven by kubectl', () => {
  const newEnv = meshEnvPerTest();

  it('kubectl create, patch and delete of an HTTPRoute: traffic follows within 2 s, weights within 3 sigma', async () => {
    if (!findTool('kubectl')) throw new Error('kubectl not found on PATH: machines of this kind have it at /usr/bin/kubectl');
    const env = await newEnv();
    await using node = await startKubeNode(env);
    await node.startAgent();
    const load = node.trace(RATE, 60);
    await sleep(2000);

    /** Runs a kubectl command; returns when it returned (the change is on the server from then). */
    const change = async (args: string[], stdin?: string) => {
      await node.kubectl(args, stdin);
      return Date.now();
    };
    /** The last answer in [from, to) that is not `body`'s, as ms after `from` (0 if none). */
    const followedAfter = (from: number, body: string) => {
      let last = from;
      for (const [t, b] of load.results()) if (t >= from && b !== body) last = Math.max(last, t);
      return last - from;
    };
    /** |observed - expected| in standard deviations, for a share p of n answers (binomial). */
    const sigmas = (count: number, n: number, p: number) => Math.abs(count - n * p) / Math.sqrt(n * p * (1 - p));
    const windowAfter = async (from: number) => {
      await sleep(from + FOLLOW_MS + WINDOW_MS - Date.now());
      const t = tally(load.results(), from + FOLLOW_MS, from + FOLLOW_MS + WINDOW_MS);
      const n = Object.values(t).reduce((x, y) => x + y, 0);
      expect(Object.keys(t).filter((k) => k !== 'a' && k !== 'b'), JSON.stringify(t)).toEqual([]);
      expect(n).toBeGreaterThan(0.5 * RATE * (WINDOW_MS / 1000));
      return { a: t.a ?? 0, b: t.b ?? 0, n };
    };
    const report: string[] = [];

    // create: all of web to web-a.
    const created = await change(['create', '-f', '-'], JSON.stringify(node.route([100, 0])));
    await sleep(FOLLOW_MS + 1000);
    const createMs = followedAfter(created, 'a');
    expect(createMs).toBeLessThanOrEqual(FOLLOW_MS);
    report.push(`create 100/0 followed in ${createMs} ms`);

    // patch: all to web-b, then 80/20.
    const patch = (a: number, b: number) =>
      change(['patch', 'httproute', 'split', '-n', NS, '--type=merge', '-p', JSON.stringify({ spec: { rules: [{ backendRefs: [{ name: 'web-a', port: 80, weight: a }, { name: 'web-b', port: 80, weight: b }] }] } })]);
    const patched = await patch(0, 100);
    await sleep(FOLLOW_MS + 1000);
    const patchMs = followedAfter(patched, 'b');
    expect(patchMs).toBeLessThanOrEqual(FOLLOW_MS);
    report.push(`patch 0/100 followed in ${patchMs} ms`);

    const weighted = await patch(80, 20);
    const w = await windowAfter(weighted);
    expect(sigmas(w.a, w.n, 0.8), JSON.stringify(w)).toBeLessThanOrEqual(3);
    report.push(`patch 80/20: a ${w.a} of ${w.n} (${sigmas(w.a, w.n, 0.8).toFixed(2)} sigma)`);

    // delete: web's own endpoints again, both pods alike.
    const deleted = await change(['delete', 'httproute', 'split', '-n', NS]);
    const d = await windowAfter(deleted);
    expect(sigmas(d.a, d.n, 0.5), JSON.stringify(d)).toBeLessThanOrEqual(3);
    report.push(`delete: a ${d.a} of ${d.n} (${sigmas(d.a, d.n, 0.5).toFixed(2)} sigma of 50/50)`);

    const errors = load.results().filter(([, b]) => b.startsWith('ERR'));
    expect(errors.slice(0, 5), `${errors.length} requests failed`).toEqual([]);
    console.log(report.join('; '));
  }, 240_000);
});
