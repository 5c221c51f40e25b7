/** The routing objects, shaped like their Kubernetes kinds. A snapshot that fails validation (validate.ts) is
 *  rejected whole: SnapshotError names the object, the field (with indexes) and what was expected. */

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

export type Kind = 'Service' | 'EndpointSlice' | 'HTTPRoute';

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

export function serviceIPs(svc: Service): string[] {
  const s = svc.spec;
  if (Array.isArray(s.clusterIPs) && s.clusterIPs.length) return s.clusterIPs;
  if (s.clusterIP && s.clusterIP !== 'None') return [s.clusterIP];
  return [];
}
