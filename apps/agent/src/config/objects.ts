/**
 * The agent's configuration objects: Kubernetes kinds the split package models (Service, EndpointSlice,
 * HTTPRoute) plus the project's own Workload kind, which stands in for a pod on one machine. A config is
 * accepted or rejected whole; every problem names the document, the kind, the object and the field.
 */
import { posix } from 'node:path';

import { compilePolicySteps, type WorkloadPolicy } from '@mesh/mtls/policy';

import {
  type Compiled,
  Compiler,
  type EndpointSlice,
  endpointSliceSteps,
  every,
  type HTTPRoute,
  ipExpected,
  isDnsLabel,
  isDnsSubdomain,
  isIP,
  isPort,
  namespaceOf,
  objectName,
  type ObjectMeta,
  portExpected,
  qualifiedName,
  type RouteStatus,
  runSteps,
  type Service,
  SERVICE_NAME_LABEL,
  type SliceCache,
  type Snapshot,
  SnapshotError,
  type Steps,
  Validator,
  validateSteps,
} from '@mesh/split';

export const MESH_GROUP = 'mesh.dev';
export const WORKLOAD_API_VERSION = `${MESH_GROUP}/v1alpha1`;

/** A process group on this machine that is one workload (a pod's stand-in). */
export interface Workload {
  apiVersion: typeof WORKLOAD_API_VERSION;
  kind: 'Workload';
  metadata: ObjectMeta;
  spec: {
    /** The SPIFFE identity's service account; default "default". */
    serviceAccount?: string;
    /** cgroup v2 directory relative to the mesh's cgroup root; default "<namespace>/<name>". */
    cgroup?: string;
    /** Addresses the workload serves on (loopback addresses on one machine). */
    addresses: string[];
    ports?: { name: string; port: number; protocol?: 'TCP' | 'UDP' }[];
    ready?: boolean;
    /** The node it runs on (pod.spec.nodeName); absent: this node. Another node's workloads are endpoints and
     *  mTLS destinations here, never cgroups or identities. */
    nodeName?: string;
  };
}

/** Where an object came from, for messages: "mesh.yaml: document 3 (line 41)". */
export interface Origin {
  file: string;
  document: number;
  line: number;
}

export const originText = (o: Origin) => `${o.file}: document ${o.document} (line ${o.line})`;

/** Istio's PeerAuthentication and AuthorizationPolicy: carried raw in the snapshot, compiled by @mesh/mtls. */
export const ISTIO_SECURITY_API_VERSION = 'security.istio.io/v1';
export const SECURITY_KINDS = ['PeerAuthentication', 'AuthorizationPolicy'] as const;

/** The kinds a config may hold, with the apiVersion each must carry. */
export const KINDS: Record<string, string> = {
  Service: 'v1',
  EndpointSlice: 'discovery.k8s.io/v1',
  HTTPRoute: 'gateway.networking.k8s.io/v1',
  Workload: WORKLOAD_API_VERSION,
  PeerAuthentication: ISTIO_SECURITY_API_VERSION,
  AuthorizationPolicy: ISTIO_SECURITY_API_VERSION,
};

/** The objects of one config, as a config source (file or Kubernetes) produces them. */
export interface ConfigSnapshot extends Snapshot {
  workloads: Workload[];
  /** PeerAuthentications and AuthorizationPolicies as written (file) or as the API server returns them
   *  (managedFields dropped): parsed and compiled by @mesh/mtls `compilePolicies`, not by the routing config. */
  securityPolicies: object[];
  /** "Kind namespace/name" → where it was defined (absent for objects from the API server). */
  origins?: Map<string, Origin>;
  /** Node name → the node's address, where its data plane listens for tunnels (Kubernetes: its pods'
   *  status.hostIP); the file source has none (--mtls-node names them). */
  nodeAddresses?: Record<string, string>;
}

/** A validated config: the routing snapshot (endpoints computed from workloads where a Service selects them),
 *  the workloads with their resolved cgroup paths, and route status. */
export interface ResolvedConfig {
  routing: Snapshot;
  /** The routing snapshot compiled: what the split datapath installs, and route status. */
  compiled: Compiled;
  workloads: ResolvedWorkload[];
  routes: RouteStatus[];
  /** Per workload ("<namespace>/<name>"): its mTLS mode per port and the AuthorizationPolicies that select it,
   *  compiled from the snapshot's securityPolicies (every workload, PERMISSIVE and no policies without any). */
  policies: ReadonlyMap<string, WorkloadPolicy>;
  /** The snapshot's nodeAddresses (empty without). */
  nodeAddresses: ReadonlyMap<string, string>;
}

export interface ResolvedWorkload {
  name: string;
  namespace: string;
  serviceAccount: string;
  labels: Record<string, string>;
  /** Relative to the mesh's cgroup root. */
  cgroup: string;
  addresses: string[];
  /** The ports of spec.ports (each gets its mTLS mode); absent: none. */
  ports?: number[];
  /** spec.nodeName: absent on this node's workloads. */
  nodeName?: string;
}

/** A config the agent rejects: the routing snapshot's error (problems, each naming object and field), for a
 *  config's documents, kinds and Workloads too. */
export class ConfigError extends SnapshotError {
  constructor(problems: string[]) {
    super(problems);
    this.name = 'ConfigError';
  }
}

/** What the checks of the config's workloads share: names, cgroups and addresses held so far, and each valid
 *  cgroup path with the workload's place in the config and its name (for nestedCgroups). */
interface WorkloadsSeen {
  names: Set<string>;
  cgroups: Map<string, string>;
  addresses: Map<string, string>;
  paths: [string, number, string][];
}

type At = (field: string, msg: string) => void;

function* validateWorkloads(workloads: Workload[], problems: string[]): Steps<ResolvedWorkload[]> {
  const out: ResolvedWorkload[] = [];
  const seen: WorkloadsSeen = { names: new Set(), cgroups: new Map(), addresses: new Map(), paths: [] };
  const tick = every();
  for (const [index, w] of workloads.entries()) {
    if (tick()) yield;
    const r = checkWorkload(w, index, seen, problems);
    if (r) out.push(r);
  }
  yield* nestedCgroups(seen.paths, problems);
  return out;
}

/** One Workload's problems; what it resolves to when its name and its lists can be read. */
function checkWorkload(w: Workload, index: number, seen: WorkloadsSeen, problems: string[]): ResolvedWorkload | undefined {
  const obj = objectName('Workload', w.metadata);
  const at: At = (field, msg) => problems.push(`${obj}: ${field}: ${msg}`);
  const m = w.metadata;
  if (!m || !isDnsLabel(m.name)) return void at('metadata.name', 'must be a DNS label (lower-case letters, digits, -)');
  if (m.namespace !== undefined && !isDnsLabel(m.namespace)) at('metadata.namespace', 'must be a DNS label');
  if (m.labels !== undefined && !isLabels(m.labels)) at('metadata.labels', 'must map names to strings');
  const id = qualifiedName(m);
  if (seen.names.size === seen.names.add(id).size) at('metadata.name', 'appears twice in the config');
  const spec = w.spec;
  if (!spec || typeof spec !== 'object') return void at('spec', 'is required');
  const sa = spec.serviceAccount ?? 'default';
  if (!isDnsLabel(sa)) at('spec.serviceAccount', `must be a DNS label, got ${JSON.stringify(sa)}`);
  const cg = spec.cgroup ?? id;
  const cgroup = checkWorkloadCgroup(cg, [index, obj], seen, at);
  if (!Array.isArray(spec.addresses)) return void at('spec.addresses', 'must list the addresses the workload serves on (may be empty: [])');
  checkWorkloadAddresses(spec.addresses, obj, seen, at);
  const ports = spec.ports ?? [];
  for (let i = 0; i < ports.length; i++) {
    const p = ports[i];
    if (!p || typeof p.name !== 'string' || !p.name) at(`spec.ports[${i}].name`, 'is required');
    if (!p || !isPort(p.port)) at(`spec.ports[${i}].port`, portExpected(p?.port));
  }
  if (spec.ready !== undefined && typeof spec.ready !== 'boolean') at('spec.ready', 'must be true or false');
  if (spec.nodeName !== undefined && !isDnsSubdomain(spec.nodeName)) at('spec.nodeName', `must be a node name (a DNS subdomain), got ${JSON.stringify(spec.nodeName)}`);
  const r: ResolvedWorkload = {
    name: m.name,
    namespace: namespaceOf(m),
    serviceAccount: sa,
    labels: { ...(m.labels ?? {}) },
    cgroup: cgroup ?? (typeof cg === 'string' ? posix.normalize(cg) : ''),
    addresses: spec.addresses.filter((a) => typeof a === 'string'),
    ports: ports.map((p) => p?.port).filter((p) => isPort(p)),
  };
  if (spec.nodeName !== undefined) r.nodeName = spec.nodeName;
  return r;
}

function isLabels(labels: unknown): boolean {
  if (typeof labels !== 'object' || labels === null) return false;
  for (const k in labels) if (typeof (labels as Record<string, unknown>)[k] !== 'string') return false;
  return true;
}

/** Relative, each segment of letters, digits, _ . : - (none empty: the path is its own normal form), none "." or "..". */
const CGROUP_PATH = /^[A-Za-z0-9_.:-]+(?:\/[A-Za-z0-9_.:-]+)*$/;
const DOT_SEGMENT = /(?:^|\/)\.\.?(?:\/|$)/;

/** A relative path under the mesh's cgroup root that no other workload holds; the path when it is one. */
function checkWorkloadCgroup(cg: unknown, [index, obj]: [number, string], seen: WorkloadsSeen, at: At): string | undefined {
  if (typeof cg !== 'string' || !CGROUP_PATH.test(cg) || DOT_SEGMENT.test(cg)) {
    return void at('spec.cgroup', `must be a relative path under the mesh's cgroup root (letters, digits, _ . : -), got ${JSON.stringify(cg)}`);
  }
  const owner = seen.cgroups.get(cg);
  if (owner) at('spec.cgroup', `${JSON.stringify(cg)} is already the cgroup of ${owner}`);
  seen.cgroups.set(cg, obj);
  seen.paths.push([cg, index, obj]);
  return cg;
}

/** Addresses, each held by one workload. */
function checkWorkloadAddresses(addresses: unknown[], obj: string, seen: WorkloadsSeen, at: At): void {
  for (let i = 0; i < addresses.length; i++) {
    const a = addresses[i];
    if (!isIP(a)) {
      at(`spec.addresses[${i}]`, ipExpected(a));
      continue;
    }
    const owner = seen.addresses.get(a);
    if (owner) at(`spec.addresses[${i}]`, `${a} is already an address of ${owner}`);
    seen.addresses.set(a, obj);
  }
}

/**
 * A workload's cgroup may not contain another's: the kernel would attribute the inner one's sockets to both.
 * Each path's enclosing paths are looked up among all paths, nearest first: O(paths × depth), not a comparison
 * of every pair. Each nested path is reported once, with its nearest enclosing one, on the later of the two in
 * the config.
 */
function* nestedCgroups(paths: [string, number, string][], problems: string[]): Steps<void> {
  const tick = every();
  const byPath = new Map<string, [string, number, string]>();
  for (const p of paths) {
    if (tick()) yield;
    if (!byPath.has(p[0])) byPath.set(p[0], p);
  }
  const found: [number, string][] = [];
  for (const cur of paths) {
    if (tick()) yield;
    for (let cut = cur[0].lastIndexOf('/'); cut > 0; cut = cur[0].lastIndexOf('/', cut - 1)) {
      const outer = byPath.get(cur[0].slice(0, cut));
      if (!outer) continue;
      const [later, earlier] = outer[1] > cur[1] ? [outer, cur] : [cur, outer];
      found.push([later[1], `${later[2]}: spec.cgroup: ${JSON.stringify(later[0])} nests with ${JSON.stringify(earlier[0])} of ${earlier[2]}`]);
      break;
    }
  }
  for (const [, p] of found.sort((a, b) => a[0] - b[0])) problems.push(p);
}

/** What resolving one config leaves for the next: compiled Services and computed EndpointSlices of objects
 *  that did not change (see Compiler). */
export interface ResolveMemo {
  validator: Validator;
  compiler: Compiler;
  slices: SliceCache;
  /** The last valid workloads (the very objects, in order) and what they resolved to; their policies. */
  workloads?: { list: Workload[]; resolved: ResolvedWorkload[] };
  policies?: { objects: object[]; workloads: ResolvedWorkload[]; result: ReadonlyMap<string, WorkloadPolicy> };
  /** How securityPolicies are read: the mesh's trust domain (principals in it) and Istio's root namespace. */
  policy: { trustDomain?: string; rootNamespace?: string };
}

export function resolveMemo(policy: ResolveMemo['policy'] = {}): ResolveMemo {
  return { validator: new Validator(), compiler: new Compiler(), slices: { byService: new Map() }, policy };
}

/**
 * Validates a config and resolves it: endpoints of selector Services are computed from the workloads (merged
 * with explicit EndpointSlices), then the routing snapshot is compiled to check it. Throws ConfigError naming
 * every problem with its document; nothing is applied by this function.
 */
export function resolveConfig(cfg: ConfigSnapshot, memo?: ResolveMemo): ResolvedConfig {
  return runSteps(resolveSteps(cfg, memo));
}

/** resolveConfig in steps (runStepsAsync serves the event loop between them); `memo` carries what did not change
 *  from the previous config (objects are values: a changed object is a new object). `onWorkloads` is handed the
 *  workloads as soon as they are checked and found valid, before the rest is resolved (the agent makes their
 *  cgroups meanwhile); the config may still be rejected after it. */
export function* resolveSteps(cfg: ConfigSnapshot, memo: ResolveMemo = resolveMemo(), onWorkloads?: (workloads: ResolvedWorkload[]) => void): Steps<ResolvedConfig> {
  const problems: string[] = [];
  const last = memo.workloads;
  // The same workload objects resolve as they did (objects are values): a reload that changed a route or a
  // Service does not check 20,000 workloads again.
  const workloads = last && sameList(last.list, cfg.workloads) ? last.resolved : yield* validateWorkloads(cfg.workloads, problems);
  if (problems.length === 0) {
    memo.workloads = { list: cfg.workloads.slice(), resolved: workloads };
    onWorkloads?.(workloads);
  }
  // Between the parts: each one's first and last pieces of work (a look at whether its input changed) are not
  // one turn of the event loop together.
  yield;
  const computed = problems.length === 0 ? yield* endpointSliceSteps(cfg.services, cfg.workloads as never, memo.slices) : [];
  // Explicit slices win over computed ones for the same Service (a user who writes slices manages them).
  const explicit = new Set(cfg.endpointSlices.map((s) => `${namespaceOf(s.metadata ?? { name: '' })}/${s.metadata?.labels?.[SERVICE_NAME_LABEL]}`));
  const routing: Snapshot = {
    services: cfg.services,
    endpointSlices: explicit.size ? [...cfg.endpointSlices, ...computed.filter((s) => !explicit.has(`${namespaceOf(s.metadata)}/${s.metadata.labels?.[SERVICE_NAME_LABEL]}`))] : computed,
    httpRoutes: cfg.httpRoutes,
  };
  let compiled: Compiled | undefined;
  yield;
  if (problems.length) problems.push(...(yield* validateSteps(routing)));
  else {
    try {
      const validated = yield* memo.validator.steps(routing);
      yield;
      compiled = yield* memo.compiler.steps(validated);
    } catch (err) {
      if (!(err instanceof SnapshotError)) throw err;
      problems.push(...err.problems);
    }
  }
  let policies: ReadonlyMap<string, WorkloadPolicy> = new Map();
  if (problems.length === 0) {
    yield;
    const objects = cfg.securityPolicies ?? [];
    const lastPolicies = memo.policies;
    if (lastPolicies && lastPolicies.workloads === workloads && sameList(lastPolicies.objects, objects)) policies = lastPolicies.result;
    else {
      // Rejected whole: applying the other policies without the bad one could let in what it was to keep out.
      const r = yield* compilePolicySteps({ objects: objects.map(withNamespace), workloads, ...memo.policy });
      if (r.ok) {
        policies = r.workloads;
        memo.policies = { objects: objects.slice(), workloads, result: policies };
      } else problems.push(...r.errors);
    }
  }
  const nodeAddresses = new Map<string, string>();
  for (const [node, ip] of Object.entries(cfg.nodeAddresses ?? {})) {
    if (!isDnsSubdomain(node)) problems.push(`nodeAddresses: ${JSON.stringify(node)} is not a node name (a DNS subdomain)`);
    else if (typeof ip !== 'string' || !isIP(ip)) problems.push(`nodeAddresses.${node}: expected an IP address, got ${JSON.stringify(ip)}`);
    else nodeAddresses.set(node, ip);
  }
  if (problems.length || !compiled) throw new ConfigError(problems.map((p) => locate(p, cfg.origins)));
  return { routing, compiled, workloads, routes: compiled.routes, policies, nodeAddresses };
}

const sameList = (a: readonly unknown[], b: readonly unknown[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/** A policy from a file may leave metadata.namespace out, as every kind of the config may: "default". */
function withNamespace(o: object): object {
  const m = (o as { metadata?: unknown }).metadata;
  if (!m || typeof m !== 'object' || (m as { namespace?: unknown }).namespace !== undefined) return o;
  return { ...o, metadata: { ...m, namespace: 'default' } };
}

/** Prefixes a problem ("HTTPRoute default/reviews: spec…") with the document that defined its object. */
function locate(problem: string, origins: Map<string, Origin> | undefined): string {
  const m = /^(\w+ [^:\s]+\/[^:\s]+):/.exec(problem);
  const origin = m && origins?.get(m[1]!);
  return origin ? `${originText(origin)}: ${problem}` : problem;
}
