/**
 * The agent's configuration objects: Kubernetes kinds the split package models (Service, EndpointSlice,
 * HTTPRoute) plus the project's own Workload kind, which stands in for a pod on one machine. A config is
 * accepted or rejected whole; every problem names the document, the kind, the object and the field.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { posix } from 'node:path';

import {
  type Compiled,
  Compiler,
  type EndpointSlice,
  endpointSliceSteps,
  every,
  type HTTPRoute,
  namespaceOf,
  type ObjectMeta,
  type RouteStatus,
  runSteps,
  type Service,
  SERVICE_NAME_LABEL,
  type SliceCache,
  type Snapshot,
  SnapshotError,
  type Steps,
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
  };
}

/** Where an object came from, for messages: "mesh.yaml: document 3 (line 41)". */
export interface Origin {
  file: string;
  document: number;
  line: number;
}

export const originText = (o: Origin) => `${o.file}: document ${o.document} (line ${o.line})`;

/** The kinds a config may hold, with the apiVersion each must carry. */
export const KINDS: Record<string, string> = {
  Service: 'v1',
  EndpointSlice: 'discovery.k8s.io/v1',
  HTTPRoute: 'gateway.networking.k8s.io/v1',
  Workload: WORKLOAD_API_VERSION,
};

/** The objects of one config, as a config source (file or Kubernetes) produces them. */
export interface ConfigSnapshot {
  services: Service[];
  endpointSlices: EndpointSlice[];
  httpRoutes: HTTPRoute[];
  workloads: Workload[];
  /** "Kind namespace/name" → where it was defined (absent for objects from the API server). */
  origins?: Map<string, Origin>;
}

/** A validated config: the routing snapshot (endpoints computed from workloads where a Service selects them),
 *  the workloads with their resolved cgroup paths, and route status. */
export interface ResolvedConfig {
  routing: Snapshot;
  /** The routing snapshot compiled: what the split datapath installs, and route status. */
  compiled: Compiled;
  workloads: ResolvedWorkload[];
  routes: RouteStatus[];
}

export interface ResolvedWorkload {
  name: string;
  namespace: string;
  serviceAccount: string;
  labels: Record<string, string>;
  /** Relative to the mesh's cgroup root. */
  cgroup: string;
  addresses: string[];
}

/** A config the agent rejects: the routing snapshot's error (problems, each naming object and field), for a
 *  config's documents, kinds and Workloads too. */
export class ConfigError extends SnapshotError {
  constructor(problems: string[]) {
    super(problems);
    this.name = 'ConfigError';
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const CGROUP_SEGMENT = /^[A-Za-z0-9_.:-]+$/;

export const objectKey = (kind: string, m: ObjectMeta | undefined) => `${kind} ${m ? `${namespaceOf(m)}/${m.name}` : '(no metadata)'}`;

function* validateWorkloads(workloads: Workload[], problems: string[]): Steps<ResolvedWorkload[]> {
  const out: ResolvedWorkload[] = [];
  const names = new Set<string>();
  const cgroups = new Map<string, string>();
  const addresses = new Map<string, string>();
  /** [cgroup path, the workload's place in the config, its name] of each workload with a valid path. */
  const paths: [string, number, string][] = [];
  const tick = every();
  for (const [index, w] of workloads.entries()) {
    if (tick()) yield;
    const obj = objectKey('Workload', w.metadata);
    const at = (field: string, msg: string) => problems.push(`${obj}: ${field}: ${msg}`);
    const m = w.metadata;
    if (!m || typeof m.name !== 'string' || !DNS_LABEL.test(m.name)) {
      at('metadata.name', 'must be a DNS label (lower-case letters, digits, -)');
      continue;
    }
    if (m.namespace !== undefined && (typeof m.namespace !== 'string' || !DNS_LABEL.test(m.namespace))) at('metadata.namespace', 'must be a DNS label');
    if (m.labels !== undefined && (typeof m.labels !== 'object' || m.labels === null || Object.values(m.labels).some((v) => typeof v !== 'string'))) {
      at('metadata.labels', 'must map names to strings');
    }
    const id = `${namespaceOf(m)}/${m.name}`;
    if (names.has(id)) at('metadata.name', 'appears twice in the config');
    names.add(id);
    const spec = w.spec;
    if (!spec || typeof spec !== 'object') {
      at('spec', 'is required');
      continue;
    }
    const sa = spec.serviceAccount ?? 'default';
    if (typeof sa !== 'string' || !DNS_LABEL.test(sa)) at('spec.serviceAccount', `must be a DNS label, got ${JSON.stringify(sa)}`);
    const cg = spec.cgroup ?? `${namespaceOf(m)}/${m.name}`;
    if (typeof cg !== 'string' || cg.startsWith('/') || cg.split('/').some((s) => !CGROUP_SEGMENT.test(s) || s === '.' || s === '..')) {
      at('spec.cgroup', `must be a relative path under the mesh's cgroup root (letters, digits, _ . : -), got ${JSON.stringify(cg)}`);
    } else {
      const norm = posix.normalize(cg);
      const owner = cgroups.get(norm);
      if (owner) at('spec.cgroup', `${JSON.stringify(norm)} is already the cgroup of ${owner}`);
      cgroups.set(norm, obj);
      paths.push([norm, index, obj]);
    }
    if (!Array.isArray(spec.addresses)) {
      at('spec.addresses', 'must list the addresses the workload serves on (may be empty: [])');
      continue;
    }
    spec.addresses.forEach((a, i) => {
      if (typeof a !== 'string' || (!isIPv4(a) && !isIPv6(a))) return at(`spec.addresses[${i}]`, `must be an IPv4 or IPv6 address, got ${JSON.stringify(a)}`);
      const owner = addresses.get(a);
      if (owner) at(`spec.addresses[${i}]`, `${a} is already an address of ${owner}`);
      addresses.set(a, obj);
    });
    (spec.ports ?? []).forEach((p, i) => {
      if (!p || typeof p.name !== 'string' || !p.name) at(`spec.ports[${i}].name`, 'is required');
      if (!p || !Number.isInteger(p.port) || p.port < 1 || p.port > 65535) at(`spec.ports[${i}].port`, `must be an integer in [1, 65535], got ${JSON.stringify(p?.port)}`);
    });
    if (spec.ready !== undefined && typeof spec.ready !== 'boolean') at('spec.ready', 'must be true or false');
    out.push({
      name: m.name,
      namespace: namespaceOf(m),
      serviceAccount: sa,
      labels: { ...(m.labels ?? {}) },
      cgroup: typeof cg === 'string' ? posix.normalize(cg) : '',
      addresses: spec.addresses.filter((a) => typeof a === 'string'),
    });
  }
  yield* nestedCgroups(paths, problems);
  return out;
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
  for (const p of paths) if (!byPath.has(p[0])) byPath.set(p[0], p);
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
  compiler: Compiler;
  slices: SliceCache;
}

export function resolveMemo(): ResolveMemo {
  return { compiler: new Compiler(), slices: { byService: new Map() } };
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
 *  from the previous config (objects are values: a changed object is a new object). */
export function* resolveSteps(cfg: ConfigSnapshot, memo: ResolveMemo = resolveMemo()): Steps<ResolvedConfig> {
  const problems: string[] = [];
  const workloads = yield* validateWorkloads(cfg.workloads, problems);
  const computed = problems.length === 0 ? yield* endpointSliceSteps(cfg.services, cfg.workloads as never, memo.slices) : [];
  // Explicit slices win over computed ones for the same Service (a user who writes slices manages them).
  const explicit = new Set(cfg.endpointSlices.map((s) => `${namespaceOf(s.metadata ?? { name: '' })}/${s.metadata?.labels?.[SERVICE_NAME_LABEL]}`));
  const routing: Snapshot = {
    services: cfg.services,
    endpointSlices: explicit.size ? [...cfg.endpointSlices, ...computed.filter((s) => !explicit.has(`${namespaceOf(s.metadata)}/${s.metadata.labels?.[SERVICE_NAME_LABEL]}`))] : computed,
    httpRoutes: cfg.httpRoutes,
  };
  let compiled: Compiled | undefined;
  if (problems.length) problems.push(...(yield* validateSteps(routing)));
  else {
    try {
      compiled = yield* memo.compiler.steps(routing);
    } catch (err) {
      if (!(err instanceof SnapshotError)) throw err;
      problems.push(...err.problems);
    }
  }
  if (problems.length || !compiled) throw new ConfigError(problems.map((p) => locate(p, cfg.origins)));
  return { routing, compiled, workloads, routes: compiled.routes };
}

/** Prefixes a problem ("HTTPRoute default/reviews: spec…") with the document that defined its object. */
function locate(problem: string, origins: Map<string, Origin> | undefined): string {
  const m = /^(\w+ [^:\s]+\/[^:\s]+):/.exec(problem);
  const origin = m && origins?.get(m[1]!);
  return origin ? `${originText(origin)}: ${problem}` : problem;
}
