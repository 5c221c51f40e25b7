// @kubernetes/client-node's informer against the test API server: what the agent's Kubernetes source will
// run. Each test has its own namespace on one server; the informer's error handler restarts it, as the
// agent must (client-node stops an informer on any error other than 410 or its own inactivity timeout).
import * as k8s from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { KubeApiServer, uniqueName, type KubeObject, type RequestRecord } from '../../src/index.js';
import { waitFor } from './kube-client.js';

const WAIT_MS = 20_000;

let server: KubeApiServer;
const informers: { stop(): Promise<void> }[] = [];

beforeAll(async () => {
  server = await KubeApiServer.start();
});

afterEach(async () => {
  for (const inf of informers.splice(0)) await inf.stop();
  server.expiredForm = 'event';
});

afterAll(async () => {
  await server?.close();
});

interface Watched {
  informer: k8s.ListWatch<k8s.V1Service>;
  events: string[];
  errors: unknown[];
  /** name → resourceVersion, as the informer's cache holds them. */
  cache(): Record<string, string>;
}

function namespace(): string {
  const ns = uniqueName('inf', 40);
  server.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
  return ns;
}

function service(ns: string, name: string, port = 80, labels: Record<string, string> = {}): KubeObject {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns, labels }, spec: { ports: [{ port }] } };
}

/** name → resourceVersion of the server's services in `ns`. */
function serverState(ns: string): Record<string, string> {
  return Object.fromEntries(server.list({ apiVersion: 'v1', kind: 'Service' }, ns).map((s) => [s.metadata.name!, s.metadata.resourceVersion!]));
}

function servicesPath(ns: string): string {
  return `/api/v1/namespaces/${ns}/services`;
}

/** Requests to the services collection of `ns`: lists and watches, in order. */
function calls(ns: string): { lists: RequestRecord[]; watches: RequestRecord[] } {
  const mine = server.requests.filter((r) => new URL(r.url, 'http://x').pathname === servicesPath(ns) && r.method === 'GET');
  const isWatch = (r: RequestRecord): boolean => new URL(r.url, 'http://x').searchParams.get('watch') === 'true';
  return { lists: mine.filter((r) => !isWatch(r)), watches: mine.filter(isWatch) };
}

function query(r: RequestRecord, name: string): string | null {
  return new URL(r.url, 'http://x').searchParams.get(name);
}

async function watchServices(ns: string, opts: { inactivityTimeoutMs?: number } = {}): Promise<Watched> {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(server.kubeconfigPath);
  const api = kc.makeApiClient(k8s.CoreV1Api);
  const w = new k8s.Watch(kc);
  // requestTimeoutMs is private in the typings but a plain field at run time.
  if (opts.inactivityTimeoutMs !== undefined) (w as unknown as { requestTimeoutMs: number }).requestTimeoutMs = opts.inactivityTimeoutMs;
  // makeInformer with a Watch we can tune: the same ListWatch, not started yet.
  const informer = new k8s.ListWatch<k8s.V1Service>(servicesPath(ns), w, () => api.listNamespacedService({ namespace: ns }), false);
  informers.push(informer);
  const events: string[] = [];
  const errors: unknown[] = [];
  informer.on('add', (s) => events.push(`add ${s.metadata!.name}`));
  informer.on('update', (s) => events.push(`update ${s.metadata!.name}`));
  informer.on('delete', (s) => events.push(`delete ${s.metadata!.name}`));
  informer.on('error', (err) => {
    errors.push(err);
    setTimeout(() => void informer.start().catch(() => {}), 200);
  });
  await informer.start();
  const cache = (): Record<string, string> =>
    Object.fromEntries(informer.list(ns).map((s) => [s.metadata!.name!, s.metadata!.resourceVersion!]));
  return { informer, events, errors, cache };
}

async function inSync(w: Watched, ns: string): Promise<void> {
  await waitFor(() => JSON.stringify(sorted(w.cache())) === JSON.stringify(sorted(serverState(ns))), WAIT_MS, `the informer's cache to equal the server's services in ${ns}`);
}

/** In sync and watching again: a disruption made before the informer's watch is back would be one it never saw
 *  (on a loaded machine its relist can land after the next compaction, and no 410 follows). */
async function watching(w: Watched, ns: string): Promise<void> {
  await inSync(w, ns);
  await waitFor(() => server.watches.some((x) => x.params.namespace === ns && !x.stalled && !x.closed), WAIT_MS, `a live watch of ${ns}`);
}

function sorted(m: Record<string, string>): [string, string][] {
  return Object.entries(m).sort(([a], [b]) => a.localeCompare(b));
}

describe('client-node informer against the test API server', () => {
  it('lists without a resourceVersion, watches from the list\'s, and receives add, update and delete', async () => {
    const ns = namespace();
    server.create(service(ns, 'a'));
    server.create(service(ns, 'b'));
    const listed = String(server.store.resourceVersion);
    const w = await watchServices(ns);
    await inSync(w, ns);
    expect(w.events.sort()).toEqual(['add a', 'add b']);

    const c = server.create(service(ns, 'c'));
    server.replace({ ...service(ns, 'a', 8080), metadata: { ...service(ns, 'a').metadata } });
    server.delete(service(ns, 'b'));
    await waitFor(() => w.events.length === 5, WAIT_MS, 'three more events');
    expect(w.events.slice(2)).toEqual(['add c', 'update a', 'delete b']);
    await inSync(w, ns);
    expect(w.informer.get('c', ns)?.metadata?.uid).toBe(c.metadata.uid);

    const { lists, watches } = calls(ns);
    expect(lists).toHaveLength(1);
    expect(query(lists[0]!, 'resourceVersion')).toBeNull();
    expect(lists[0]!.user).toBe('mesh-test');
    expect(watches).toHaveLength(1);
    expect(query(watches[0]!, 'resourceVersion')).toBe(listed);
    // It never asks for bookmarks, so it never gets any.
    expect(query(watches[0]!, 'allowWatchBookmarks')).toBeNull();
    expect(w.errors).toEqual([]);
    // Its inactivity timeout, after which a silent watch is made again.
    expect((new k8s.Watch(new k8s.KubeConfig()) as unknown as { requestTimeoutMs: number }).requestTimeoutMs).toBe(30_000);
  });

  it('a watch the server ends is made again from the last resourceVersion seen, without a relist', async () => {
    const ns = namespace();
    server.create(service(ns, 'a'));
    const w = await watchServices(ns);
    await inSync(w, ns);
    const seen = server.get(service(ns, 'a'))!.metadata.resourceVersion!;
    expect(server.dropWatches()).toBeGreaterThanOrEqual(1);
    server.create(service(ns, 'b'));
    await inSync(w, ns);
    await waitFor(() => calls(ns).watches.length === 2, WAIT_MS, 'a second watch');
    const { lists, watches } = calls(ns);
    expect(lists).toHaveLength(1);
    expect(query(watches[1]!, 'resourceVersion')).toBe(seen);
    expect(w.events).toEqual(['add a', 'add b']);
  });

  it('watches that end with no event in between are made again after 1 s, then 2 s (client-node\'s backoff)', async () => {
    const ns = namespace();
    const w = await watchServices(ns);
    await inSync(w, ns);
    for (let n = 2; n <= 4; n++) {
      await waitFor(() => calls(ns).watches.length === n - 1 && server.watches.length > 0, WAIT_MS, `watch ${n - 1} to be open`);
      server.dropWatches();
      await waitFor(() => calls(ns).watches.length === n, WAIT_MS, `watch ${n}`);
    }
    const at = calls(ns).watches.map((r) => r.at);
    const gaps = at.slice(1).map((t, i) => t - at[i]!);
    // The first reconnect is immediate; each further one without an event between doubles from 1 s.
    expect(gaps[0]).toBeLessThan(900);
    expect(gaps[1]).toBeGreaterThanOrEqual(950);
    expect(gaps[2]).toBeGreaterThanOrEqual(1950);
    expect(calls(ns).lists).toHaveLength(1);
  });

  it('a cut connection is an error to client-node; restarted, the informer catches up without a relist', async () => {
    const ns = namespace();
    server.create(service(ns, 'a'));
    const w = await watchServices(ns);
    await inSync(w, ns);
    server.dropWatches({ abrupt: true });
    server.create(service(ns, 'b'));
    await inSync(w, ns);
    expect(w.errors.length).toBeGreaterThanOrEqual(1);
    expect(calls(ns).lists).toHaveLength(1);
    expect(w.events).toEqual(['add a', 'add b']);
  });

  for (const form of ['http', 'event'] as const) {
    it(`an expired resourceVersion (${form === 'http' ? 'HTTP 410' : 'HTTP 200 then an ERROR event with code 410'}) makes it relist, and the cache ends equal to the server`, async () => {
      server.expiredForm = form;
      const ns = namespace();
      for (const n of ['a', 'b', 'c']) server.create(service(ns, n));
      const w = await watchServices(ns);
      await inSync(w, ns);
      // While the watch hears nothing: changes, then the history that held them is compacted away.
      server.stallWatches();
      server.delete(service(ns, 'a'));
      server.replace({ ...service(ns, 'b', 9090), metadata: { name: 'b', namespace: ns } });
      server.create(service(ns, 'd'));
      server.compact();
      server.dropWatches();
      await inSync(w, ns);
      await waitFor(() => calls(ns).lists.length === 2, WAIT_MS, 'a relist');
      const { watches } = calls(ns);
      const expired = watches[1]!;
      expect(expired.status).toBe(form === 'http' ? 410 : 200);
      expect(w.events.slice(3).sort()).toEqual(['add d', 'delete a', 'update b']);
      expect(w.informer.get('b', ns)?.spec?.ports?.[0]?.port).toBe(9090);
      expect(w.errors).toEqual([]);
    });
  }

  it('a stalled watch is made again after the client\'s inactivity timeout and misses nothing', async () => {
    const ns = namespace();
    server.create(service(ns, 'a'));
    // client-node's default is 30 s of silence; 1.5 s keeps the test short.
    const w = await watchServices(ns, { inactivityTimeoutMs: 1500 });
    await inSync(w, ns);
    expect(server.stallWatches()).toBeGreaterThanOrEqual(1);
    server.create(service(ns, 'b'));
    await sleep(300);
    expect(w.cache()).not.toHaveProperty('b');
    await inSync(w, ns);
    expect(calls(ns).watches.length).toBeGreaterThanOrEqual(2);
    expect(calls(ns).lists).toHaveLength(1);
  });

  it('1,000 scripted changes with dropped watches, a stall and both forms of 410: nothing lost, nothing re-ordered', async () => {
    const ns = namespace();
    const w = await watchServices(ns, { inactivityTimeoutMs: 1500 });
    // name → the resourceVersions the informer delivered for it, in order.
    const seen = new Map<string, number[]>();
    const note = (s: k8s.V1Service): void => {
      const list = seen.get(s.metadata!.name!) ?? [];
      list.push(Number(s.metadata!.resourceVersion));
      seen.set(s.metadata!.name!, list);
    };
    w.informer.on('add', note);
    w.informer.on('update', note);
    let rng = 7;
    const random = (n: number): number => ((rng = (rng * 1103515245 + 12345) % 2 ** 31) % n);
    const mutate = (): void => {
      const name = `s${random(40)}`;
      const current = server.get(service(ns, name));
      if (current === undefined) server.create(service(ns, name, 1 + random(1000)));
      else if (random(4) === 0) server.delete(current);
      else server.replace({ ...current, metadata: { ...current.metadata, resourceVersion: undefined }, spec: { ports: [{ port: 1 + random(1000) }] } });
    };
    const disruptions: Record<number, () => Promise<void>> = {
      200: async () => void server.dropWatches(),
      400: async () => void server.dropWatches({ abrupt: true }),
      500: async () => {
        server.stallWatches();
        for (let i = 0; i < 20; i++) mutate();
        await sleep(2000); // past the informer's 1.5 s inactivity timeout
      },
      700: async () => {
        server.expiredForm = 'http';
        server.stallWatches();
        for (let i = 0; i < 20; i++) mutate();
        server.compact();
        server.dropWatches();
      },
      900: async () => {
        server.expiredForm = 'event';
        server.stallWatches();
        for (let i = 0; i < 20; i++) mutate();
        server.compact();
        server.dropWatches();
      },
    };
    for (let i = 0; i < 1000; i++) {
      mutate();
      if (disruptions[i]) await watching(w, ns);
      await disruptions[i]?.();
      if (i % 50 === 0) await sleep(20);
    }
    await inSync(w, ns);
    for (const [name, rvs] of seen) expect(rvs, name).toEqual([...rvs].sort((a, b) => a - b));
    expect(calls(ns).lists).toHaveLength(3);
    expect(calls(ns).watches.map((r) => r.status)).toContain(410);
  });

  it('pods of one node (field selector spec.nodeName, which makeInformer cannot pass; ListWatch can): bound ones arrive, others never', async () => {
    const ns = namespace();
    const pod = (name: string, nodeName?: string): KubeObject => ({
      apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: ns },
      spec: { ...(nodeName !== undefined && { nodeName }), containers: [{ name: 'c', image: 'x' }] },
    });
    server.create(pod('here', 'node-a'));
    server.create(pod('there', 'node-b'));
    const pending = server.create(pod('pending'));
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(server.kubeconfigPath);
    const api = kc.makeApiClient(k8s.CoreV1Api);
    const selector = 'spec.nodeName=node-a';
    const informer = new k8s.ListWatch<k8s.V1Pod>(`/api/v1/namespaces/${ns}/pods`, new k8s.Watch(kc),
      () => api.listNamespacedPod({ namespace: ns, fieldSelector: selector }), false, undefined, selector);
    informers.push(informer);
    const names = (): string[] => informer.list(ns).map((p) => p.metadata!.name!).sort();
    await informer.start();
    await waitFor(() => names().length === 1, WAIT_MS, 'the pod on node-a');
    // The scheduler's binding, done programmatically: the pod moves into the selector.
    server.replace({ ...pending, spec: { ...(pending.spec as object), nodeName: 'node-a' } });
    server.create(pod('later', 'node-b'));
    await waitFor(() => names().length === 2, WAIT_MS, 'the bound pod');
    await sleep(200);
    expect(names()).toEqual(['here', 'pending']);
    const watchUrl = server.requests.find((r) => r.url.startsWith(`/api/v1/namespaces/${ns}/pods?`) && r.url.includes('watch=true'))!.url;
    expect(new URL(watchUrl, 'http://x').searchParams.get('fieldSelector')).toBe(selector);
  });

  it('a server that stops and comes back on the same port: the informer catches up with what changed meanwhile', async () => {
    const ns = namespace();
    server.create(service(ns, 'a'));
    const w = await watchServices(ns);
    await inSync(w, ns);
    const port = server.port;
    await server.stop();
    server.create(service(ns, 'b'));
    server.delete(service(ns, 'a'));
    await sleep(500);
    expect(w.cache()).toHaveProperty('a');
    await server.listen();
    expect(server.port).toBe(port);
    await inSync(w, ns);
    expect(w.errors.length).toBeGreaterThanOrEqual(1);
    expect(w.events).toEqual(['add a', 'add b', 'delete a']);
  });
});
