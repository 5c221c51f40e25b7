// The Kubernetes source when the API server misbehaves: watches that end or are cut, a watch that goes silent,
// an expired resourceVersion in both forms, the server away and back, and 1,000 scripted changes with all of
// those among them. Each ends with the source's last snapshot equal to what the server's objects say.
import { setTimeout as sleep } from 'node:timers/promises';

import { afterEach, expect, it as vitestIt } from 'vitest';

import { describePrivileged, FAKE_ONLY, realCluster, type KubeObject } from '@mesh/testkit';

import { WATCHED } from '../../src/config/kubernetes/resources.js';
import { converged, namespace, pod, type Rig, route, runPod, service, slice, startRig, WAIT_MS, waitFor } from './kube-harness.js';

/** One watch per informer of the source. */
const WATCHES = WATCHED.length;

/** Against a real cluster (MESH_TEST_KUBECONFIG) these are skipped: they use the test server's switches. */
const it: typeof vitestIt = realCluster() ? (((name: string, fn: () => Promise<void>, timeout?: number) => vitestIt.skip(`${name} (skipped: ${FAKE_ONLY})`, fn, timeout)) as typeof vitestIt) : vitestIt;

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

/** A namespace in the mesh with one object of each kind, converged. */
async function seeded(): Promise<Rig> {
  const r = await startRig();
  rig = r;
  r.server.create(namespace('app', { 'mesh.dev/enabled': 'true' }));
  r.server.create(service('app', 'a', 80));
  r.server.create(slice('app', 'a', 'a-1', ['10.6.0.1']));
  r.server.create(route('app', 'r', 'a', [['a', 1]]));
  runPod(r, r.server.create(pod('app', 'p1', '10.6.0.1')));
  await converged(r, 'the seed objects');
  await waitFor(() => r.server.watches.length === WATCHES && r.source.health().healthy, WAIT_MS, 'every watch open');
  return r;
}

/** Changes of every kind while the watches hear nothing. */
function changeEverything(r: Rig, round: number): void {
  r.server.create(service('app', `b${round}`, 80));
  r.server.replace(slice('app', 'a', 'a-1', [`10.6.${round}.2`]));
  r.server.replace(route('app', 'r', 'a', [['a', round + 1]]));
  r.server.delete(pod('app', `p${round}`, ''));
  runPod(r, r.server.create(pod('app', `p${round + 1}`, `10.6.${round}.9`)));
}

describePrivileged('Kubernetes source: recovery', () => {
  it('watches the server ends, then cuts: resumed without a relist, nothing missed', async () => {
    const r = await seeded();
    const lists = r.lists('/api/v1/services');
    expect(r.server.dropWatches()).toBe(WATCHES);
    changeEverything(r, 1);
    await converged(r, 'changes after a clean end');
    await waitFor(() => r.server.watches.length === WATCHES, WAIT_MS, 'every watch again');
    expect(r.server.dropWatches({ abrupt: true })).toBe(WATCHES);
    changeEverything(r, 2);
    await converged(r, 'changes after a cut');
    // client-node stops an informer on a cut connection: the source restarted each, from its resourceVersion.
    expect(r.source.health().informers.services.restarts).toBeGreaterThanOrEqual(1);
    expect(r.lists('/api/v1/services')).toBe(lists);
    await waitFor(() => r.source.health().healthy, WAIT_MS, 'healthy again');
  });

  for (const form of ['http', 'event'] as const) {
    it(`an expired resourceVersion (${form === 'http' ? 'HTTP 410' : 'HTTP 200 then an ERROR event with code 410'}): relisted, ending equal to the server`, async () => {
      const r = await seeded();
      r.server.expiredForm = form;
      const lists = r.lists('/api/v1/services');
      r.server.stallWatches();
      changeEverything(r, 1);
      r.server.compact();
      r.server.dropWatches();
      await converged(r, 'the changes, through a relist');
      await waitFor(() => r.lists('/api/v1/services') === lists + 1, WAIT_MS, 'one relist of services');
      if (form === 'http') expect(r.server.requests.some((q) => q.status === 410)).toBe(true);
    });
  }

  it('a watch silent past the bound is made again and catches up', async () => {
    const r = await seeded(); // silenceMs 1500
    const watches = r.server.requests.filter((q) => q.url.includes('watch=true')).length;
    expect(r.server.stallWatches()).toBe(WATCHES);
    changeEverything(r, 1);
    await sleep(500);
    expect(r.last()!.services.map((s) => s.metadata.name)).not.toContain('b1');
    await converged(r, 'the changes after the silence bound');
    expect(r.server.requests.filter((q) => q.url.includes('watch=true')).length).toBeGreaterThanOrEqual(watches + 5);
  });

  it('the server away: nothing delivered, health says so; back: what changed meanwhile arrives', async () => {
    const r = await seeded();
    const before = r.updates.length;
    const t0 = Date.now();
    await r.server.stop();
    await waitFor(() => !r.source.health().healthy, WAIT_MS, 'health to say the server is away');
    const down = r.source.health();
    expect(down.synced).toBe(true);
    expect(Date.parse(down.since)).toBeGreaterThanOrEqual(t0 - 1000);
    expect(down.lastError?.message).toMatch(/ECONNREFUSED|fetch failed|terminated|socket/);
    // Meanwhile, on the server (as other API servers of the cluster would take them).
    changeEverything(r, 1);
    await sleep(2500); // several restart attempts, each refused
    expect(r.updates.length).toBe(before);
    expect(r.source.health().healthy).toBe(false);
    await r.server.listen();
    await converged(r, 'the changes made while the server was away');
    // Each informer catches up as its restart comes: one snapshot or a few, never none.
    expect(r.updates.length).toBeGreaterThan(before);
    await waitFor(() => r.source.health().healthy, WAIT_MS, 'healthy again');
  });

  it('1,000 scripted changes of Services, EndpointSlices, Pods and HTTPRoutes with dropped and cut watches, a stall and two 410s', async () => {
    const r = await startRig();
    rig = r;
    const { server } = r;
    server.create(namespace('m', { 'mesh.dev/enabled': 'true' }));
    let rng = 11;
    const random = (n: number): number => ((rng = (rng * 1103515245 + 12345) % 2 ** 31) % n);
    const ref = (apiVersion: string, kind: string, name: string) => ({ apiVersion, kind, metadata: { name, namespace: 'm' } });
    const upsert = (current: KubeObject | undefined, next: KubeObject) => (current === undefined ? server.create(next) : server.replace(next));
    const mutate = (): void => {
      const n = random(30);
      switch (random(4)) {
        case 0: {
          const cur = server.get(ref('v1', 'Service', `s${n}`));
          if (cur && random(4) === 0) server.delete(cur);
          else upsert(cur, service('m', `s${n}`, 1 + random(1000)));
          break;
        }
        case 1: {
          const cur = server.get(ref('discovery.k8s.io/v1', 'EndpointSlice', `e${n}`));
          if (cur && random(4) === 0) server.delete(cur);
          else upsert(cur, slice('m', `s${n}`, `e${n}`, [`10.7.${n}.${1 + random(200)}`], random(3) > 0));
          break;
        }
        case 2: {
          const cur = server.get(ref('gateway.networking.k8s.io/v1', 'HTTPRoute', `r${n}`));
          if (cur && random(4) === 0) server.delete(cur);
          else upsert(cur, route('m', `r${n}`, `s${n}`, [[`s${n}`, random(100)], [`s${(n + 1) % 30}`, random(100)]]));
          break;
        }
        default: {
          const cur = server.get(ref('v1', 'Pod', `p${n}`));
          if (cur && random(3) === 0) server.delete(cur);
          else {
            const made = upsert(cur, pod('m', `p${n}`, `10.8.0.${n + 1}`, { ready: random(2) === 0 }));
            if (!cur) runPod(r, made);
          }
        }
      }
    };
    const disruptions: Record<number, () => Promise<void>> = {
      150: async () => void server.dropWatches(),
      300: async () => void server.dropWatches({ abrupt: true }),
      450: async () => {
        // After the cut at 300 each informer restarts after a backoff: stall them once all watch again.
        await waitFor(() => server.watches.filter((w) => !w.stalled).length === WATCHES, WAIT_MS, 'every watch open before the stall');
        expect(server.stallWatches()).toBe(WATCHES);
        for (let i = 0; i < 20; i++) mutate();
        await sleep(2000); // past the 1.5 s silence bound
      },
      650: async () => {
        server.expiredForm = 'http';
        server.stallWatches();
        for (let i = 0; i < 20; i++) mutate();
        server.compact();
        server.dropWatches();
      },
      850: async () => {
        server.expiredForm = 'event';
        server.stallWatches();
        for (let i = 0; i < 20; i++) mutate();
        server.compact();
        server.dropWatches();
      },
    };
    await waitFor(() => r.updates.length >= 1, WAIT_MS, 'the first snapshot');
    for (let i = 0; i < 1000; i++) {
      mutate();
      await disruptions[i]?.();
      if (i % 25 === 0) await sleep(20);
    }
    const final = await converged(r, 'the final objects', 60_000);
    expect(Object.keys(final.services).length + Object.keys(final.workloads).length).toBeGreaterThan(10);
    expect(r.server.requests.some((q) => q.status === 410)).toBe(true);
    // Debounced: far fewer snapshots than changes.
    expect(r.updates.length).toBeLessThan(300);
    // And no snapshot after the last one while nothing changes.
    const n = r.updates.length;
    await sleep(500);
    expect(r.updates.length).toBe(n);
  });
});
