/**
 * The part of each API object the mesh reads, as plain objects in the shapes of @mesh/split's model. Only
 * these fields reach a snapshot and its hash: a resourceVersion, a managedFields entry or a status write
 * changes nothing the datapath holds, so it must not make an update.
 *
 * Objects arrive in two forms (client-node deserializes list items into its model classes, watch events are
 * raw JSON); the field names the mesh reads are the same in both.
 */
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';

import type { EndpointSlice, HTTPRoute, ObjectMeta, Protocol, Service, ServicePort } from '@mesh/split';

import { ISTIO_SECURITY_API_VERSION } from '../objects.js';

type Labels = Record<string, string>;

/** Keys sorted, so two equal maps give the same JSON. */
function sortedMap(m: Labels | undefined): Labels | undefined {
  if (!m || typeof m !== 'object') return undefined;
  const keys = Object.keys(m).sort();
  return keys.length ? Object.fromEntries(keys.map((k) => [k, m[k]!])) : undefined;
}

/** Plain JSON with object keys sorted, for the free-form parts (route matches). */
export function canonical(v: unknown): unknown {
  if (v instanceof Date) return timestamp(v);
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === 'object') {
    return Object.fromEntries(
      Object.keys(v)
        .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
        .sort()
        .map((k) => [k, canonical((v as Record<string, unknown>)[k])]),
    );
  }
  return v;
}

/** RFC 3339 as the API server writes it (seconds, Z). */
function timestamp(v: unknown): string | undefined {
  if (v instanceof Date) return v.toISOString().replace(/\.\d{3}Z$/, 'Z');
  return typeof v === 'string' ? v : undefined;
}

/*
 * Views are built by assigning optional fields to an empty literal (or picking one of fixed literals), never with
 * `...(cond && {…})` spreads: V8 gave each object built by a spread between other fields a hidden class of its
 * own (map, descriptors and an out-of-object property array, ~200 bytes), 30,000 of them at 10,000 Services.
 * Fields are assigned in the order the spreads had, so the views' JSON (and the snapshot hash) is unchanged.
 */

const meta = (m: { name?: string; namespace?: string; labels?: Labels } | undefined): ObjectMeta => {
  const labels = sortedMap(m?.labels);
  const name = m?.name ?? '', namespace = m?.namespace ?? 'default';
  return labels ? { name, namespace, labels } : { name, namespace };
};

/** Why the mesh has nothing to do with a Service (no virtual address or no port), or undefined. */
export function serviceSkipReason(svc: V1Service): string | undefined {
  const ips = svc.spec?.clusterIPs?.length ? svc.spec.clusterIPs : svc.spec?.clusterIP ? [svc.spec.clusterIP] : [];
  if (ips.length === 0 || ips.includes('None')) return 'no cluster IP (headless or ExternalName)';
  if (!svc.spec?.ports?.length) return 'no ports';
  return undefined;
}

/** Port lists seen, by their JSON. A cluster has few distinct ones (most Services say http/80 → 8080), so every
 *  view with the same list shares one frozen copy (~100 bytes per object less at 10,000 Services and their
 *  slices). Bounded: past SHARED_PORT_LISTS distinct lists, new ones are kept per object as before. */
const PORT_LISTS = new Map<string, readonly object[]>();
const SHARED_PORT_LISTS = 1024;

function sharedPorts<P extends object>(ports: P[]): P[] {
  const key = JSON.stringify(ports);
  const shared = PORT_LISTS.get(key);
  if (shared) return shared as P[];
  if (PORT_LISTS.size >= SHARED_PORT_LISTS) return ports;
  for (const p of ports) Object.freeze(p);
  PORT_LISTS.set(key, Object.freeze(ports));
  return ports;
}

export function serviceView(svc: V1Service): Service {
  const s = svc.spec!;
  const selector = sortedMap(s.selector);
  const spec = {} as Service['spec'];
  if (s.clusterIP !== undefined) spec.clusterIP = s.clusterIP;
  if (s.clusterIPs?.length) spec.clusterIPs = [...s.clusterIPs];
  spec.ports = sharedPorts(
    (s.ports ?? []).map((p) => {
      const port = {} as ServicePort;
      if (p.name) port.name = p.name;
      port.port = p.port;
      if (p.targetPort !== undefined) port.targetPort = p.targetPort as number | string;
      if (p.protocol) port.protocol = p.protocol as Protocol;
      return port;
    }),
  );
  if (selector) spec.selector = selector;
  return { apiVersion: 'v1', kind: 'Service', metadata: meta(svc.metadata), spec };
}

type Conditions = NonNullable<EndpointSlice['endpoints'][number]['conditions']>;
/** One frozen object per combination of an endpoint's conditions (there are 27): every endpoint of a big
 *  cluster shares one of them instead of holding its own. */
const CONDITIONS = new Map<string, Conditions>();

function conditionsOf(c: { ready?: boolean | null; serving?: boolean | null; terminating?: boolean | null } | undefined): Conditions | undefined {
  if (!c) return undefined;
  const flag = (v: boolean | null | undefined) => (typeof v === 'boolean' ? v : undefined);
  const ready = flag(c.ready), serving = flag(c.serving), terminating = flag(c.terminating);
  if (ready === undefined && serving === undefined && terminating === undefined) return undefined;
  const key = `${ready}/${serving}/${terminating}`;
  let shared = CONDITIONS.get(key);
  if (!shared) {
    shared = Object.freeze({ ...(ready !== undefined && { ready }), ...(serving !== undefined && { serving }), ...(terminating !== undefined && { terminating }) });
    CONDITIONS.set(key, shared);
  }
  return shared;
}

export function endpointSliceView(es: V1EndpointSlice): EndpointSlice {
  const view: EndpointSlice = {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: meta(es.metadata),
    addressType: es.addressType as EndpointSlice['addressType'],
    endpoints: (es.endpoints ?? []).map((e) => {
      const conditions = conditionsOf(e.conditions);
      const addresses = [...(e.addresses ?? [])];
      return conditions ? { addresses, conditions } : { addresses };
    }),
  };
  if (es.ports) {
    view.ports = sharedPorts(
      es.ports.map((p) => {
        const port = {} as NonNullable<EndpointSlice['ports']>[number];
        if (p.name) port.name = p.name;
        if (p.port !== undefined && p.port !== null) port.port = p.port;
        if (p.protocol) port.protocol = p.protocol as Protocol;
        return port;
      }),
    );
  }
  return view;
}

/** An HTTPRoute as the API server sends it (a custom resource: plain JSON). */
export interface HTTPRouteObject {
  metadata?: { name?: string; namespace?: string; labels?: Labels; creationTimestamp?: string | Date };
  spec?: { parentRefs?: unknown[]; rules?: { matches?: unknown[]; backendRefs?: unknown[] }[] };
}

export function httpRouteView(r: HTTPRouteObject): HTTPRoute {
  const created = timestamp(r.metadata?.creationTimestamp);
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    // The creation time orders conflicting routes (the oldest wins), so it is part of what matters.
    metadata: { ...meta(r.metadata), ...(created && { creationTimestamp: created }) },
    spec: {
      ...(r.spec?.parentRefs && { parentRefs: canonical(r.spec.parentRefs) as HTTPRoute['spec']['parentRefs'] }),
      ...(r.spec?.rules && {
        rules: r.spec.rules.map((rule) => ({
          ...(rule.matches && { matches: canonical(rule.matches) as unknown[] }),
          ...(rule.backendRefs && { backendRefs: canonical(rule.backendRefs) as NonNullable<HTTPRoute['spec']['rules']>[number]['backendRefs'] }),
        })),
      }),
    },
  };
}

/** A PeerAuthentication or AuthorizationPolicy as the API server returned it, managedFields dropped (for
 *  @mesh/mtls to compile), and the part of it that the hash covers: what a policy says, not its bookkeeping
 *  (resourceVersion, generation, annotations). */
export function securityPolicyView(
  o: { apiVersion?: string; kind?: string; metadata?: Record<string, unknown>; spec?: unknown },
  kind: 'PeerAuthentication' | 'AuthorizationPolicy',
): { object: object; hashed: unknown } {
  const { managedFields: _m, ...metadata } = o.metadata ?? {};
  // List items may come without apiVersion and kind (a list names them once); the informer says which.
  const head = { apiVersion: o.apiVersion ?? ISTIO_SECURITY_API_VERSION, kind: o.kind ?? kind };
  return {
    object: { ...head, metadata, spec: o.spec },
    hashed: canonical({ ...head, namespace: metadata.namespace, name: metadata.name, labels: metadata.labels, spec: o.spec }),
  };
}
