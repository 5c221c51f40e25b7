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
  /** The last computation's lists and what it made of them: the same workloads (the very objects, in order)
   *  keep their index, and the same Services too their slices, without a look at each. */
  last?: { services: Service[]; workloads: WorkloadEndpoints[]; index: WorkloadIndex; endpoints: Map<WorkloadEndpoints, MemberEndpoints>; out: EndpointSlice[] };
}

/** namespace → label → value → the workloads carrying it, in config order. */
type WorkloadIndex = Map<string, Map<string, Map<unknown, WorkloadEndpoints[]>>>;

const sameList = (a: readonly unknown[], b: readonly unknown[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/** One EndpointSlice per Service and address family, listing the workloads its selector matches. */
export function endpointSlicesFor(services: Service[], workloads: WorkloadEndpoints[]): EndpointSlice[] {
  return runSteps(endpointSliceSteps(services, workloads));
}

/** A workload's endpoints by family, made once per computation: each is listed by every Service selecting it
 *  (a workload behind 2–3 Services at scale), and a Service of one member lists these very arrays. */
interface MemberEndpoints {
  v4: EndpointSlice['endpoints'] | undefined;
  v6: EndpointSlice['endpoints'] | undefined;
}

/** endpointSlicesFor in steps. Workloads are indexed by namespace and label, so a Service's members are found
 *  from its selector's rarest label: time grows with services + workloads, not their product. */
export function* endpointSliceSteps(services: Service[], workloads: WorkloadEndpoints[], cache?: SliceCache): Steps<EndpointSlice[]> {
  const tick = every();
  const last = cache?.last;
  const sameWorkloads = last !== undefined && sameList(last.workloads, workloads);
  if (sameWorkloads && sameList(last.services, services)) return last.out;
  const index: WorkloadIndex = sameWorkloads ? last.index : new Map();
  const endpoints = sameWorkloads ? last.endpoints : new Map<WorkloadEndpoints, MemberEndpoints>();
  for (const w of sameWorkloads ? [] : workloads) {
    if (tick()) yield;
    const ns = namespaceOf(w.metadata);
    let byLabel = index.get(ns);
    if (!byLabel) index.set(ns, (byLabel = new Map()));
    const labels = w.metadata.labels;
    for (const k in labels) {
      const v = labels[k];
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
    if (!selector) continue; // no selector: endpoints are managed by hand
    const byLabel = index.get(namespaceOf(svc.metadata));
    let candidates: WorkloadEndpoints[] | undefined;
    let labels = 0;
    for (const k in selector) {
      const list = byLabel?.get(k)?.get(selector[k]) ?? [];
      if (labels++ === 0 || list.length < candidates!.length) candidates = list;
    }
    if (labels === 0) continue;
    // One label: every candidate carries it (the index's own list, not copied).
    const members = labels === 1 ? candidates! : candidates!.filter((w) => selects(selector, w));
    const cached = cache?.byService.get(svc);
    if (cached && cached.members.length === members.length && cached.members.every((w, i) => w === members[i])) {
      seen.set(svc, cached);
      for (const s of cached.slices) out.push(s);
      continue;
    }
    const slices = slicesOf(svc, members, endpoints);
    if (cache) seen.set(svc, { members, slices });
    for (const s of slices) out.push(s);
  }
  if (cache) {
    cache.byService = seen;
    // Copies: the caller's lists may change after this (objects are values; lists are the caller's).
    cache.last = { services: services.slice(), workloads: workloads.slice(), index, endpoints, out };
  }
  return out;
}

function selects(selector: Record<string, string>, w: WorkloadEndpoints): boolean {
  const labels = w.metadata.labels;
  for (const k in selector) if (labels?.[k] !== selector[k]) return false;
  return true;
}

/** A workload's endpoints, made on first use. */
function endpointsOf(w: WorkloadEndpoints, made: Map<WorkloadEndpoints, MemberEndpoints>): MemberEndpoints {
  let e = made.get(w);
  if (e) return e;
  e = { v4: undefined, v6: undefined };
  const conditions = { ready: w.spec.ready !== false };
  for (const a of w.spec.addresses) {
    // [x] for the first: a list grown by push() from empty holds room for 16 more.
    if (isIPv4(a)) e.v4 ? e.v4.push({ addresses: [a], conditions }) : (e.v4 = [{ addresses: [a], conditions }]);
    else if (isIPv6(a)) e.v6 ? e.v6.push({ addresses: [a], conditions }) : (e.v6 = [{ addresses: [a], conditions }]);
  }
  made.set(w, e);
  return e;
}

function slicesOf(svc: Service, members: WorkloadEndpoints[], made: Map<WorkloadEndpoints, MemberEndpoints>): EndpointSlice[] {
  let v4: EndpointSlice['endpoints'] | undefined;
  let v6: EndpointSlice['endpoints'] | undefined;
  if (members.length === 1) ({ v4, v6 } = endpointsOf(members[0]!, made));
  else {
    for (const w of members) {
      const e = endpointsOf(w, made);
      if (e.v4) for (const x of e.v4) (v4 ??= []).push(x);
      if (e.v6) for (const x of e.v6) (v6 ??= []).push(x);
    }
  }
  if (!v4 && !v6) return [];
  const ports: NonNullable<EndpointSlice['ports']> = [];
  for (const p of svc.spec.ports) {
    const tp = p.targetPort ?? p.port;
    const port = typeof tp === 'number' ? tp : namedPort(members, tp);
    if (port !== undefined) ports.push({ name: p.name ?? '', port, protocol: p.protocol ?? 'TCP' });
  }
  // Kept with the slice: an exact copy (one grown by push() from empty holds room for 16 more).
  const kept = ports.length === 1 ? [ports[0]!] : ports;
  const ns = namespaceOf(svc.metadata);
  const slice = (family: 'v4' | 'v6', addressType: 'IPv4' | 'IPv6', endpoints: EndpointSlice['endpoints'], ports: EndpointSlice['ports']): EndpointSlice => ({
    kind: 'EndpointSlice',
    apiVersion: 'discovery.k8s.io/v1',
    metadata: { name: `${svc.metadata.name}-${family}`, namespace: ns, labels: { [SERVICE_NAME_LABEL]: svc.metadata.name } },
    addressType,
    endpoints,
    ports,
  });
  if (!v6) return [slice('v4', 'IPv4', v4!, kept)];
  if (!v4) return [slice('v6', 'IPv6', v6, kept)];
  // Each slice its own list: objects are values, and the two slices are two objects.
  return [slice('v4', 'IPv4', v4, kept), slice('v6', 'IPv6', v6, ports.map((p) => ({ ...p })))];
}
/** The port a member names `name` (the first member's that has one). */
function namedPort(members: WorkloadEndpoints[], name: string): number | undefined {
  for (const w of members) for (const wp of w.spec.ports ?? []) if (wp.name === name) return wp.port;
  return undefined;
}
