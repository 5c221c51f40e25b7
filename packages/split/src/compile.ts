/** Compiles a snapshot into the services the datapath serves: for every service address (VIP, port,
 *  protocol), the weighted backends and their endpoints; and route status in the Gateway API's terms. */
import { isIPv4 } from 'node:net';

import {
  type BackendRef,
  type EndpointSlice,
  type HTTPRoute,
  namespaceOf,
  type ParentRef,
  SERVICE_NAME_LABEL,
  type Service,
  serviceIPs,
  type ServicePort,
  type Snapshot,
  SnapshotError,
  validateSnapshot,
  validateSteps,
  type CheckCache,
  checkObject,
  type Finding,
  type Kind,
} from './model.js';
import { every, runSteps, type Steps } from './steps.js';

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

/** Validates (SnapshotError on any problem) and compiles. Pure: no kernel involved. */
export function compile(snapshot: Snapshot): Compiled {
  return new Compiler().compile(snapshot);
}

interface Entry {
  /** Keys of the Services its addresses were compiled from: its own, and its route's backends. */
  depKeys: string[];
  out: CompiledService[];
}

interface Claim {
  route: HTTPRoute;
  refs: BackendRef[];
}

const KINDS: Kind[] = ['Service', 'EndpointSlice', 'HTTPRoute'];
const listOf = (s: Snapshot, kind: Kind): unknown[] => (kind === 'Service' ? s.services : kind === 'EndpointSlice' ? s.endpointSlices : s.httpRoutes);

/**
 * compile() for a stream of snapshots, doing work in proportion to what changed. Objects are told apart by
 * identity: an object seen before is not validated again (a new one's names and addresses are checked against
 * those the others hold); a route is evaluated again only when a Service it names or a route sharing its
 * parent changed; a Service whose inputs (itself, its route, its backends and their EndpointSlices) are the
 * same objects as before keeps its compiled addresses: the very objects, which ServiceTable.apply passes over
 * without comparing. The result equals compile()'s for every snapshot, given one rule: objects are values. A
 * changed object is a new object (as informers and the agent's file source deliver them); an object passed
 * once is never changed in place afterwards.
 */
export class Compiler {
  private readonly checks: CheckCache = new Map();
  /** Per object: a Service's "namespace/name", an EndpointSlice's Service's, an HTTPRoute's own. */
  private readonly keys = new Map<object, string>();
  /** The lists of the last snapshot compiled (copies), and its objects with their kinds. */
  private lists: Record<Kind, unknown[]> = { Service: [], EndpointSlice: [], HTTPRoute: [] };
  private last = new Map<object, Kind>();
  private readonly services = new Map<string, Service>();
  private readonly slices = new Map<string, EndpointSlice[]>();
  /** Who holds each name and address in the last snapshot (while `owned`): an object new in a snapshot is
   *  checked against these alone. */
  private readonly owners = new Map<string, unknown>();
  private owned = false;
  private readonly entries = new Map<Service, Entry>();
  /** Service key → the Services compiled from it. */
  private readonly dependents = new Map<string, Set<Service>>();
  /** Routes in precedence order; each one's status and the Service keys it names (parents, backends). */
  private sorted: HTTPRoute[] = [];
  private readonly routeInfo = new Map<HTTPRoute, { status: RouteStatus; parents: string[]; backends: string[] }>();
  /** Service key → the routes naming it. */
  private readonly routesByKey = new Map<string, Set<HTTPRoute>>();
  /** Parent Service key → port → the route that splits it. */
  private readonly claims = new Map<string, Map<number, Claim>>();
  private statuses: RouteStatus[] = [];

  compile(snapshot: Snapshot): Compiled {
    return runSteps(this.steps(snapshot));
  }

  private keyOf(o: Service | HTTPRoute | EndpointSlice, kind: Kind): string {
    let k = this.keys.get(o);
    if (k === undefined) {
      k = kind === 'EndpointSlice' ? serviceKey(namespaceOf(o.metadata), o.metadata.labels![SERVICE_NAME_LABEL]!) : keyOf(o);
      this.keys.set(o, k);
    }
    return k;
  }

  /** compile() in steps (see runStepsAsync). */
  *steps(snapshot: Snapshot): Steps<Compiled> {
    if (!snapshot || !Array.isArray(snapshot.services) || !Array.isArray(snapshot.endpointSlices) || !Array.isArray(snapshot.httpRoutes)) {
      throw new SnapshotError(validateSnapshot(snapshot));
    }
    const tick = every();

    // 1. What came and went since the last snapshot, by identity; undefined when that takes a full pass.
    const diff = yield* this.diff(snapshot);
    let added: [Kind, object][], removed: [Kind, object][];
    let next: Map<object, Kind> | undefined;
    let plain = true; // every entry an object, none twice
    if (diff) {
      ({ added, removed } = diff);
    } else {
      next = new Map();
      added = [];
      for (const kind of KINDS) {
        for (const o of listOf(snapshot, kind)) {
          if (tick()) yield;
          if (typeof o !== 'object' || o === null || next.has(o)) {
            plain = false;
            continue;
          }
          next.set(o, kind);
          if (this.last.get(o) !== kind) added.push([kind, o]);
        }
      }
      removed = [];
      for (const [o, kind] of this.last) {
        if (tick()) yield;
        if (next.get(o) !== kind) removed.push([kind, o]);
      }
    }

    // 2. Validation: only the new objects when the last snapshot was valid; every object otherwise (and to
    //    report problems in compile()'s order).
    if (!(this.owned && plain && (yield* this.claim(removed, added)))) {
      this.owned = false;
      this.owners.clear();
      const problems = yield* validateSteps(snapshot, this.checks);
      if (problems.length) throw new SnapshotError(problems);
      for (const kind of KINDS) {
        for (const o of listOf(snapshot, kind)) {
          if (tick()) yield;
          for (const f of checkObject(kind, o, this.checks)) if (typeof f !== 'string') this.owners.set(claimKey(f), f.obj);
        }
      }
      this.owned = true;
    }
    if (next) this.last = next;
    else {
      for (const [, o] of removed) this.last.delete(o);
      for (const [kind, o] of added) this.last.set(o, kind);
    }
    for (const [, o] of removed) {
      this.checks.delete(o);
      this.keys.delete(o);
    }
    // Objects of rejected snapshots were checked too: drop them now and then.
    if (this.checks.size > 2 * this.last.size + 1024) {
      for (const o of this.checks.keys()) if (!this.last.has(o)) this.checks.delete(o);
    }
    for (const kind of KINDS) this.lists[kind] = listOf(snapshot, kind).slice();

    // 3. The indexes, updated by the difference; the Service keys whose objects changed.
    const dirty = new Set<string>();
    const goneRoutes: HTTPRoute[] = [];
    const newRoutes: HTTPRoute[] = [];
    for (const [kind, o] of removed) {
      if (tick()) yield;
      if (kind === 'Service') {
        const k = this.keyOf(o as Service, kind);
        if (this.services.get(k) === o) this.services.delete(k);
        this.forget(o as Service);
        dirty.add(k);
      } else if (kind === 'EndpointSlice') {
        const k = this.keyOf(o as EndpointSlice, kind);
        const list = this.slices.get(k)!;
        list.splice(list.indexOf(o as EndpointSlice), 1);
        if (list.length === 0) this.slices.delete(k);
        dirty.add(k);
      } else goneRoutes.push(o as HTTPRoute);
    }
    for (const [kind, o] of added) {
      if (tick()) yield;
      if (kind === 'Service') {
        const k = this.keyOf(o as Service, kind);
        this.services.set(k, o as Service);
        dirty.add(k);
      } else if (kind === 'EndpointSlice') {
        const k = this.keyOf(o as EndpointSlice, kind);
        const list = this.slices.get(k);
        if (list) list.push(o as EndpointSlice);
        else this.slices.set(k, [o as EndpointSlice]);
        dirty.add(k);
      } else newRoutes.push(o as HTTPRoute);
    }

    // 4. Routes: which route splits each Service port, and route status.
    const reclaimed = yield* this.route(snapshot.httpRoutes, dirty, goneRoutes, newRoutes);

    // 5. Every Service, compiled again only when something it was compiled from changed.
    const stale = new Set<Service>();
    for (const keys of [dirty, reclaimed]) {
      for (const k of keys) {
        if (tick()) yield;
        for (const svc of this.dependents.get(k) ?? []) stale.add(svc);
      }
    }
    const out: CompiledService[] = [];
    for (const svc of snapshot.services) {
      if (tick()) yield;
      let e = this.entries.get(svc);
      if (!e || stale.has(svc)) {
        this.forget(svc);
        e = this.compileService(svc, this.keyOf(svc, 'Service'));
        this.entries.set(svc, e);
        for (const k of e.depKeys) {
          const set = this.dependents.get(k);
          if (set) set.add(svc);
          else this.dependents.set(k, new Set([svc]));
        }
      }
      for (const c of e.out) out.push(c);
    }
    return { services: out, routes: this.statuses };
  }

  /** The difference from the last snapshot when each list kept its head and tail and changed in one stretch
   *  between them (an edit, an addition, a removal); undefined otherwise. */
  private *diff(snapshot: Snapshot): Steps<{ added: [Kind, object][]; removed: [Kind, object][] } | undefined> {
    if (this.last.size === 0) return undefined;
    const tick = every();
    const added: [Kind, object][] = [];
    const removed: [Kind, object][] = [];
    for (const kind of KINDS) {
      const prev = this.lists[kind];
      const cur = listOf(snapshot, kind);
      let head = 0;
      while (head < prev.length && head < cur.length && prev[head] === cur[head]) head++;
      let tail = 0;
      while (tail < prev.length - head && tail < cur.length - head && prev[prev.length - 1 - tail] === cur[cur.length - 1 - tail]) tail++;
      const gone = new Set(prev.slice(head, prev.length - tail));
      const came = cur.slice(head, cur.length - tail);
      const cameSet = new Set(came);
      if (cameSet.size !== came.length) return undefined; // twice in the stretch
      for (const o of came) {
        if (tick()) yield;
        if (typeof o !== 'object' || o === null) return undefined;
        if (gone.has(o)) continue; // moved within the stretch
        if (this.last.has(o)) return undefined; // also outside the stretch (twice), or in another list
        added.push([kind, o]);
      }
      for (const o of gone) if (!cameSet.has(o)) removed.push([kind, o as object]);
    }
    return { added, removed };
  }

  /** Drops a Service's compiled addresses and its place among its inputs' dependents. */
  private forget(svc: Service): void {
    const e = this.entries.get(svc);
    if (!e) return;
    this.entries.delete(svc);
    for (const k of e.depKeys) {
      const set = this.dependents.get(k);
      set?.delete(svc);
      if (set?.size === 0) this.dependents.delete(k);
    }
  }

  /** Claims the names and addresses of new objects (the gone ones' released first); false when an object has
   *  a problem of its own or claims what another holds. */
  private *claim(removed: [Kind, object][], added: [Kind, object][]): Steps<boolean> {
    const tick = every();
    for (const [kind, o] of removed) {
      if (tick()) yield;
      for (const f of checkObject(kind, o, this.checks)) {
        if (typeof f !== 'string' && this.owners.get(claimKey(f)) === f.obj) this.owners.delete(claimKey(f));
      }
    }
    for (const [kind, o] of added) {
      if (tick()) yield;
      for (const f of checkObject(kind, o, this.checks)) {
        if (typeof f === 'string') return false;
        const k = claimKey(f);
        const owner = this.owners.get(k);
        // Two objects of one name share their display name: a name is held at most once, an address by one Service.
        if (owner !== undefined && ('unique' in f || owner !== f.obj)) return false;
        this.owners.set(k, f.obj);
      }
    }
    return true;
  }

  private endpointsFor(svc: Service, port: ServicePort, family: 4 | 6): Endpoint[] {
    const want = family === 4 ? 'IPv4' : 'IPv6';
    const out = new Map<string, Endpoint>();
    for (const es of this.slices.get(this.keyOf(svc, 'Service')) ?? []) {
      if (es.addressType !== want) continue;
      // EndpointSlice ports carry the Service port's name ("" when unnamed); without ports, a numeric
      // targetPort (or the port itself) is the endpoint port.
      let epPort: number | undefined;
      if (es.ports && es.ports.length) {
        const p = es.ports.find((x) => (x.name ?? '') === (port.name ?? '') && (x.protocol ?? 'TCP') === (port.protocol ?? 'TCP'));
        epPort = p?.port;
      } else {
        epPort = typeof port.targetPort === 'number' ? port.targetPort : port.targetPort === undefined ? port.port : undefined;
      }
      if (epPort === undefined) continue;
      for (const ep of es.endpoints) {
        if (ep.conditions?.ready === false) continue;
        const addr = ep.addresses[0]!;
        out.set(`${addr}|${epPort}`, { addr, port: epPort });
      }
    }
    return [...out.values()].sort((a, b) => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : a.port - b.port));
  }

  private resolve(ref: BackendRef, rns: string): { svc?: Service; port?: ServicePort; error?: { reason: string; message: string } } {
    if ((ref.group ?? '') !== '' || (ref.kind ?? 'Service') !== 'Service') {
      return { error: { reason: 'InvalidKind', message: `backendRef ${ref.name}: kind ${ref.group ?? ''}/${ref.kind} is not supported` } };
    }
    if (ref.namespace !== undefined && ref.namespace !== rns) {
      return { error: { reason: 'RefNotPermitted', message: `backendRef ${ref.namespace}/${ref.name}: cross-namespace references need a ReferenceGrant, which is not supported` } };
    }
    const svc = this.services.get(serviceKey(rns, ref.name));
    if (!svc) return { error: { reason: 'BackendNotFound', message: `backendRef ${ref.name}: Service ${rns}/${ref.name} does not exist` } };
    const port = svc.spec.ports.find((p) => p.port === ref.port);
    if (!port) return { error: { reason: 'BackendNotFound', message: `backendRef ${ref.name}: Service ${rns}/${ref.name} has no port ${ref.port}` } };
    return { svc, port };
  }

  /**
   * Evaluates again every route that names a changed Service, shares a parent with one that does, or came or
   * went, in precedence order; the others keep their status and claims (what they depend on is unchanged).
   * Returns the parent keys whose claims were made again.
   */
  private *route(httpRoutes: HTTPRoute[], dirty: Set<string>, gone: HTTPRoute[], added: HTTPRoute[]): Steps<Set<string>> {
    const tick = every();
    const index = (r: HTTPRoute, add: boolean) => {
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
    };
    // Parents whose claims are made again: those of routes that came, went or name a changed Service, and
    // (transitively) those of every route sharing such a parent.
    const parents = new Set<string>();
    const todo: HTTPRoute[] = [...gone];
    for (const r of gone) index(r, false);
    for (const r of added) {
      const rns = namespaceOf(r.metadata);
      const rule = pickRule(r);
      this.routeInfo.set(r, {
        status: { route: '', parents: [] },
        parents: (r.spec.parentRefs ?? []).map((p) => serviceKey(p.namespace ?? rns, p.name)),
        backends: (rule?.backendRefs ?? []).map((b) => serviceKey(b.namespace ?? rns, b.name)),
      });
      index(r, true);
      todo.push(r);
    }
    for (const k of dirty) for (const r of this.routesByKey.get(k) ?? []) todo.push(r);
    const goneSet = new Set(gone);
    const stale = new Set<HTTPRoute>();
    while (todo.length) {
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
    const claimed = (pk: string, port: number) => this.claims.get(pk)?.get(port);
    for (const route of this.sorted) {
      if (tick()) yield;
      if (!stale.has(route)) continue;
      const rns = namespaceOf(route.metadata);
      const rname = this.keyOf(route, 'HTTPRoute');
      const rule = pickRule(route);
      const refs = rule?.backendRefs ?? [];
      const statusParents: RouteParentStatus[] = [];
      for (const parentRef of route.spec.parentRefs ?? []) {
        const conditions: Condition[] = [];
        const accepted = (status: 'True' | 'False', reason: string, message: string) =>
          conditions.push({ type: 'Accepted', status, reason, message });
        const isService = (parentRef.group ?? '') === '' && (parentRef.kind ?? 'Service') === 'Service';
        const parent = this.services.get(serviceKey(parentRef.namespace ?? rns, parentRef.name));
        if (!isService) {
          accepted('False', 'NotAllowedByListeners', `parent kind ${parentRef.group ?? ''}/${parentRef.kind}: only Services (GAMMA) are served`);
        } else if (!parent) {
          accepted('False', 'NoMatchingParent', `Service ${parentRef.namespace ?? rns}/${parentRef.name} does not exist`);
        } else {
          const ports = parent.spec.ports.filter((p) => parentRef.port === undefined || p.port === parentRef.port);
          if (ports.length === 0) {
            accepted('False', 'NoMatchingParent', `Service ${parentRef.name} has no port ${parentRef.port}`);
          } else {
            const pk = this.keyOf(parent, 'Service');
            const taken = ports.filter((p) => claimed(pk, p.port));
            for (const p of ports) {
              if (claimed(pk, p.port)) continue;
              const byPort = this.claims.get(pk);
              if (byPort) byPort.set(p.port, { route, refs });
              else this.claims.set(pk, new Map([[p.port, { route, refs }]]));
            }
            if (taken.length === ports.length) {
              const other = claimed(pk, taken[0]!.port)!.route;
              accepted('False', 'UnsupportedValue', `Service ${parentRef.name} port ${taken.map((p) => p.port).join(', ')} is already split by the older HTTPRoute ${namespaceOf(other.metadata)}/${other.metadata.name}; per-connection splitting cannot merge routes`);
            } else {
              const total = refs.reduce((a, b) => a + (b.weight ?? 1), 0);
              const note = rule === undefined ? 'no rules: connections are refused'
                : total === 0 ? 'every backendRef has weight 0: connections are refused'
                : (route.spec.rules?.length ?? 0) > 1 ? `rule ${route.spec.rules!.indexOf(rule)} splits connections; rules that match on HTTP requests apply per request, not per connection, and are not served`
                : 'route splits connections by backendRef weight';
              accepted('True', 'Accepted', note + (taken.length ? `; port ${taken.map((p) => p.port).join(', ')} is split by an older route` : ''));
            }
          }
        }
        // ResolvedRefs: the first backendRef that does not resolve names the reason.
        const unresolved = refs.map((r) => this.resolve(r, rns)).find((x) => x.error);
        conditions.push(unresolved?.error
          ? { type: 'ResolvedRefs', status: 'False', reason: unresolved.error.reason, message: unresolved.error.message }
          : { type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', message: 'all backendRefs resolve' });
        statusParents.push({ parentRef, conditions });
      }
      this.routeInfo.get(route)!.status = { route: rname, parents: statusParents };
    }
    this.statuses = this.sorted.map((r) => this.routeInfo.get(r)!.status);
    return parents;
  }

  private compileService(svc: Service, sk: string): Entry {
    const depKeys = [sk];
    const claims = this.claims.get(sk);
    for (const port of svc.spec.ports) {
      const claim = claims?.get(port.port);
      if (claim) for (const ref of claim.refs) depKeys.push(serviceKey(ref.namespace ?? namespaceOf(claim.route.metadata), ref.name));
    }
    const out: CompiledService[] = [];
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
                endpoints: r.svc && r.port ? this.endpointsFor(r.svc, r.port, family) : [],
              };
            })
          : [{ ref: `${sk}:${port.port}`, weight: 1, endpoints: this.endpointsFor(svc, port, family) }];
        out.push({
          key: `${addr}|${port.port}|${proto}`,
          addr,
          family,
          port: port.port,
          proto,
          service: sk,
          ...(claim ? { route: serviceKey(namespaceOf(claim.route.metadata), claim.route.metadata.name) } : {}),
          backends,
        });
      }
    }
    return { depKeys, out };
  }
}

/** What two objects may not share: a name within a kind, or a service address. */
function claimKey(f: Exclude<Finding, string>): string {
  return 'unique' in f ? `${f.unique} ${f.key}` : `address ${f.vip}`;
}

/** The rule that splits connections: the one that matches every request (no matches, or PathPrefix "/"),
 *  else the first. */
function pickRule(route: HTTPRoute) {
  const rules = route.spec.rules ?? [];
  const catchAll = rules.find((r) => {
    const m = r.matches as { path?: { type?: string; value?: string }; headers?: unknown; queryParams?: unknown; method?: unknown }[] | undefined;
    return !m || m.length === 0 || m.some((x) => !x.headers && !x.queryParams && !x.method && (!x.path || (x.path.value ?? '/') === '/' && (x.path.type ?? 'PathPrefix') === 'PathPrefix'));
  });
  return catchAll ?? rules[0];
}
