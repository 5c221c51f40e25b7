// The Kubernetes source against the test API server (a server per test) or, with MESH_TEST_KUBECONFIG, a real
// cluster (startKubeCluster of @mesh/testkit): objects made the way a cluster makes them (pods bound to a node,
// with status; their cgroups made under a scratch cgroup as kubelet would), and what the source's last snapshot
// should hold, computed from the server's objects independently of the source's own conversion. Against a real
// cluster only the namespaces the test wrote to are compared (a cluster has objects of its own).
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { type Cgroup, createCgroup, FAKE_ONLY, type KubeApiServer, type KubeCluster, type KubeObject, startKubeCluster } from '@mesh/testkit';

import type { ConfigSnapshot } from '../../src/config/objects.js';
import { KubernetesSource, type KubernetesSourceOptions } from '../../src/config/kubernetes/source.js';
import { loadKubeConfig } from '../../src/config/kubernetes/resources.js';
import type { ConfigUpdate } from '../../src/config/source.js';

export const NODE = 'node-a';
export const WAIT_MS = 30_000;

export interface Rig {
  /** Where objects are written: the test API server or a real cluster. */
  cluster: KubeCluster;
  /** The test API server, for its switches; throws against a real cluster (tests using it skip there). */
  server: KubeApiServer;
  /** Against a real cluster: the namespaces this test wrote to (the ones compared). */
  namespaces: Set<string>;
  create(o: KubeObject): Promise<KubeObject>;
  replace(o: KubeObject): Promise<KubeObject>;
  delete(o: KubeObject): Promise<void>;
  get(o: KubeObject): Promise<KubeObject | undefined>;
  cgroups: Cgroup;
  source: KubernetesSource;
  updates: ConfigUpdate[];
  last(): ConfigSnapshot | undefined;
  /** Lists (not watches) the source sent for a resource's collection, e.g. '/api/v1/services'. */
  lists(path: string): number;
  close(): Promise<void>;
}

export async function startRig(opts: Partial<Omit<KubernetesSourceOptions, 'kubeConfig' | 'cgroupRoot'>> & { serverDown?: boolean; before?: (s: KubeApiServer) => void } = {}): Promise<Rig> {
  const cluster = await startKubeCluster();
  let cgroups: Cgroup | undefined;
  try {
    const fake = cluster.fake;
    if (!fake && (opts.serverDown || opts.before)) throw new Error(`startRig: ${FAKE_ONLY}`);
    cgroups = await createCgroup('ksrc');
    if (fake) opts.before?.(fake);
    if (opts.serverDown) await fake!.stop();
    const { serverDown: _d, before: _b, ...sourceOpts } = opts;
    const source = new KubernetesSource({
      kubeConfig: loadKubeConfig({ kubeconfig: cluster.kubeconfigPath }),
      nodeName: NODE,
      cgroupRoot: cgroups.path,
      debounceMs: 50,
      cgroupRetryMs: 200,
      ...sourceOpts,
      informer: { backoffMinMs: 200, backoffMaxMs: 1000, silenceMs: 1500, ...sourceOpts.informer },
    });
    const updates: ConfigUpdate[] = [];
    source.start((u) => updates.push(u));
    const cg = cgroups;
    const namespaces = new Set<string>();
    const seen = (o: KubeObject) => namespaces.add(o.kind === 'Namespace' ? o.metadata.name! : o.metadata.namespace ?? 'default');
    return {
      cluster,
      get server(): KubeApiServer {
        if (!fake) throw new Error(FAKE_ONLY);
        return fake;
      },
      namespaces,
      create: (o) => (seen(o), cluster.create(o)),
      replace: (o) => (seen(o), cluster.replace(o)),
      delete: (o) => cluster.delete(o),
      get: (o) => cluster.get(o),
      cgroups: cg,
      source,
      updates,
      last: () => updates.at(-1)?.snapshot,
      lists: (path) => (fake ?? (() => { throw new Error(FAKE_ONLY); })()).requests.filter((r) => r.method === 'GET' && new URL(r.url, 'http://x').pathname === path && !r.url.includes('watch=true')).length,
      async close() {
        await source.close();
        await cluster.close();
        await cg.close();
      },
    };
  } catch (err) {
    await cluster.close();
    await cgroups?.close();
    throw err;
  }
}

// Objects, as a user (or a controller, or kubelet) writes them.

export const namespace = (name: string, labels: Record<string, string> = {}): KubeObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });

export const service = (ns: string, name: string, port: number, selector?: Record<string, string>): KubeObject => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: ns },
  spec: { ports: [{ name: 'http', port, targetPort: 8080 }], ...(selector && { selector }) },
});

export const slice = (ns: string, svc: string, name: string, addresses: string[], ready = true): KubeObject => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name, namespace: ns, labels: { 'kubernetes.io/service-name': svc } },
  addressType: 'IPv4',
  endpoints: addresses.map((a) => ({ addresses: [a], conditions: { ready } })),
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
});

export const route = (ns: string, name: string, parent: string, backends: [string, number][]): KubeObject => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'HTTPRoute',
  metadata: { name, namespace: ns },
  spec: {
    parentRefs: [{ group: '', kind: 'Service', name: parent, port: 80 }],
    rules: [{ backendRefs: backends.map(([n, weight]) => ({ name: n, port: 80, weight })) }],
  },
});

export const pod = (ns: string, name: string, ip: string, opts: { node?: string; labels?: Record<string, string>; ready?: boolean; qos?: string } = {}): KubeObject => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: ns, labels: opts.labels ?? { app: name } },
  spec: { nodeName: opts.node ?? NODE, serviceAccountName: 'web', containers: [{ name: 'c', image: 'x', ports: [{ name: 'http', containerPort: 8080 }] }] },
  status: {
    phase: 'Running',
    qosClass: opts.qos ?? 'Burstable',
    podIP: ip,
    podIPs: [{ ip }],
    conditions: [{ type: 'Ready', status: opts.ready === false ? 'False' : 'True' }],
  },
});

/** The pod's cgroup as kubelet (systemd driver) lays it out, relative to the cgroup root. */
export function kubeletCgroup(uid: string, qos = 'Burstable'): string {
  const u = uid.replaceAll('-', '_');
  return qos === 'Guaranteed'
    ? `kubepods.slice/kubepods-pod${u}.slice`
    : `kubepods.slice/kubepods-${qos.toLowerCase()}.slice/kubepods-${qos.toLowerCase()}-pod${u}.slice`;
}

/** What kubelet does once a pod is bound here: make its cgroup, with a container in it. */
export function runPod(rig: Rig, p: KubeObject): string {
  const rel = kubeletCgroup(p.metadata.uid!, (p.status as { qosClass?: string } | undefined)?.qosClass);
  mkdirSync(join(rig.cgroups.path, rel, `cri-containerd-${'ab'.repeat(32)}.scope`), { recursive: true });
  return rel;
}

// What a snapshot holds, in a form both sides can be brought to.

export interface Summary {
  services: Record<string, string>;
  slices: Record<string, string>;
  routes: Record<string, string>;
  workloads: Record<string, string>;
}

const sortedRecord = (entries: [string, string][]) => Object.fromEntries(entries.sort(([a], [b]) => a.localeCompare(b)));

export function summarize(snapshot: ConfigSnapshot | undefined, inScope: (namespace: string) => boolean = () => true): Summary {
  if (!snapshot) return { services: {}, slices: {}, routes: {}, workloads: {} };
  const mine = <T extends { metadata: { namespace?: string } }>(l: T[]) => l.filter((x) => inScope(x.metadata.namespace ?? 'default'));
  const s = { services: mine(snapshot.services), endpointSlices: mine(snapshot.endpointSlices), httpRoutes: mine(snapshot.httpRoutes), workloads: mine(snapshot.workloads) };
  return {
    services: sortedRecord(s.services.map((x) => [`${x.metadata.namespace}/${x.metadata.name}`, `${x.spec.clusterIP} ${x.spec.ports.map((p) => `${p.port}>${p.targetPort}`).join(',')}`])),
    slices: sortedRecord(s.endpointSlices.map((x) => [`${x.metadata.namespace}/${x.metadata.name}`, x.endpoints.map((e) => `${e.addresses.join('+')}${e.conditions?.ready === false ? '!' : ''}`).join(',')])),
    routes: sortedRecord(s.httpRoutes.map((x) => [`${x.metadata.namespace}/${x.metadata.name}`, (x.spec.rules ?? []).flatMap((r) => r.backendRefs ?? []).map((b) => `${b.name}=${b.weight}`).join(',')])),
    workloads: sortedRecord(s.workloads.map((w) => [`${w.metadata.namespace}/${w.metadata.name}`, `${w.spec.addresses.join('+')} ${w.spec.ready ? 'ready' : 'unready'} ${w.spec.cgroup}`])),
  };
}

/** The summary the server's objects call for: Services with a cluster IP, every slice and route, and this
 *  node's pods in the mesh (by namespace or pod label) whose cgroup exists. */
export async function expected(rig: Rig): Promise<Summary> {
  const inScope = scope(rig);
  const all = await Promise.all(
    [['v1', 'Namespace'], ['v1', 'Service'], ['discovery.k8s.io/v1', 'EndpointSlice'], ['gateway.networking.k8s.io/v1', 'HTTPRoute'], ['v1', 'Pod']].map(([apiVersion, kind]) => rig.cluster.list({ apiVersion, kind })),
  );
  const [namespaces, services, slices, routes, pods] = all.map((l, i) => (i === 0 ? l : l.filter((o) => inScope(o.metadata.namespace ?? 'default')))) as KubeObject[][];
  const server = { list: (ref: { apiVersion?: string; kind: string }) => ({ Namespace: namespaces, Service: services, EndpointSlice: slices, HTTPRoute: routes, Pod: pods })[ref.kind]! };
  const nsLabels = new Map(server.list({ kind: 'Namespace' }).map((n) => [n.metadata.name!, n.metadata.labels ?? {}]));
  const key = (o: KubeObject) => `${o.metadata.namespace}/${o.metadata.name}`;
  const spec = (o: KubeObject) => o.spec as any;
  return {
    services: sortedRecord(
      server.list({ apiVersion: 'v1', kind: 'Service' })
        .filter((s) => spec(s).clusterIP && spec(s).clusterIP !== 'None')
        .map((s) => [key(s), `${spec(s).clusterIP} ${spec(s).ports.map((p: any) => `${p.port}>${p.targetPort}`).join(',')}`]),
    ),
    slices: sortedRecord(
      server.list({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice' }).map((s) => [key(s), ((s as any).endpoints as any[]).map((e) => `${e.addresses.join('+')}${e.conditions?.ready === false ? '!' : ''}`).join(',')]),
    ),
    routes: sortedRecord(
      server.list({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute' }).map((r) => [key(r), (spec(r).rules as any[]).flatMap((x) => x.backendRefs).map((b: any) => `${b.name}=${b.weight}`).join(',')]),
    ),
    workloads: sortedRecord(
      server.list({ apiVersion: 'v1', kind: 'Pod' })
        .filter((p) => spec(p).nodeName === NODE)
        .filter((p) => {
          const l = p.metadata.labels ?? {};
          if (l['mesh.dev/enabled'] === 'false') return false;
          return l['mesh.dev/enabled'] === 'true' || nsLabels.get(p.metadata.namespace!)?.['mesh.dev/enabled'] === 'true';
        })
        .flatMap((p): [string, string][] => {
          const st = p.status as any;
          const rel = kubeletCgroup(p.metadata.uid!, st.qosClass);
          const ready = st.conditions.some((c: any) => c.type === 'Ready' && c.status === 'True');
          return existsSync(join(rig.cgroups.path, rel)) ? [[key(p), `${st.podIPs.map((x: any) => x.ip).join('+')} ${ready ? 'ready' : 'unready'} ${rel}`]] : [];
        }),
    ),
  };
}

/** Which namespaces are compared: all on the test server, the test's own on a real cluster. */
const scope = (rig: Rig) => (rig.cluster.fake ? () => true : (ns: string) => rig.namespaces.has(ns));

/** Waits until the source's last snapshot says what the server's objects say; returns it. */
export async function converged(rig: Rig, what: string, timeoutMs = WAIT_MS): Promise<Summary> {
  const deadline = Date.now() + timeoutMs;
  let want = await expected(rig);
  let got = summarize(rig.last(), scope(rig));
  while (JSON.stringify(want) !== JSON.stringify(got)) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: the last snapshot differs from the server's objects\n` +
        `want ${JSON.stringify(want)}\ngot  ${JSON.stringify(got)}\nhealth ${JSON.stringify(rig.source.health())}`);
    }
    await sleep(25);
    want = await expected(rig);
    got = summarize(rig.last(), scope(rig));
  }
  return got;
}

export async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}
