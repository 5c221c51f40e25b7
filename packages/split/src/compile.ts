/** Compiles a snapshot into the services the datapath serves: for every service address (VIP, port,
 *  protocol), the weighted backends and their endpoints; and route status in the Gateway API's terms. */
import { isIPv4 } from 'node:net';

import {
  type BackendRef,
  type EndpointSlice,
  type HTTPRoute,
  type Kind,
  type ParentRef,
  SERVICE_NAME_LABEL,
  type Service,
  serviceIPs,
  type ServicePort,
} from './model.js';
import { namespaceOf } from './names.js';
import { every, runSteps, type Steps } from './steps.js';
import { type ByKind, KINDS, VALIDATED, type ValidatedSnapshot } from './validate.js';

export interface Endpoint {
  addr: string;
  port: number;
}

export interface CompiledBackend {
  /** "namespace/name:port" of the backend Service, for status and debugging. */
  ref: string;
  weight: number;
  /** Sorted, no duplicates. Empty: connections that pick this backend are refused. */
  endpoints: Endpoint[];
}

export interface CompiledService {
  /** "addr|port|proto": identifies the service address across snapshots. */
  key: string;
  addr: string;
  family: 4 | 6;
  port: number;
  proto: 'TCP' | 'UDP';
  /** "namespace/name" of the Service. */
  service: string;
  /** "namespace/name" of the HTTPRoute that splits it, if any. */
  route?: string;
  backends: CompiledBackend[];
}

export interface Condition {
  type: 'Accepted' | 'ResolvedRefs';
  status: 'True' | 'False';
  reason: string;
  message: string;
}

export interface RouteParentStatus {
  parentRef: ParentRef;
  conditions: Condition[];
}

export interface RouteStatus {
  /** "namespace/name" */
  route: string;
  parents: RouteParentStatus[];
}

export interface Compiled {
  services: CompiledService[];
  routes: RouteStatus[];
}

const serviceKey = (ns: string, name: string) => `${ns}/${name}`;
const keyOf = (m: { metadata: { name: string; namespace?: string } }) => serviceKey(namespaceOf(m.metadata), m.metadata.name);

/** Compiles a validated snapshot (validate()). Pure: no kernel involved. */
export function compile(snapshot: ValidatedSnapshot): Compiled {
  return new Compiler().compile(snapshot);
}

interface Entry {
  /** Keys of the Services its addresses were compiled from: its own (nearly always alone: the string, not a list
   *  of one), and its route's backends. */
  depKeys: string | string[];
  out: CompiledService[];
}

interface Claim {
  route: HTTPRoute;
  refs: BackendRef[];
}

const NONE: ByKind = { Service: [], EndpointSlice: [], HTTPRoute: [] };

/**
 * compile() for a stream of snapshots validated by one Validator, doing work in proportion to what changed
 * (which the Validator found): a route is evaluated again only when a Service it names or a route sharing its
 * parent changed; a Service whose inputs (itself, its route, its backends and their EndpointSlices) are the
 * same objects as before keeps its compiled addresses: the very objects, which ServiceTable.apply passes over
 * without comparing. The result equals compile()'s for every snapshot, given one rule: objects are values. A
 * changed object is a new object (as informers and the agent's file source deliver them); an object passed
 * once is never changed in place afterwards. A snapshot that does not follow the last one compiled (another
 * Validator's, or one skipped) is compiled from scratch.
 */
export class Compiler {
  /** Per HTTPRoute: its "namespace/name". */
  private readonly keys = new Map<object, string>();
  /** The Validation id of the snapshot the indexes hold; NaN while they are being changed. */
  private at: number | undefined;
  private readonly services = new Map<string, Service>();
  private readonly slices = new Map<string, EndpointSlice[]>();
  private readonly entries = new Map<Service, Entry>();
  /** Service key → the Services compiled from it: the one Service itself (nearly always), or a Set when several
   *  are (a route's backends). A Set of one per key was ~190 bytes per Service. */
  private readonly dependents = new Map<string, Service | Set<Service>>();
  /** Routes in precedence order; each one's status and the Service keys it names (parents, backends). */
  private sorted: HTTPRoute[] = [];
  private readonly routeInfo = new Map<HTTPRoute, { status: RouteStatus; parents: string[]; backends: string[] }>();
  /** Service key → the routes naming it. */
  private readonly routesByKey = new Map<string, Set<HTTPRoute>>();
  /** Parent Service key → port → the route that splits it. */
  private readonly claims = new Map<string, Map<number, Claim>>();
  private statuses: RouteStatus[] = [];

  compile(snapshot: ValidatedSnapshot): Compiled {
    return runSteps(this.steps(snapshot));
  }

  private keyOf(o: Service | HTTPRoute | EndpointSlice, kind: Kind): string {
    // Made again for Services and slices (a string, soon collected) rather than kept: a map of 100,000 objects
    // cost more to fill and look up than the strings. Routes are sorted by theirs: kept.
    if (kind === 'EndpointSlice') return serviceKey(namespaceOf(o.metadata), o.metadata.labels![SERVICE_NAME_LABEL]!);
    if (kind === 'Service') return keyOf(o);
    let k = this.keys.get(o);
    if (k === undefined) this.keys.set(o, (k = keyOf(o)));
    return k;
  }

  /** compile() in steps (see runStepsAsync). */
  *steps(snapshot: ValidatedSnapshot): Steps<Compiled> {
    const { id, added, removed, fresh } = this.changes(snapshot);
    // The Service keys whose objects changed. From scratch, none is needed: every route is new (evaluated) and no
    // Service was compiled before.
    const dirty = fresh ? undefined : new Set<string>();
    yield* this.indexServices(removed.Service as Service[], added.Service as Service[], dirty);
    yield* this.indexSlices(removed.EndpointSlice as EndpointSlice[], added.EndpointSlice as EndpointSlice[], dirty);
    const reclaimed = yield* this.route(snapshot.httpRoutes, dirty ?? new Set(), removed.HTTPRoute as HTTPRoute[], added.HTTPRoute as HTTPRoute[]);
    for (const o of removed.HTTPRoute) this.keys.delete(o);
    const services = yield* this.compileServices(snapshot.services, dirty ? [dirty, reclaimed] : undefined);
    this.at = id;
    return { services, routes: this.statuses };
  }

  /** What came and went since the snapshot compiled last: the Validator's finding when this one follows it,
   *  else everything (the indexes emptied). */
  private changes(snapshot: ValidatedSnapshot): { id: number; added: ByKind; removed: ByKind; fresh: boolean } {
    const v = snapshot?.[VALIDATED];
    if (!v) throw new TypeError('compile: the snapshot is not validated (compile what validate() or a Validator returns)');
    const follows = v.base === this.at;
    this.at = NaN;
    if (follows) return { ...v, fresh: false };
    this.reset();
    return { id: v.id, added: { Service: snapshot.services, EndpointSlice: snapshot.endpointSlices, HTTPRoute: snapshot.httpRoutes }, removed: NONE, fresh: true };
  }

  private reset(): void {
    for (const m of [this.keys, this.services, this.slices, this.entries, this.dependents, this.routeInfo, this.routesByKey, this.claims]) m.clear();
    this.sorted = [];
    this.statuses = [];
  }

  private *indexServices(removed: Service[], added: Service[], dirty: Set<string> | undefined): Steps<void> {
    const tick = every();
    for (const svc of removed) {
      if (tick()) yield;
      const k = this.keyOf(svc, 'Service');
      if (this.services.get(k) === svc) this.services.delete(k);
      this.forget(svc);
      dirty?.add(k);
    }
    for (const svc of added) {
      if (tick()) yield;
      const k = this.keyOf(svc, 'Service');
      this.services.set(k, svc);
      dirty?.add(k);
    }
  }

  private *indexSlices(removed: EndpointSlice[], added: EndpointSlice[], dirty: Set<string> | undefined): Steps<void> {
    const tick = every();
    for (const es of removed) {
      if (tick()) yield;
      const k = this.keyOf(es, 'EndpointSlice');
      const list = this.slices.get(k)!;
      list.splice(list.indexOf(es), 1);
      if (list.length === 0) this.slices.delete(k);
      dirty?.add(k);
    }
    for (const es of added) {
      if (tick()) yield;
      const k = this.keyOf(es, 'EndpointSlice');
      const list = this.slices.get(k);
      if (list) list.push(es);
      else this.slices.set(k, [es]);
      dirty?.add(k);
    }
  }

  /** Every Service, compiled again only when something it was compiled from changed (a key in `changed`);
   *  `changed` undefined: compiled from scratch (none was compiled before). */
  private *compileServices(services: readonly Service[], changed: Set<string>[] | undefined): Steps<CompiledService[]> {
    const tick = every();
    const stale = new Set<Service>();
    for (const keys of changed ?? []) {
      for (const k of keys) {
        if (tick()) yield;
        const d = this.dependents.get(k);
        if (d instanceof Set) for (const svc of d) stale.add(svc);
        else if (d) stale.add(d);
      }
    }
    const out: CompiledService[] = [];
    for (const svc of services) {
      if (tick()) yield;
      let e = changed ? this.entries.get(svc) : undefined;
      if (!e || stale.has(svc)) {
        if (changed) this.forget(svc);
        e = this.compileService(svc, this.keyOf(svc, 'Service'));
        this.entries.set(svc, e);
        if (typeof e.depKeys === 'string') this.depend(e.depKeys, svc);
        else for (const k of e.depKeys) this.depend(k, svc);
      }
      for (const c of e.out) out.push(c);
    }
    return out;
  }

  /** Drops a Service's compiled addresses and its place among its inputs' dependents. */
  private forget(svc: Service): void {
    const e = this.entries.get(svc);
    if (!e) return;
    this.entries.delete(svc);
    for (const k of typeof e.depKeys === 'string' ? [e.depKeys] : e.depKeys) {
      const d = this.dependents.get(k);
      if (d === svc) this.dependents.delete(k);
      else if (d instanceof Set) {
        d.delete(svc);
        if (d.size === 0) this.dependents.delete(k);
      }
    }
  }

  /** Records that `svc` was compiled from the Service of key `k`. */
  private depend(k: string, svc: Service): void {
    const d = this.dependents.get(k);
    if (d === undefined) this.dependents.set(k, svc);
    else if (d instanceof Set) d.add(svc);
    else if (d !== svc) this.dependents.set(k, new Set([d, svc]));
  }

  /** The endpoints of the Service of key `sk`, on one of its ports. */
  private endpointsFor(sk: string, port: ServicePort, family: 4 | 6): Endpoint[] {
    const want = family === 4 ? 'IPv4' : 'IPv6';
    const out = ENDPOINTS_SCRATCH;
    out.length = 0;
    for (const es of this.slices.get(sk) ?? []) {
      if (es.addressType !== want) continue;
      // EndpointSlice ports carry the Service port's name ("" when unnamed); without ports, a numeric
      // targetPort (or the port itself) is the endpoint port.
      let epPort: number | undefined;
      if (es.ports && es.ports.length) {
        for (const x of es.ports) {
          if ((x.name ?? '') === (port.name ?? '') && (x.protocol ?? 'TCP') === (port.protocol ?? 'TCP')) {
            epPort = x.port;
            break;
          }
        }
      } else {
        epPort = typeof port.targetPort === 'number' ? port.targetPort : port.targetPort === undefined ? port.port : undefined;
      }
      if (epPort === undefined) continue;
      for (const ep of es.endpoints) {
        if (ep.conditions?.ready === false) continue;
        out.push({ addr: ep.addresses[0]!, port: epPort });
      }
    }
    if (out.length < 2) return out.length ? [out[0]!] : [];
    // Sorted by address then port, each once (an address listed twice, or in two slices, is one endpoint).
    out.sort((a, b) => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : a.port - b.port));
    let n = 1;
    for (let i = 1; i < out.length; i++) {
      if (out[i]!.addr !== out[n - 1]!.addr || out[i]!.port !== out[n - 1]!.port) out[n++] = out[i]!;
    }
    return out.slice(0, n);
  }

  private resolve(ref: BackendRef, rns: string): { svc?: Service; key?: string; port?: ServicePort; error?: { reason: string; message: string } } {
    if ((ref.group ?? '') !== '' || (ref.kind ?? 'Service') !== 'Service') {
      return { error: { reason: 'InvalidKind', message: `backendRef ${ref.name}: kind ${ref.group ?? ''}/${ref.kind} is not supported` } };
    }
    if (ref.namespace !== undefined && ref.namespace !== rns) {
      return { error: { reason: 'RefNotPermitted', message: `backendRef ${ref.namespace}/${ref.name}: cross-namespace references need a ReferenceGrant, which is not supported` } };
    }
    const key = serviceKey(rns, ref.name);
    const svc = this.services.get(key);
    if (!svc) return { error: { reason: 'BackendNotFound', message: `backendRef ${ref.name}: Service ${rns}/${ref.name} does not exist` } };
    const port = svc.spec.ports.find((p) => p.port === ref.port);
    if (!port) return { error: { reason: 'BackendNotFound', message: `backendRef ${ref.name}: Service ${rns}/${ref.name} has no port ${ref.port}` } };
    return { svc, key, port };
  }

  /**
   * Evaluates again every route that names a changed Service, shares a parent with one that does, or came or
   * went, in precedence order; the others keep their status and claims (what they depend on is unchanged).
   * Returns the parent keys whose claims were made again.
   */
  private *route(httpRoutes: readonly HTTPRoute[], dirty: Set<string>, gone: HTTPRoute[], added: HTTPRoute[]): Steps<Set<string>> {
    const tick = every();
    for (const r of gone) {
      if (tick()) yield;
      this.indexRoute(r, false);
    }
    for (const r of added) {
      if (tick()) yield;
      const rns = namespaceOf(r.metadata);
      this.routeInfo.set(r, {
        status: { route: '', parents: [] },
        parents: (r.spec.parentRefs ?? []).map((p) => serviceKey(p.namespace ?? rns, p.name)),
        backends: (pickRule(r)?.backendRefs ?? []).map((b) => serviceKey(b.namespace ?? rns, b.name)),
      });
      this.indexRoute(r, true);
    }
    const { stale, parents } = yield* this.staleRoutes(dirty, gone, added);
    for (const r of gone) this.routeInfo.delete(r);
    if (stale.size === 0 && gone.length === 0) return parents;

    if (added.length || gone.length) {
      // Routes in Gateway API precedence: oldest first, then by namespace/name.
      this.sorted = [...httpRoutes].sort((a, b) => {
        const ta = a.metadata.creationTimestamp ?? '', tb = b.metadata.creationTimestamp ?? '';
        if (ta !== tb) return ta < tb ? -1 : 1;
        const ka = this.keyOf(a, 'HTTPRoute'), kb = this.keyOf(b, 'HTTPRoute');
        return ka < kb ? -1 : ka > kb ? 1 : 0;
      });
    }
    for (const pk of parents) this.claims.delete(pk);
    for (const route of this.sorted) {
      if (tick()) yield;
      if (!stale.has(route)) continue;
      const rns = namespaceOf(route.metadata);
      const rule = pickRule(route);
      const refs = rule?.backendRefs ?? [];
      // ResolvedRefs: the first backendRef that does not resolve names the reason.
      const unresolved = refs.map((r) => this.resolve(r, rns)).find((x) => x.error)?.error;
      const resolved: Condition = unresolved
        ? { type: 'ResolvedRefs', status: 'False', reason: unresolved.reason, message: unresolved.message }
        : { type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', message: 'all backendRefs resolve' };
      const statusParents = (route.spec.parentRefs ?? []).map((parentRef) => ({
        parentRef,
        conditions: [this.acceptParent(route, rule, parentRef), { ...resolved }],
      }));
      this.routeInfo.get(route)!.status = { route: this.keyOf(route, 'HTTPRoute'), parents: statusParents };
    }
    this.statuses = this.sorted.map((r) => this.routeInfo.get(r)!.status);
    return parents;
  }

  /** Adds a route to (or drops it from) the routes naming each Service key it names. */
  private indexRoute(r: HTTPRoute, add: boolean): void {
    const info = this.routeInfo.get(r)!;
    for (const k of [...info.parents, ...info.backends]) {
      const set = this.routesByKey.get(k);
      if (add) {
        if (set) set.add(r);
        else this.routesByKey.set(k, new Set([r]));
      } else {
        set?.delete(r);
        if (set?.size === 0) this.routesByKey.delete(k);
      }
    }
  }

  /** The routes to evaluate again and the parents whose claims are made again: those of routes that came,
   *  went or name a changed Service, and (transitively) those of every route sharing such a parent. */
  private *staleRoutes(dirty: Set<string>, gone: HTTPRoute[], added: HTTPRoute[]): Steps<{ stale: Set<HTTPRoute>; parents: Set<string> }> {
    const tick = every();
    const parents = new Set<string>();
    const todo: HTTPRoute[] = [...gone, ...added];
    for (const k of dirty) {
      if (tick()) yield;
      for (const r of this.routesByKey.get(k) ?? []) todo.push(r);
    }
    const goneSet = new Set(gone);
    const stale = new Set<HTTPRoute>();
    while (todo.length) {
      if (tick()) yield;
      const r = todo.pop()!;
      if (!goneSet.has(r)) {
        if (stale.has(r)) continue;
        stale.add(r);
      }
      for (const pk of this.routeInfo.get(r)!.parents) {
        if (parents.has(pk)) continue;
        parents.add(pk);
        for (const other of this.routesByKey.get(pk) ?? []) if (!stale.has(other)) todo.push(other);
      }
    }
    return { stale, parents };
  }

  /** A route's Accepted condition for one parentRef; claims the parent's ports no older route split. */
  private acceptParent(route: HTTPRoute, rule: Rule | undefined, parentRef: ParentRef): Condition {
    const accepted = (status: 'True' | 'False', reason: string, message: string): Condition => ({ type: 'Accepted', status, reason, message });
    const rns = namespaceOf(route.metadata);
    const isService = (parentRef.group ?? '') === '' && (parentRef.kind ?? 'Service') === 'Service';
    if (!isService) return accepted('False', 'NotAllowedByListeners', `parent kind ${parentRef.group ?? ''}/${parentRef.kind}: only Services (GAMMA) are served`);
    const parent = this.services.get(serviceKey(parentRef.namespace ?? rns, parentRef.name));
    if (!parent) return accepted('False', 'NoMatchingParent', `Service ${parentRef.namespace ?? rns}/${parentRef.name} does not exist`);
    const ports = parent.spec.ports.filter((p) => parentRef.port === undefined || p.port === parentRef.port);
    if (ports.length === 0) return accepted('False', 'NoMatchingParent', `Service ${parentRef.name} has no port ${parentRef.port}`);
    const pk = this.keyOf(parent, 'Service');
    const claimed = (port: number) => this.claims.get(pk)?.get(port);
    const refs = rule?.backendRefs ?? [];
    const taken = ports.filter((p) => claimed(p.port));
    for (const p of ports) {
      if (claimed(p.port)) continue;
      const byPort = this.claims.get(pk);
      if (byPort) byPort.set(p.port, { route, refs });
      else this.claims.set(pk, new Map([[p.port, { route, refs }]]));
    }
    if (taken.length === ports.length) {
      const other = claimed(taken[0]!.port)!.route;
      return accepted('False', 'UnsupportedValue', `Service ${parentRef.name} port ${taken.map((p) => p.port).join(', ')} is already split by the older HTTPRoute ${namespaceOf(other.metadata)}/${other.metadata.name}; per-connection splitting cannot merge routes`);
    }
    const total = refs.reduce((a, b) => a + (b.weight ?? 1), 0);
    const note = rule === undefined ? 'no rules: connections are refused'
      : total === 0 ? 'every backendRef has weight 0: connections are refused'
      : (route.spec.rules?.length ?? 0) > 1 ? `rule ${route.spec.rules!.indexOf(rule)} splits connections; rules that match on HTTP requests apply per request, not per connection, and are not served`
      : 'route splits connections by backendRef weight';
    return accepted('True', 'Accepted', note + (taken.length ? `; port ${taken.map((p) => p.port).join(', ')} is split by an older route` : ''));
  }

  private compileService(svc: Service, sk: string): Entry {
    let depKeys: string | string[] = sk;
    const claims = this.claims.get(sk);
    for (const port of svc.spec.ports) {
      const claim = claims?.get(port.port);
      if (!claim) continue;
      if (typeof depKeys === 'string') depKeys = [depKeys];
      for (const ref of claim.refs) depKeys.push(serviceKey(ref.namespace ?? namespaceOf(claim.route.metadata), ref.name));
    }
    const out = SERVICES_SCRATCH;
    out.length = 0;
    for (const addr of serviceIPs(svc)) {
      const family: 4 | 6 = isIPv4(addr) ? 4 : 6;
      for (const port of svc.spec.ports) {
        const proto = port.protocol ?? 'TCP';
        if (proto === 'SCTP') continue; // the socket hooks serve TCP and UDP
        const claim = claims?.get(port.port);
        const backends: CompiledBackend[] = claim
          ? claim.refs.map((ref) => {
              const r = this.resolve(ref, namespaceOf(claim.route.metadata));
              return {
                ref: `${namespaceOf(claim.route.metadata)}/${ref.name}:${ref.port}`,
                weight: ref.weight ?? 1,
                endpoints: r.key && r.port ? this.endpointsFor(r.key, r.port, family) : [],
              };
            })
          : [{ ref: [sk, port.port].join(':'), weight: 1, endpoints: this.endpointsFor(sk, port, family) }];
        // join() makes one flat string; a template literal a tree of cons strings (~100 bytes more per Service,
        // each copied by the young generation's collections, and flattened when the table hashes the key).
        const c: CompiledService = { key: [addr, port.port, proto].join('|'), addr, family, port: port.port, proto, service: sk, backends };
        if (claim) c.route = serviceKey(namespaceOf(claim.route.metadata), claim.route.metadata.name);
        out.push(c);
      }
    }
    return { depKeys, out: out.slice() };
  }
}

/** Where lists are gathered before the exact copy a Compiler keeps: a list grown by push() from empty holds
 *  room for 16 more (~130 bytes), and would be one more object for the young generation to collect. */
const SERVICES_SCRATCH: CompiledService[] = [];
const ENDPOINTS_SCRATCH: Endpoint[] = [];

/** The rule that splits connections: the one that matches every request (no matches, or PathPrefix "/"),
 *  else the first. */
type Rule = NonNullable<HTTPRoute['spec']['rules']>[number];

function pickRule(route: HTTPRoute): Rule | undefined {
  const rules = route.spec.rules ?? [];
  const catchAll = rules.find((r) => {
    const m = r.matches as { path?: { type?: string; value?: string }; headers?: unknown; queryParams?: unknown; method?: unknown }[] | undefined;
    return !m || m.length === 0 || m.some((x) => !x.headers && !x.queryParams && !x.method && (!x.path || (x.path.value ?? '/') === '/' && (x.path.type ?? 'PathPrefix') === 'PathPrefix'));
  });
  return catchAll ?? rules[0];
}
