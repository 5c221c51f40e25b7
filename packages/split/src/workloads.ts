/** On one machine there is no endpoints controller: EndpointSlices are computed from Service selectors and
 *  the workloads running here, as Kubernetes' controller would compute them from pods. */
import { isIPv4, isIPv6 } from 'node:net';

import { type EndpointSlice, type ObjectMeta, SERVICE_NAME_LABEL, type Service } from './model.js';
import { namespaceOf } from './names.js';
import { every, runSteps, type Steps } from './steps.js';

/** The fields of a workload (the project's own kind, or a pod) that endpoint computation reads. */
export interface WorkloadEndpoints {
  metadata: ObjectMeta;
  spec: {
    addresses: string[];
    /** Named ports, for Services whose targetPort is a name. */
    ports?: { name: string; port: number; protocol?: 'TCP' | 'UDP' }[];
    /** A workload that is not ready gets no traffic. */
    ready?: boolean;
  };
}

/** Computed slices by Service, kept from one config to the next: a Service that selects the very same workload
 *  objects keeps its slices (the same objects, so a Compiler keeps its compiled addresses too). Each computation
 *  replaces `byService` with the Services it saw. */
export interface SliceCache {
  byService: Map<Service, { members: WorkloadEndpoints[]; slices: EndpointSlice[] }>;
}

/** One EndpointSlice per Service and address family, listing the workloads its selector matches. */
export function endpointSlicesFor(services: Service[], workloads: WorkloadEndpoints[]): EndpointSlice[] {
  return runSteps(endpointSliceSteps(services, workloads));
}

/** endpointSlicesFor in steps. Workloads are indexed by namespace and label, so a Service's members are found
 *  from its selector's rarest label: time grows with services + workloads, not their product. */
export function* endpointSliceSteps(services: Service[], workloads: WorkloadEndpoints[], cache?: SliceCache): Steps<EndpointSlice[]> {
  const tick = every();
  // namespace → label → value → the workloads carrying it, in config order.
  const index = new Map<string, Map<string, Map<unknown, WorkloadEndpoints[]>>>();
  for (const w of workloads) {
    if (tick()) yield;
    const ns = namespaceOf(w.metadata);
    let byLabel = index.get(ns);
    if (!byLabel) index.set(ns, (byLabel = new Map()));
    for (const [k, v] of Object.entries(w.metadata.labels ?? {})) {
      let byValue = byLabel.get(k);
      if (!byValue) byLabel.set(k, (byValue = new Map()));
      const list = byValue.get(v);
      if (list) list.push(w);
      else byValue.set(v, [w]);
    }
  }

  const out: EndpointSlice[] = [];
  const seen: SliceCache['byService'] = new Map();
  for (const svc of services) {
    if (tick()) yield;
    const selector = svc.spec.selector;
    if (!selector || Object.keys(selector).length === 0) continue; // no selector: endpoints are managed by hand
    const ns = namespaceOf(svc.metadata);
    const entries = Object.entries(selector);
    let candidates: WorkloadEndpoints[] = [];
    for (const [i, [k, v]] of entries.entries()) {
      const list = index.get(ns)?.get(k)?.get(v) ?? [];
      if (i === 0 || list.length < candidates.length) candidates = list;
    }
    const members = candidates.filter((w) => entries.every(([k, v]) => w.metadata.labels?.[k] === v));
    const cached = cache?.byService.get(svc);
    if (cached && cached.members.length === members.length && cached.members.every((w, i) => w === members[i])) {
      seen.set(svc, cached);
      out.push(...cached.slices);
      continue;
    }
    const slices = slicesOf(svc, ns, members);
    if (cache) seen.set(svc, { members, slices });
    out.push(...slices);
  }
  if (cache) cache.byService = seen;
  return out;
}

function slicesOf(svc: Service, ns: string, members: WorkloadEndpoints[]): EndpointSlice[] {
  // One pass over the members' addresses (50,000 Services at a time: no per-family filter and map arrays).
  let v4: EndpointSlice['endpoints'] | undefined;
  let v6: EndpointSlice['endpoints'] | undefined;
  for (const w of members) {
    const conditions = { ready: w.spec.ready !== false };
    for (const a of w.spec.addresses) {
      if (isIPv4(a)) (v4 ??= []).push({ addresses: [a], conditions });
      else if (isIPv6(a)) (v6 ??= []).push({ addresses: [a], conditions });
    }
  }
  if (!v4 && !v6) return [];
  const ports: EndpointSlice['ports'] = [];
  for (const p of svc.spec.ports) {
    const tp = p.targetPort ?? p.port;
    const port = typeof tp === 'number' ? tp : namedPort(members, tp);
    if (port !== undefined) ports.push({ name: p.name ?? '', port, protocol: p.protocol ?? 'TCP' });
  }
  const out: EndpointSlice[] = [];
  for (const [family, addressType, endpoints] of [[4, 'IPv4', v4], [6, 'IPv6', v6]] as const) {
    if (!endpoints) continue;
    out.push({
      kind: 'EndpointSlice',
      apiVersion: 'discovery.k8s.io/v1',
      metadata: { name: `${svc.metadata.name}-${family === 4 ? 'v4' : 'v6'}`, namespace: ns, labels: { [SERVICE_NAME_LABEL]: svc.metadata.name } },
      addressType,
      endpoints,
      // Each slice its own list: objects are values, and the two slices are two objects.
      ports: out.length ? ports.map((p) => ({ ...p })) : ports,
    });
  }
  return out;
}

/** The port a member names `name` (the first member's that has one). */
function namedPort(members: WorkloadEndpoints[], name: string): number | undefined {
  for (const w of members) for (const wp of w.spec.ports ?? []) if (wp.name === name) return wp.port;
  return undefined;
}
