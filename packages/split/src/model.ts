/** The routing objects, shaped like their Kubernetes kinds, and their validation. A snapshot that fails
 *  validation is rejected whole: SnapshotError names the object, the field (with indexes) and what was expected. */
import { isIPv4, isIPv6 } from 'node:net';

import { every, runSteps, type Steps } from './steps.js';

export interface ObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  /** RFC 3339; orders conflicting routes (the oldest wins), as the Gateway API prescribes. */
  creationTimestamp?: string;
}

export type Protocol = 'TCP' | 'UDP' | 'SCTP';

export interface ServicePort {
  name?: string;
  port: number;
  targetPort?: number | string;
  protocol?: Protocol;
}

/** core/v1 Service (the fields routing reads). */
export interface Service {
  apiVersion?: 'v1';
  kind: 'Service';
  metadata: ObjectMeta;
  spec: {
    clusterIP?: string;
    clusterIPs?: string[];
    ports: ServicePort[];
    selector?: Record<string, string>;
  };
}

/** discovery.k8s.io/v1 EndpointSlice. */
export interface EndpointSlice {
  apiVersion?: 'discovery.k8s.io/v1';
  kind: 'EndpointSlice';
  metadata: ObjectMeta;
  addressType: 'IPv4' | 'IPv6' | 'FQDN';
  endpoints: { addresses: string[]; conditions?: { ready?: boolean; serving?: boolean; terminating?: boolean } }[];
  ports?: { name?: string; port?: number; protocol?: Protocol }[];
}

export interface ParentRef {
  group?: string;
  kind?: string;
  name: string;
  namespace?: string;
  port?: number;
}

export interface BackendRef {
  group?: string;
  kind?: string;
  name: string;
  namespace?: string;
  port?: number;
  weight?: number;
}

/** gateway.networking.k8s.io/v1 HTTPRoute, attached to a Service (GAMMA). */
export interface HTTPRoute {
  apiVersion?: 'gateway.networking.k8s.io/v1';
  kind: 'HTTPRoute';
  metadata: ObjectMeta;
  spec: {
    parentRefs?: ParentRef[];
    rules?: { matches?: unknown[]; backendRefs?: BackendRef[] }[];
  };
}

export interface Snapshot {
  services: Service[];
  endpointSlices: EndpointSlice[];
  httpRoutes: HTTPRoute[];
}

/** The label that ties an EndpointSlice to its Service. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
/** Gateway API limits. */
export const MAX_WEIGHT = 1_000_000;
export const MAX_BACKEND_REFS = 16;

export class SnapshotError extends Error {
  /** Every problem found, each naming object and field. */
  readonly problems: string[];
  constructor(problems: string[]) {
    super(problems.length === 1 ? problems[0]! : `${problems.length} problems:\n  ${problems.join('\n  ')}`);
    this.name = 'SnapshotError';
    this.problems = problems;
  }
}

export function namespaceOf(m: ObjectMeta): string {
  return m.namespace ?? 'default';
}

export function objectName(kind: string, m: ObjectMeta | undefined): string {
  return `${kind} ${m ? `${namespaceOf(m)}/${m.name}` : '(no metadata)'}`;
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** What one object's checks found: a problem, or a fact that is a problem only beside other objects (a name
 *  seen twice, an address two Services claim). Depends on the object alone, so it can be cached per object. */
export type Finding = string | { unique: string; key: string; obj: string } | { vip: string; obj: string; field: string; text: string };

/** Findings of each object by identity: a Compiler keeps them across snapshots (objects are never changed in place)
 *  and drops those of objects gone. A Map, not a WeakMap: a WeakMap of 100,000 objects makes each full garbage
 *  collection longer (its entries are resolved in the collector's final pause). */
export type CheckCache = Map<object, Finding[]>;

export type Kind = 'Service' | 'EndpointSlice' | 'HTTPRoute';
const CHECKS: Record<Kind, (o: never) => Finding[]> = { Service: checkService, EndpointSlice: checkSlice, HTTPRoute: checkRoute };

/** An object's findings, from `cache` when it was checked before. */
export function checkObject(kind: Kind, o: unknown, cache?: CheckCache): Finding[] {
  const cacheable = cache !== undefined && typeof o === 'object' && o !== null;
  let findings = cacheable ? cache.get(o) : undefined;
  if (!findings) {
    findings = CHECKS[kind](o as never);
    if (cacheable) cache.set(o, findings);
  }
  return findings;
}

/** Checks every object and returns the problems (empty when the snapshot is valid). */
export function validateSnapshot(s: Snapshot): string[] {
  return runSteps(validateSteps(s));
}

/** validateSnapshot in steps; with `cache`, an object seen before is not checked again. */
export function* validateSteps(s: Snapshot, cache?: CheckCache): Steps<string[]> {
  if (!s || !Array.isArray(s.services) || !Array.isArray(s.endpointSlices) || !Array.isArray(s.httpRoutes)) {
    return ['snapshot: services, endpointSlices and httpRoutes must be arrays'];
  }
  const problems: string[] = [];
  const seen = new Map<string, Set<string>>();
  // VIP → the service that owns it, to report collisions with both names.
  const vips = new Map<string, string>();
  const tick = every();
  const kinds: [Kind, unknown[]][] = [['Service', s.services], ['EndpointSlice', s.endpointSlices], ['HTTPRoute', s.httpRoutes]];
  for (const [kind, list] of kinds) {
    for (const o of list) {
      if (tick()) yield;
      for (const f of checkObject(kind, o, cache)) {
        if (typeof f === 'string') problems.push(f);
        else if ('unique' in f) {
          const set = seen.get(f.unique) ?? new Set<string>();
          seen.set(f.unique, set);
          if (set.has(f.key)) problems.push(`${f.obj}: metadata.name: appears twice in the snapshot`);
          set.add(f.key);
        } else {
          const owner = vips.get(f.vip);
          if (owner && owner !== f.obj) problems.push(`${f.obj}: ${f.field}: ${f.text} is already the address of ${owner}`);
          vips.set(f.vip, f.obj);
        }
      }
    }
  }
  return problems;
}

/** The metadata checks every kind shares; the object's name for messages when they pass. */
function checkMeta(kind: string, o: { metadata?: ObjectMeta }, out: Finding[]): string | undefined {
  const obj = objectName(kind, o?.metadata);
  const at = (field: string, msg: string) => out.push(`${obj}: ${field}: ${msg}`);
  if (!o || typeof o !== 'object') return void out.push(`${kind}: not an object`);
  if (!o.metadata || typeof o.metadata.name !== 'string' || !DNS_LABEL.test(o.metadata.name) || o.metadata.name.length > 253) {
    return void at('metadata.name', 'must be a DNS name (lower-case letters, digits, -)');
  }
  if (o.metadata.namespace !== undefined && (typeof o.metadata.namespace !== 'string' || !DNS_LABEL.test(o.metadata.namespace))) {
    return void at('metadata.namespace', 'must be a DNS label');
  }
  out.push({ unique: kind, key: `${namespaceOf(o.metadata)}/${o.metadata.name}`, obj });
  return obj;
}

function checkService(svc: Service): Finding[] {
  const out: Finding[] = [];
  const obj = checkMeta('Service', svc, out);
  if (!obj) return out;
  const at = (field: string, msg: string) => out.push(`${obj}: ${field}: ${msg}`);
  if (svc.kind !== 'Service') at('kind', `must be Service, got ${JSON.stringify(svc.kind)}`);
  const spec = svc.spec;
  if (!spec || typeof spec !== 'object') {
    at('spec', 'is required');
    return out;
  }
  const ips = serviceIPs(svc);
  if (spec.clusterIPs !== undefined && !Array.isArray(spec.clusterIPs)) at('spec.clusterIPs', 'must be a list of addresses');
  ips.forEach((ip, i) => {
    const field = spec.clusterIPs ? `spec.clusterIPs[${i}]` : 'spec.clusterIP';
    if (typeof ip !== 'string' || (!isIPv4(ip) && !isIPv6(ip))) at(field, `must be an IPv4 or IPv6 address, got ${JSON.stringify(ip)}`);
  });
  if (spec.clusterIP && spec.clusterIPs && spec.clusterIPs[0] !== spec.clusterIP) {
    at('spec.clusterIPs[0]', 'must equal spec.clusterIP');
  }
  if (ips.length === 2 && (isIPv4(ips[0]!) === isIPv4(ips[1]!))) at('spec.clusterIPs', 'two addresses must be one IPv4 and one IPv6');
  if (ips.length > 2) at('spec.clusterIPs', 'at most two addresses (one per family)');
  if (!Array.isArray(spec.ports) || spec.ports.length === 0) {
    at('spec.ports', 'must list at least one port');
    return out;
  }
  const names = new Set<string>();
  spec.ports.forEach((p, i) => {
    const f = `spec.ports[${i}]`;
    if (!p || typeof p !== 'object') return void at(f, 'must be an object');
    if (!isInt(p.port) || p.port < 1 || p.port > 65535) at(`${f}.port`, `must be an integer in [1, 65535], got ${JSON.stringify(p.port)}`);
    if (p.protocol !== undefined && !['TCP', 'UDP', 'SCTP'].includes(p.protocol)) at(`${f}.protocol`, `must be TCP, UDP or SCTP, got ${JSON.stringify(p.protocol)}`);
    const tp = p.targetPort;
    if (tp !== undefined && !(isInt(tp) && tp >= 1 && tp <= 65535) && !(typeof tp === 'string' && tp.length > 0)) {
      at(`${f}.targetPort`, `must be a port number in [1, 65535] or a port name, got ${JSON.stringify(tp)}`);
    }
    if (spec.ports.length > 1 && !p.name) at(`${f}.name`, 'is required when a Service has more than one port');
    if (p.name) {
      if (names.has(p.name)) at(`${f}.name`, `duplicate port name ${JSON.stringify(p.name)}`);
      names.add(p.name);
    }
    for (const ip of ips) {
      if (typeof ip !== 'string' || !isInt(p.port)) continue;
      out.push({ vip: `${ip}/${p.protocol ?? 'TCP'}/${p.port}`, obj, field: f, text: `${ip}:${p.port}/${p.protocol ?? 'TCP'}` });
    }
  });
  return out;
}

function checkSlice(es: EndpointSlice): Finding[] {
  const out: Finding[] = [];
  const obj = checkMeta('EndpointSlice', es, out);
  if (!obj) return out;
  const at = (field: string, msg: string) => out.push(`${obj}: ${field}: ${msg}`);
  if (es.kind !== 'EndpointSlice') at('kind', `must be EndpointSlice, got ${JSON.stringify(es.kind)}`);
  if (!es.metadata.labels?.[SERVICE_NAME_LABEL]) at(`metadata.labels["${SERVICE_NAME_LABEL}"]`, 'names the Service and is required');
  if (!['IPv4', 'IPv6', 'FQDN'].includes(es.addressType)) at('addressType', `must be IPv4, IPv6 or FQDN, got ${JSON.stringify(es.addressType)}`);
  if (!Array.isArray(es.endpoints)) {
    at('endpoints', 'must be a list');
    return out;
  }
  es.endpoints.forEach((ep, i) => {
    if (!ep || !Array.isArray(ep.addresses) || ep.addresses.length === 0) return void at(`endpoints[${i}].addresses`, 'must list at least one address');
    ep.addresses.forEach((a, j) => {
      const ok = es.addressType === 'IPv4' ? isIPv4(a) : es.addressType === 'IPv6' ? isIPv6(a) : typeof a === 'string';
      if (!ok) at(`endpoints[${i}].addresses[${j}]`, `must be an ${es.addressType} address, got ${JSON.stringify(a)}`);
    });
  });
  (es.ports ?? []).forEach((p, i) => {
    if (p.port !== undefined && (!isInt(p.port) || p.port < 1 || p.port > 65535)) at(`ports[${i}].port`, `must be an integer in [1, 65535], got ${JSON.stringify(p.port)}`);
  });
  return out;
}

function checkRoute(r: HTTPRoute): Finding[] {
  const out: Finding[] = [];
  const obj = checkMeta('HTTPRoute', r, out);
  if (!obj) return out;
  const at = (field: string, msg: string) => out.push(`${obj}: ${field}: ${msg}`);
  if (r.kind !== 'HTTPRoute') at('kind', `must be HTTPRoute, got ${JSON.stringify(r.kind)}`);
  if (!r.spec || typeof r.spec !== 'object') {
    at('spec', 'is required');
    return out;
  }
  if (!Array.isArray(r.spec.parentRefs) || r.spec.parentRefs.length === 0) at('spec.parentRefs', 'must name at least one parent');
  (r.spec.parentRefs ?? []).forEach((p, i) => {
    if (!p || typeof p.name !== 'string' || !p.name) at(`spec.parentRefs[${i}].name`, 'is required');
    if (p?.port !== undefined && (!isInt(p.port) || p.port < 1 || p.port > 65535)) at(`spec.parentRefs[${i}].port`, `must be an integer in [1, 65535], got ${JSON.stringify(p.port)}`);
  });
  (r.spec.rules ?? []).forEach((rule, i) => {
    const refs = rule?.backendRefs ?? [];
    if (!Array.isArray(refs)) return void at(`spec.rules[${i}].backendRefs`, 'must be a list');
    if (refs.length > MAX_BACKEND_REFS) at(`spec.rules[${i}].backendRefs`, `at most ${MAX_BACKEND_REFS} entries, got ${refs.length}`);
    refs.forEach((b, j) => {
      const f = `spec.rules[${i}].backendRefs[${j}]`;
      if (!b || typeof b.name !== 'string' || !b.name) return void at(`${f}.name`, 'is required');
      if (b.weight !== undefined && (!isInt(b.weight) || b.weight < 0 || b.weight > MAX_WEIGHT)) {
        at(`${f}.weight`, `must be an integer in [0, ${MAX_WEIGHT}], got ${JSON.stringify(b.weight)}`);
      }
      const isService = (b.group ?? '') === '' && (b.kind ?? 'Service') === 'Service';
      if (isService && b.port === undefined) at(`${f}.port`, 'is required when the backend is a Service');
      if (b.port !== undefined && (!isInt(b.port) || b.port < 1 || b.port > 65535)) at(`${f}.port`, `must be an integer in [1, 65535], got ${JSON.stringify(b.port)}`);
    });
  });
  return out;
}

export function serviceIPs(svc: Service): string[] {
  const s = svc.spec;
  if (Array.isArray(s.clusterIPs) && s.clusterIPs.length) return s.clusterIPs;
  if (s.clusterIP && s.clusterIP !== 'None') return [s.clusterIP];
  return [];
}
