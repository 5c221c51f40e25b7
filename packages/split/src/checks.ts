/** The checks of one object of each kind. They depend on the object alone (names and addresses that other
 *  objects hold are compared in validate.ts), so their findings can be cached per object. */
import { isIPv4, isIPv6 } from 'node:net';

import {
  type BackendRef,
  type EndpointSlice,
  type HTTPRoute,
  type Kind,
  MAX_BACKEND_REFS,
  MAX_WEIGHT,
  type ObjectMeta,
  SERVICE_NAME_LABEL,
  type Service,
  serviceIPs,
} from './model.js';
import { ipExpected, isDnsLabel, isInt, isIP, isPort, objectName, portExpected, qualifiedName } from './names.js';

/** What one object's checks found: a problem, or a fact that is a problem only beside other objects (a name
 *  seen twice, an address two Services claim). Depends on the object alone, so it can be cached per object. */
export type Finding = string | { unique: Kind; key: string; obj: string } | VipFinding;

/** A service address a Service claims; its field and text are made for a problem only (100,000 of these at scale
 *  are claimed without one). */
export class VipFinding {
  constructor(
    readonly vip: string,
    readonly obj: string,
    private readonly index: number,
    private readonly ip: string,
    private readonly port: number,
    private readonly proto: string,
  ) {}

  get field(): string {
    return portField(this.index);
  }

  get text(): string {
    return `${this.ip}:${this.port}/${this.proto}`;
  }
}

/** Findings of each object by identity, per kind it was checked as (an object moved to another kind's list is
 *  checked again), for one validation of a Validator (objects are never changed in place). Maps, not WeakMaps:
 *  a WeakMap of 100,000 objects makes each full garbage collection longer (its entries are resolved in the
 *  collector's final pause). */
export type CheckCache = Record<Kind, Map<object, Finding[]>>;

export const checkCache = (): CheckCache => ({ Service: new Map(), EndpointSlice: new Map(), HTTPRoute: new Map() });

/** Reports a problem with one field of the object being checked. */
type At = (field: string, msg: string) => void;

/** What a kind's check is given once the object's metadata passed: its name, its problem reporter and where its
 *  findings go. */
interface Checked {
  obj: string;
  at: At;
  out: Finding[];
}

const CHECKS: Record<Kind, (o: never, c: Checked) => void> = { Service: checkService, EndpointSlice: checkSlice, HTTPRoute: checkRoute };

/** An object's findings, from `cache` when it was checked before; kept in it unless `keep` is false (a pass that
 *  checks every object once needs no cache of its own). */
export function checkObject(kind: Kind, o: unknown, cache?: CheckCache, keep = true): readonly Finding[] {
  const byKind = cache?.[kind];
  const cacheable = byKind !== undefined && typeof o === 'object' && o !== null;
  let findings = cacheable && byKind.size ? byKind.get(o) : undefined;
  if (!findings) {
    // Not kept: the caller reads them before the next check, so one list serves every object.
    findings = keep ? [] : FINDINGS_SCRATCH;
    findings.length = 0;
    const checked = checkMeta(kind, o as never, findings);
    if (checked) CHECKS[kind](o as never, checked);
    if (cacheable && keep) byKind.set(o, findings);
  }
  return findings;
}

const FINDINGS_SCRATCH: Finding[] = [];

/** The metadata and kind checks every kind shares; what the kind's own check is given when the metadata passes
 *  (the rest of the object is checked only then). */
function checkMeta(kind: Kind, o: { kind?: unknown; metadata?: ObjectMeta }, out: Finding[]): Checked | undefined {
  const key = o?.metadata ? qualifiedName(o.metadata) : undefined;
  // objectName()'s text, its "namespace/name" made once.
  const obj = key === undefined ? objectName(kind, undefined) : `${kind} ${key}`;
  const at: At = (field, msg) => out.push(`${obj}: ${field}: ${msg}`);
  if (!o || typeof o !== 'object') return void out.push(`${kind}: not an object`);
  if (!o.metadata || !isDnsLabel(o.metadata.name) || o.metadata.name.length > 253) {
    return void at('metadata.name', 'must be a DNS name (lower-case letters, digits, -)');
  }
  if (o.metadata.namespace !== undefined && !isDnsLabel(o.metadata.namespace)) return void at('metadata.namespace', 'must be a DNS label');
  out.push({ unique: kind, key: key!, obj });
  if (o.kind !== kind) at('kind', `must be ${kind}, got ${JSON.stringify(o.kind)}`);
  return { obj, at, out };
}

/** Whether the object has a spec; a problem when it has none. */
function hasSpec(o: { spec?: unknown }, at: At): boolean {
  if (o.spec && typeof o.spec === 'object') return true;
  at('spec', 'is required');
  return false;
}

function checkService(svc: Service, { obj, at, out }: Checked): void {
  if (!hasSpec(svc, at)) return;
  const ips = serviceIPs(svc);
  checkServiceIPs(svc.spec, ips, at);
  checkServicePorts(svc.spec.ports, ips, obj, at, out);
}

function checkServiceIPs(spec: Service['spec'], ips: string[], at: At): void {
  if (spec.clusterIPs !== undefined && !Array.isArray(spec.clusterIPs)) at('spec.clusterIPs', 'must be a list of addresses');
  for (let i = 0; i < ips.length; i++) {
    const ip = ips[i];
    if (!isIP(ip)) at(spec.clusterIPs ? `spec.clusterIPs[${i}]` : 'spec.clusterIP', ipExpected(ip));
  }
  if (spec.clusterIP && spec.clusterIPs && spec.clusterIPs[0] !== spec.clusterIP) at('spec.clusterIPs[0]', 'must equal spec.clusterIP');
  if (ips.length === 2 && (isIPv4(ips[0]!) === isIPv4(ips[1]!))) at('spec.clusterIPs', 'two addresses must be one IPv4 and one IPv6');
  if (ips.length > 2) at('spec.clusterIPs', 'at most two addresses (one per family)');
}

/** Each port's fields, and the service addresses (address, protocol, port) the Service claims. */
function checkServicePorts(ports: Service['spec']['ports'], ips: string[], obj: string, at: At, out: Finding[]): void {
  if (!Array.isArray(ports) || ports.length === 0) return at('spec.ports', 'must list at least one port');
  const names = ports.length > 1 ? new Set<string>() : undefined;
  for (let i = 0; i < ports.length; i++) {
    const p = ports[i]!;
    if (!p || typeof p !== 'object') {
      at(portField(i), 'must be an object');
      continue;
    }
    if (!isPort(p.port)) at(`${portField(i)}.port`, portExpected(p.port));
    if (p.protocol !== undefined && !PROTOCOLS.includes(p.protocol)) at(`${portField(i)}.protocol`, `must be TCP, UDP or SCTP, got ${JSON.stringify(p.protocol)}`);
    const tp = p.targetPort;
    if (tp !== undefined && !isPort(tp) && !(typeof tp === 'string' && tp.length > 0)) {
      at(`${portField(i)}.targetPort`, `must be a port number in [1, 65535] or a port name, got ${JSON.stringify(tp)}`);
    }
    if (names && !p.name) at(`${portField(i)}.name`, 'is required when a Service has more than one port');
    if (p.name && names) {
      if (names.has(p.name)) at(`${portField(i)}.name`, `duplicate port name ${JSON.stringify(p.name)}`);
      names.add(p.name);
    }
    for (const ip of ips) {
      if (typeof ip !== 'string' || !isInt(p.port)) continue;
      const proto = p.protocol ?? 'TCP';
      // join(): one flat string, held as the address's key (a template literal's cons strings, hashed, keep a flat
      // copy beside them).
      out.push(new VipFinding([ip, proto, p.port].join('/'), obj, i, ip, p.port, proto));
    }
  }
}

/** A port's field, for its problems. */
const portField = (i: number) => `spec.ports[${i}]`;
const PROTOCOLS: readonly unknown[] = ['TCP', 'UDP', 'SCTP'];
const ADDRESS_TYPES: readonly unknown[] = ['IPv4', 'IPv6', 'FQDN'];

function checkSlice(es: EndpointSlice, { at }: Checked): void {
  if (!es.metadata.labels?.[SERVICE_NAME_LABEL]) at(`metadata.labels["${SERVICE_NAME_LABEL}"]`, 'names the Service and is required');
  if (!ADDRESS_TYPES.includes(es.addressType)) at('addressType', `must be IPv4, IPv6 or FQDN, got ${JSON.stringify(es.addressType)}`);
  if (!Array.isArray(es.endpoints)) return at('endpoints', 'must be a list');
  checkEndpoints(es, at);
  const ports = es.ports ?? [];
  for (let i = 0; i < ports.length; i++) {
    const p = ports[i]!;
    if (p.port !== undefined && !isPort(p.port)) at(`ports[${i}].port`, portExpected(p.port));
  }
}

function checkEndpoints(es: EndpointSlice, at: At): void {
  for (let i = 0; i < es.endpoints.length; i++) {
    const ep = es.endpoints[i];
    if (!ep || !Array.isArray(ep.addresses) || ep.addresses.length === 0) {
      at(`endpoints[${i}].addresses`, 'must list at least one address');
      continue;
    }
    for (let j = 0; j < ep.addresses.length; j++) {
      const a = ep.addresses[j];
      const ok = es.addressType === 'IPv4' ? isIPv4(a as string) : es.addressType === 'IPv6' ? isIPv6(a as string) : typeof a === 'string';
      if (!ok) at(`endpoints[${i}].addresses[${j}]`, `must be an ${es.addressType} address, got ${JSON.stringify(a)}`);
    }
  }
}

function checkRoute(r: HTTPRoute, { at }: Checked): void {
  if (!hasSpec(r, at)) return;
  checkParentRefs(r.spec.parentRefs, at);
  (r.spec.rules ?? []).forEach((rule, i) => checkBackendRefs(rule?.backendRefs ?? [], `spec.rules[${i}].backendRefs`, at));
}

function checkParentRefs(refs: HTTPRoute['spec']['parentRefs'], at: At): void {
  if (!Array.isArray(refs) || refs.length === 0) at('spec.parentRefs', 'must name at least one parent');
  (refs ?? []).forEach((p, i) => {
    if (!p || typeof p.name !== 'string' || !p.name) at(`spec.parentRefs[${i}].name`, 'is required');
    if (p?.port !== undefined && !isPort(p.port)) at(`spec.parentRefs[${i}].port`, portExpected(p.port));
  });
}

/** One rule's backendRefs, at `field`. */
function checkBackendRefs(refs: unknown, field: string, at: At): void {
  if (!Array.isArray(refs)) return at(field, 'must be a list');
  if (refs.length > MAX_BACKEND_REFS) at(field, `at most ${MAX_BACKEND_REFS} entries, got ${refs.length}`);
  (refs as BackendRef[]).forEach((b, j) => {
    const f = `${field}[${j}]`;
    if (!b || typeof b.name !== 'string' || !b.name) return at(`${f}.name`, 'is required');
    if (b.weight !== undefined && (!isInt(b.weight) || b.weight < 0 || b.weight > MAX_WEIGHT)) {
      at(`${f}.weight`, `must be an integer in [0, ${MAX_WEIGHT}], got ${JSON.stringify(b.weight)}`);
    }
    const isService = (b.group ?? '') === '' && (b.kind ?? 'Service') === 'Service';
    if (isService && b.port === undefined) at(`${f}.port`, 'is required when the backend is a Service');
    if (b.port !== undefined && !isPort(b.port)) at(`${f}.port`, portExpected(b.port));
  });
}
