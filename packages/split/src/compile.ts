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
} from './model.js';

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

/** Validates (SnapshotError on any problem) and compiles. Pure: no kernel involved. */
export function compile(snapshot: Snapshot): Compiled {
  const problems = validateSnapshot(snapshot);
  if (problems.length) throw new SnapshotError(problems);

  const services = new Map<string, Service>();
  for (const s of snapshot.services) services.set(serviceKey(namespaceOf(s.metadata), s.metadata.name), s);
  const slices = new Map<string, EndpointSlice[]>();
  for (const es of snapshot.endpointSlices) {
    const k = serviceKey(namespaceOf(es.metadata), es.metadata.labels![SERVICE_NAME_LABEL]!);
    slices.set(k, [...(slices.get(k) ?? []), es]);
  }

  const endpointsFor = (svc: Service, port: ServicePort, family: 4 | 6): Endpoint[] => {
    const want = family === 4 ? 'IPv4' : 'IPv6';
    const out = new Map<string, Endpoint>();
    for (const es of slices.get(serviceKey(namespaceOf(svc.metadata), svc.metadata.name)) ?? []) {
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
  };

  // Routes in Gateway API precedence: oldest first, then by namespace/name.
  const routes = [...snapshot.httpRoutes].sort((a, b) => {
    const ta = a.metadata.creationTimestamp ?? '', tb = b.metadata.creationTimestamp ?? '';
    if (ta !== tb) return ta < tb ? -1 : 1;
    const ka = serviceKey(namespaceOf(a.metadata), a.metadata.name), kb = serviceKey(namespaceOf(b.metadata), b.metadata.name);
    return ka < kb ? -1 : ka > kb ? 1 : 0;
  });

  // (service key, port) → the route that splits it.
  const claims = new Map<string, { route: HTTPRoute; refs: BackendRef[] }>();
  const statuses: RouteStatus[] = [];
  for (const route of routes) {
    const rns = namespaceOf(route.metadata);
    const rname = serviceKey(rns, route.metadata.name);
    const rule = pickRule(route);
    const refs = rule?.backendRefs ?? [];
    const parents: RouteParentStatus[] = [];
    for (const parentRef of route.spec.parentRefs ?? []) {
      const conditions: Condition[] = [];
      const accepted = (status: 'True' | 'False', reason: string, message: string) =>
        conditions.push({ type: 'Accepted', status, reason, message });
      const isService = (parentRef.group ?? '') === '' && (parentRef.kind ?? 'Service') === 'Service';
      const parent = services.get(serviceKey(parentRef.namespace ?? rns, parentRef.name));
      if (!isService) {
        accepted('False', 'NotAllowedByListeners', `parent kind ${parentRef.group ?? ''}/${parentRef.kind}: only Services (GAMMA) are served`);
      } else if (!parent) {
        accepted('False', 'NoMatchingParent', `Service ${parentRef.namespace ?? rns}/${parentRef.name} does not exist`);
      } else {
        const ports = parent.spec.ports.filter((p) => parentRef.port === undefined || p.port === parentRef.port);
        if (ports.length === 0) {
          accepted('False', 'NoMatchingParent', `Service ${parentRef.name} has no port ${parentRef.port}`);
        } else {
          const pk = serviceKey(namespaceOf(parent.metadata), parent.metadata.name);
          const taken = ports.filter((p) => claims.has(`${pk}:${p.port}`));
          for (const p of ports) if (!claims.has(`${pk}:${p.port}`)) claims.set(`${pk}:${p.port}`, { route, refs });
          if (taken.length === ports.length) {
            const other = claims.get(`${pk}:${taken[0]!.port}`)!.route;
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
      const unresolved = refs.map((r) => resolve(r, rns)).find((x) => x.error);
      conditions.push(unresolved?.error
        ? { type: 'ResolvedRefs', status: 'False', reason: unresolved.error.reason, message: unresolved.error.message }
        : { type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', message: 'all backendRefs resolve' });
      parents.push({ parentRef, conditions });
    }
    statuses.push({ route: rname, parents });
  }

  function resolve(ref: BackendRef, rns: string): { svc?: Service; port?: ServicePort; error?: { reason: string; message: string } } {
    if ((ref.group ?? '') !== '' || (ref.kind ?? 'Service') !== 'Service') {
      return { error: { reason: 'InvalidKind', message: `backendRef ${ref.name}: kind ${ref.group ?? ''}/${ref.kind} is not supported` } };
    }
    if (ref.namespace !== undefined && ref.namespace !== rns) {
      return { error: { reason: 'RefNotPermitted', message: `backendRef ${ref.namespace}/${ref.name}: cross-namespace references need a ReferenceGrant, which is not supported` } };
    }
    const svc = services.get(serviceKey(rns, ref.name));
    if (!svc) return { error: { reason: 'BackendNotFound', message: `backendRef ${ref.name}: Service ${rns}/${ref.name} does not exist` } };
    const port = svc.spec.ports.find((p) => p.port === ref.port);
    if (!port) return { error: { reason: 'BackendNotFound', message: `backendRef ${ref.name}: Service ${rns}/${ref.name} has no port ${ref.port}` } };
    return { svc, port };
  }

  const out: CompiledService[] = [];
  for (const svc of snapshot.services) {
    const ns = namespaceOf(svc.metadata);
    const sk = serviceKey(ns, svc.metadata.name);
    for (const addr of serviceIPs(svc)) {
      const family: 4 | 6 = isIPv4(addr) ? 4 : 6;
      for (const port of svc.spec.ports) {
        const proto = port.protocol ?? 'TCP';
        if (proto === 'SCTP') continue; // the socket hooks serve TCP and UDP
        const claim = claims.get(`${sk}:${port.port}`);
        const backends: CompiledBackend[] = claim
          ? claim.refs.map((ref) => {
              const r = resolve(ref, namespaceOf(claim.route.metadata));
              return {
                ref: `${namespaceOf(claim.route.metadata)}/${ref.name}:${ref.port}`,
                weight: ref.weight ?? 1,
                endpoints: r.svc && r.port ? endpointsFor(r.svc, r.port, family) : [],
              };
            })
          : [{ ref: `${sk}:${port.port}`, weight: 1, endpoints: endpointsFor(svc, port, family) }];
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
  }
  return { services: out, routes: statuses };
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
