/**
 * The Kubernetes config source: informers on Services, EndpointSlices, this node's Pods, HTTPRoutes and
 * Namespaces, turned into the same snapshot the file source makes. A snapshot is made only once every
 * informer has listed; changes are debounced; a snapshot whose objects (the fields the mesh reads) hash the
 * same as the last one is not delivered, so a relist that changes nothing writes nothing. While the API
 * server is away the informers keep their caches and nothing is delivered: the datapath keeps its state.
 */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';

import type { V1EndpointSlice, V1Namespace, V1Pod, V1Service } from '@kubernetes/client-node';
import type { Registry } from 'prom-client';

import type { Logger } from '../../log.js';
import { msSince } from '../../log.js';
import type { EndpointSlice, HTTPRoute, Service } from '@mesh/split';

import type { ConfigSnapshot, Workload } from '../objects.js';
import type { ConfigSource, ConfigUpdate } from '../source.js';
import { findPodCgroup, type PodCgroup } from './cgroups.js';
import { KubeClient, type KubeClientConfig } from './client.js';
import { type InformerHealth, type InformerOptions, type KubernetesObject, SupervisedInformer } from './informer.js';
import { registerKubernetesMetrics } from './metrics.js';
import { inMesh, isFinished, podAddresses, podProblem, podToWorkload, qosOf } from './pods.js';
import { listFunctions, nodeSelector, type ResourceName, WATCHED } from './resources.js';
import { endpointSliceView, type HTTPRouteObject, httpRouteView, securityPolicyView, serviceSkipReason, serviceView } from './views.js';

export interface KubernetesSourceOptions {
  kubeConfig: KubeClientConfig;
  /** This node: only its Pods become workloads. */
  nodeName: string;
  /** The agent's cgroup root: pods' cgroups are looked for under it (the kubepods directory or above it). */
  cgroupRoot: string;
  /** Quiet time after a change before a snapshot is made; default 100 ms. */
  debounceMs?: number;
  /** Longest a change waits under a steady stream of others (the debounce alone would wait forever); default 1,000 ms. */
  maxDelayMs?: number;
  /**
   * Also read other nodes' pods (every pod, not only this node's): their in-mesh pods become Workloads with
   * spec.nodeName (endpoints and mTLS destinations here, never cgroups), and their status.hostIP names their
   * node's address (snapshot.nodeAddresses), where that node's data plane listens for tunnels. What mTLS needs;
   * off, only this node's pods are listed (field selector spec.nodeName=<node>).
   */
  remotePods?: boolean;
  /** How often pods whose cgroup kubelet has not made yet are looked for again; default 1,000 ms. */
  cgroupRetryMs?: number;
  informer?: InformerOptions;
  log?: Logger;
}

/** Pods reported in health, at most this many of each list. */
const REPORTED_PODS = 20;

export interface KubernetesHealth {
  /** Every informer has listed at least once (a snapshot has been or can be made). */
  synced: boolean;
  /** Every informer's watch is up. While false the last snapshot stays in force. */
  healthy: boolean;
  /** When `healthy` took its value. */
  since: string;
  lastError?: { at: string; resource: string; message: string };
  informers: Record<ResourceName, InformerHealth>;
  /** Snapshots delivered, and the revision of the last. */
  updates: number;
  revision?: string;
  /** In-mesh pods on this node whose cgroup kubelet has not made yet: not workloads until it has. */
  pendingCgroups: { pod: string; uid: string; since: string }[];
  /** In-mesh pods the mesh cannot take, with the reason. */
  skippedPods: { pod: string; reason: string }[];
}

/** An object's view and the digest of its canonical JSON (what the snapshot hash covers), made once per object. */
type Viewed<V> = { view: V; digest: string };

/**
 * What an informer caches of an object the mesh makes a view of: the metadata the informer's cache keys and
 * compares on, the view (undefined: not one the mesh carries) and its digest, made when the object arrives, in
 * one object (20,000 of them at 10,000 Services). The whole object is dropped there, so the caches and the
 * snapshot share one copy of what the mesh reads.
 */
interface Kept<V = unknown> extends KubernetesObject {
  metadata: { name?: string; namespace?: string; resourceVersion?: string };
  view: V | undefined;
  digest: string;
  /** An object shaped in a way no check foresaw: the snapshot that would hold it fails (build()). */
  error?: Error;
}

/** 128 bits of SHA-256, base64 (24 characters): what tells two views apart, at 40 bytes of heap instead of 64. */
const digestOf = (json: string) => createHash('sha256').update(json).digest().toString('base64', 0, 16);

export function keep<V>(o: KubernetesObject, make: () => V | undefined, hashed: (v: V) => unknown = (v) => v): Kept<V> {
  const { name, namespace, resourceVersion } = o.metadata ?? {};
  const metadata = { name, namespace, resourceVersion };
  try {
    const view = make();
    return { metadata, view, digest: view === undefined ? '' : digestOf(JSON.stringify(hashed(view))) };
  } catch (err) {
    return { metadata, view: undefined, digest: '', error: err as Error };
  }
}

/** The parts of a Pod and a Namespace the source reads (pods.ts): the rest is dropped before caching. */
function keepPod(p: V1Pod): V1Pod {
  const { managedFields: _m, annotations: _a, ownerReferences: _o, ...metadata } = p.metadata ?? {};
  const { containers, hostNetwork, nodeName, serviceAccountName } = p.spec ?? { containers: [] };
  const { phase, qosClass, conditions, podIPs, podIP, hostIP } = p.status ?? {};
  return {
    metadata,
    spec: { containers: (containers ?? []).map((c) => ({ name: c.name, ...(c.ports && { ports: c.ports }) })), hostNetwork, nodeName, serviceAccountName },
    status: { phase, qosClass, conditions: conditions?.filter((c) => c.type === 'Ready'), podIPs, podIP, ...(hostIP && { hostIP }) },
  };
}

const keepNamespace = (n: V1Namespace): V1Namespace => ({
  metadata: { name: n.metadata?.name, resourceVersion: n.metadata?.resourceVersion, ...(n.metadata?.labels && { labels: n.metadata.labels }) },
});

export class KubernetesSource implements ConfigSource {
  readonly description: string;
  /** Kubelet makes and removes pods' cgroups: the agent must not create workload cgroups for this source. */
  readonly managesCgroups = false;
  private readonly client: KubeClient;
  private readonly informers: Record<ResourceName, SupervisedInformer>;
  private readonly cgroups = new Map<string, PodCgroup>();
  private readonly pending = new Map<string, { pod: string; since: string }>();
  private skipped: { pod: string; reason: string }[] = [];
  private readonly log: Logger | undefined;
  private onUpdate: ((u: ConfigUpdate) => void) | undefined;
  private debounce: NodeJS.Timeout | undefined;
  /** When the oldest change not yet in a snapshot came (performance.now()). */
  private pendingSince: number | undefined;
  private retry: NodeJS.Timeout | undefined;
  private lastHash: string | undefined;
  private updates = 0;
  private healthSince = new Date().toISOString();
  private wasHealthy = false;
  private stopped = false;

  constructor(private readonly opts: KubernetesSourceOptions) {
    if (!opts.nodeName) throw new TypeError('KubernetesSource: nodeName is required');
    if (!opts.kubeConfig?.server) throw new TypeError('KubernetesSource: the client configuration has no server');
    this.description = `kubernetes ${opts.kubeConfig.server} node ${opts.nodeName}`;
    this.log = opts.log;
    this.client = new KubeClient(opts.kubeConfig);
    // With remotePods every pod is read (RBAC cannot narrow a list by field anyway: the role allows all pods).
    const lists = listFunctions(this.client, opts.remotePods ? undefined : opts.nodeName);
    const onChange = () => this.schedule();
    const onHealth = () => this.healthChanged();
    type Policy = Parameters<typeof securityPolicyView>[0];
    const transforms: Record<ResourceName, (o: KubernetesObject) => KubernetesObject> = {
      services: (o) => keep(o, () => (serviceSkipReason(o as V1Service) ? undefined : serviceView(o as V1Service))),
      endpointslices: (o) => keep(o, () => endpointSliceView(o as V1EndpointSlice)),
      httproutes: (o) => keep(o, () => httpRouteView(o as HTTPRouteObject)),
      peerauthentications: (o) => keep(o, () => securityPolicyView(o as Policy, 'PeerAuthentication'), (v) => v.hashed),
      authorizationpolicies: (o) => keep(o, () => securityPolicyView(o as Policy, 'AuthorizationPolicy'), (v) => v.hashed),
      pods: (o) => keepPod(o as V1Pod),
      namespaces: (o) => keepNamespace(o as V1Namespace),
    };
    this.informers = Object.fromEntries(
      WATCHED.map((r) => [
        r.name,
        new SupervisedInformer(r.name, this.client, r.path, lists[r.name], {
          ...opts.informer,
          optional: r.optional,
          transform: transforms[r.name],
          ...(r.name === 'pods' && !opts.remotePods && { fieldSelector: nodeSelector(opts.nodeName) }),
          onChange,
          onHealth,
        }),
      ]),
    ) as Record<ResourceName, SupervisedInformer>;
  }

  start(onUpdate: (u: ConfigUpdate) => void): void {
    if (this.onUpdate) throw new TypeError('KubernetesSource: already started');
    this.onUpdate = onUpdate;
    for (const inf of Object.values(this.informers)) inf.start();
  }

  stop(): void {
    void this.close();
  }

  /** Stops every informer and timer; resolves when no list or watch of this source is in flight. */
  async close(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.debounce);
    clearTimeout(this.retry);
    await Promise.all(Object.values(this.informers).map((i) => i.stop()));
    this.client.close();
  }

  health(): KubernetesHealth {
    const informers = Object.fromEntries(Object.entries(this.informers).map(([k, i]) => [k, i.health()])) as Record<ResourceName, InformerHealth>;
    const all = Object.entries(informers);
    let lastError: KubernetesHealth['lastError'];
    for (const [resource, h] of all) {
      if (h.lastError && (!lastError || h.lastError.at > lastError.at)) lastError = { ...h.lastError, resource };
    }
    return {
      synced: all.every(([, h]) => h.synced),
      healthy: all.every(([, h]) => h.healthy),
      since: this.healthSince,
      ...(lastError && { lastError }),
      informers,
      updates: this.updates,
      ...(this.lastHash && { revision: this.lastHash }),
      pendingCgroups: [...this.pending].slice(0, REPORTED_PODS).map(([uid, p]) => ({ uid, ...p })),
      skippedPods: this.skipped.slice(0, REPORTED_PODS),
    };
  }

  /** Why the state in force may be stale: an informer not listed yet, or a watch down (for /readyz). */
  notReady(): string | undefined {
    const h = this.health();
    const failing = (pred: (i: InformerHealth) => boolean) => Object.entries(h.informers).filter(([, i]) => pred(i)).map(([k]) => k);
    if (!h.synced) return `kubernetes: not listed yet: ${failing((i) => !i.synced).join(', ')}${h.lastError ? ` (${h.lastError.message})` : ''}`;
    if (!h.healthy) {
      return `kubernetes: watches down since ${h.since}: ${failing((i) => !i.healthy).join(', ')}${h.lastError ? ` (${h.lastError.message})` : ''}; the last state stays in force`;
    }
    return undefined;
  }

  register(registry: Registry): void {
    registerKubernetesMetrics(registry, () => this.health());
  }

  private healthChanged(): void {
    const healthy = Object.values(this.informers).every((i) => i.health().healthy);
    if (healthy === this.wasHealthy) return;
    this.wasHealthy = healthy;
    this.healthSince = new Date().toISOString();
    if (healthy) this.log?.info('kubernetes: watching', { resources: WATCHED.map((r) => r.name) });
    else {
      const down = Object.entries(this.informers).filter(([, i]) => !i.health().healthy && i.health().lastError);
      if (down.length) this.log?.warn('kubernetes: watches failed (restarting with backoff); the last snapshot stays in force', { errors: Object.fromEntries(down.map(([k, i]) => [k, i.health().lastError?.message])) });
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    clearTimeout(this.debounce);
    const now = performance.now();
    this.pendingSince ??= now;
    const wait = Math.min(this.opts.debounceMs ?? 100, Math.max(0, this.pendingSince + (this.opts.maxDelayMs ?? 1000) - now));
    this.debounce = setTimeout(() => this.emit(), wait);
  }

  private emit(): void {
    this.debounce = undefined;
    this.pendingSince = undefined;
    if (this.stopped || !this.onUpdate) return;
    if (!Object.values(this.informers).every((i) => i.health().synced)) return; // the last informer's list schedules again
    const t0 = performance.now();
    let built: { snapshot: ConfigSnapshot; hash: string };
    try {
      built = this.build();
    } catch (err) {
      // An object shaped in a way no check foresaw: reported like a bad file, the last snapshot stays.
      this.log?.error('kubernetes: cannot make a snapshot', { err });
      return this.onUpdate({ error: err as Error });
    }
    const { snapshot, hash } = built;
    if (hash === this.lastHash) return;
    this.lastHash = hash;
    this.updates++;
    this.onUpdate({ snapshot, revision: hash, readMs: msSince(t0) });
  }

  private build(): { snapshot: ConfigSnapshot; hash: string } {
    const byKey = <V>(name: ResourceName): Viewed<V>[] => {
      const keyed: [string, Viewed<V>][] = [];
      for (const o of this.informers[name].list() as Kept<V>[]) {
        if (o.error) throw o.error;
        if (o.view !== undefined) keyed.push([`${o.metadata.namespace ?? ''}/${o.metadata.name ?? ''}`, o as Viewed<V>]);
      }
      return keyed.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, v]) => v);
    };
    const services = byKey<Service>('services');
    const slices = byKey<EndpointSlice>('endpointslices');
    const routes = byKey<HTTPRoute>('httproutes');
    const security = [...byKey<SecurityView>('peerauthentications'), ...byKey<SecurityView>('authorizationpolicies')];
    // Workloads are few (this node's pods; with remotePods the mesh's pods) and made anew each time: their JSON
    // itself is hashed.
    const { local, remote, nodeAddresses } = this.workloads();
    const workloads = [...local, ...remote].map((w) => ({ view: w, digest: JSON.stringify(w) }));
    const nodes = Object.entries(nodeAddresses).map(([n, ip]) => ({ view: n, digest: `${n}=${ip}` }));
    const hash = createHash('sha256');
    for (const [kind, list] of [['Service', services], ['EndpointSlice', slices], ['HTTPRoute', routes], ['Workload', workloads], ['SecurityPolicy', security], ['Node', nodes]] as const) {
      hash.update(kind).update('\0');
      for (const v of list as Viewed<unknown>[]) hash.update(v.digest).update('\n');
    }
    return {
      snapshot: {
        services: services.map((v) => v.view),
        endpointSlices: slices.map((v) => v.view),
        httpRoutes: routes.map((v) => v.view),
        workloads: workloads.map((v) => v.view),
        securityPolicies: security.map((v) => v.view.object),
        ...(this.opts.remotePods && { nodeAddresses }),
      },
      hash: hash.digest('hex').slice(0, 16),
    };
  }

  /** This node's in-mesh pods whose cgroup is found, as workloads (the others are reported in health); with
   *  remotePods, other nodes' in-mesh pods too, and those nodes' addresses. */
  private workloads(): { local: Workload[]; remote: Workload[]; nodeAddresses: Record<string, string> } {
    const namespaces = new Map<string, V1Namespace>();
    for (const ns of this.informers.namespaces.list() as V1Namespace[]) namespaces.set(ns.metadata?.name ?? '', ns);
    const out: Workload[] = [];
    const skipped: { pod: string; reason: string }[] = [];
    const seen = new Set<string>();
    const now = new Date().toISOString();
    const all = (this.informers.pods.list() as V1Pod[]).filter((p) => !isFinished(p)).sort((a, b) => podName(a).localeCompare(podName(b)));
    const pods = all.filter((p) => p.spec?.nodeName === this.opts.nodeName);
    const remote: Workload[] = [];
    const nodeAddresses: Record<string, string> = {};
    if (this.opts.remotePods) {
      for (const pod of all) {
        const node = pod.spec?.nodeName;
        if (!node || node === this.opts.nodeName || !inMesh(pod, namespaces.get(pod.metadata?.namespace ?? 'default'))) continue;
        // Not started yet (no address), or one the mesh cannot take (its own node reports why).
        if (podProblem(pod) || podAddresses(pod).length === 0) continue;
        remote.push(podToWorkload(pod, { nodeName: node }));
        const hostIP = pod.status?.hostIP;
        if (hostIP && isIP(hostIP) && nodeAddresses[node] === undefined) nodeAddresses[node] = hostIP;
      }
    }
    for (const pod of pods) {
      if (!inMesh(pod, namespaces.get(pod.metadata?.namespace ?? 'default'))) continue;
      const name = podName(pod);
      const problem = podProblem(pod);
      if (problem) {
        skipped.push({ pod: name, reason: problem });
        continue;
      }
      const uid = pod.metadata!.uid!;
      seen.add(uid);
      let cg = this.cgroups.get(uid);
      if (!cg) {
        cg = findPodCgroup(this.opts.cgroupRoot, uid, qosOf(pod));
        if (cg) {
          this.cgroups.set(uid, cg);
          const waited = this.pending.get(uid);
          this.pending.delete(uid);
          if (waited) this.log?.info('kubernetes: pod cgroup found', { pod: name, cgroup: cg.path, waitedSince: waited.since });
        } else {
          if (!this.pending.has(uid)) {
            this.pending.set(uid, { pod: name, since: now });
            this.log?.info('kubernetes: pod cgroup not made yet; looking again', { pod: name, uid, root: this.opts.cgroupRoot });
          }
          continue;
        }
      }
      out.push(podToWorkload(pod, { cgroup: cg.path }));
    }
    for (const uid of [...this.cgroups.keys()]) if (!seen.has(uid)) this.cgroups.delete(uid);
    for (const uid of [...this.pending.keys()]) if (!seen.has(uid)) this.pending.delete(uid);
    if (skipped.length && JSON.stringify(skipped) !== JSON.stringify(this.skipped)) this.log?.warn('kubernetes: pods left out of the mesh', { pods: skipped.slice(0, REPORTED_PODS) });
    this.skipped = skipped;
    clearTimeout(this.retry);
    this.retry = undefined;
    if (this.pending.size && !this.stopped) this.retry = setTimeout(() => this.schedule(), this.opts.cgroupRetryMs ?? 1000);
    return { local: out, remote, nodeAddresses: Object.fromEntries(Object.entries(nodeAddresses).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) };
  }
}

type SecurityView = ReturnType<typeof securityPolicyView>;

const podName = (p: V1Pod) => `${p.metadata?.namespace ?? 'default'}/${p.metadata?.name ?? ''}`;
