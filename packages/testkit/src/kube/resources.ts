// The resource types the test API server serves: where each lives, what its objects look like to the
// selectors and patches, and the object shape itself.

export interface ResourceType {
  /** '' for the core group. */
  group: string;
  version: string;
  /** URL segment, e.g. 'services'. */
  plural: string;
  singular: string;
  kind: string;
  namespaced: boolean;
  shortNames?: string[];
  /** Custom resources: list items carry kind/apiVersion, strategic merge patch is refused. */
  custom: boolean;
  /**
   * A status subresource: over HTTP, writes to the object keep its status and `/status` writes change only
   * the status (the programmatic KubeApiServer methods write both, as the kubelet and controllers would).
   */
  status: boolean;
  /** Field selector labels accepted besides metadata.name and metadata.namespace. */
  fields?: Record<string, (obj: KubeObject) => string | undefined>;
  /** Strategic merge patch keys: dotted path (list indexes dropped) → the key list elements merge on. */
  mergeKeys?: Record<string, string>;
  /** Dotted paths of lists of scalars that strategic merge patch merges instead of replacing. */
  mergeScalarLists?: string[];
}

/** An object as stored and served: plain JSON. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  [field: string]: unknown;
}

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [field: string]: unknown;
}

export const VERBS = ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'] as const;

/** A field selector label read from spec or status; absent reads as '' (what the apiserver's field sets hold). */
const field = (part: 'spec' | 'status', key: string) => (obj: KubeObject): string => {
  const v = (obj[part] as Record<string, unknown> | undefined)?.[key];
  return typeof v === 'string' ? v : '';
};

const META_MERGE_KEYS = { 'metadata.ownerReferences': 'uid' };
const META_SCALAR_LISTS = ['metadata.finalizers'];

export const RESOURCES: readonly ResourceType[] = [
  {
    group: '', version: 'v1', plural: 'namespaces', singular: 'namespace', kind: 'Namespace', namespaced: false,
    shortNames: ['ns'], custom: false, status: true, fields: { 'status.phase': field('status', 'phase') },
    mergeKeys: META_MERGE_KEYS, mergeScalarLists: [...META_SCALAR_LISTS, 'spec.finalizers'],
  },
  {
    group: '', version: 'v1', plural: 'services', singular: 'service', kind: 'Service', namespaced: true,
    shortNames: ['svc'], custom: false, status: true,
    mergeKeys: { ...META_MERGE_KEYS, 'spec.ports': 'port' }, mergeScalarLists: META_SCALAR_LISTS,
  },
  {
    group: '', version: 'v1', plural: 'pods', singular: 'pod', kind: 'Pod', namespaced: true, shortNames: ['po'], custom: false, status: true,
    fields: {
      'spec.nodeName': field('spec', 'nodeName'),
      'spec.serviceAccountName': field('spec', 'serviceAccountName'),
      'status.phase': field('status', 'phase'),
      'status.podIP': field('status', 'podIP'),
    },
    mergeKeys: {
      ...META_MERGE_KEYS,
      'spec.containers': 'name', 'spec.initContainers': 'name', 'spec.volumes': 'name',
      'spec.containers.ports': 'containerPort', 'spec.containers.env': 'name', 'spec.containers.volumeMounts': 'mountPath',
      'status.conditions': 'type', 'status.podIPs': 'ip', 'status.containerStatuses': 'name',
    },
    mergeScalarLists: META_SCALAR_LISTS,
  },
  {
    group: 'discovery.k8s.io', version: 'v1', plural: 'endpointslices', singular: 'endpointslice', kind: 'EndpointSlice',
    namespaced: true, custom: false, status: false, fields: { addressType: (o) => (typeof o.addressType === 'string' ? o.addressType : '') },
    mergeKeys: META_MERGE_KEYS, mergeScalarLists: META_SCALAR_LISTS,
  },
  { group: 'gateway.networking.k8s.io', version: 'v1', plural: 'httproutes', singular: 'httproute', kind: 'HTTPRoute', namespaced: true, custom: true, status: true },
  {
    group: 'security.istio.io', version: 'v1', plural: 'peerauthentications', singular: 'peerauthentication',
    kind: 'PeerAuthentication', namespaced: true, shortNames: ['pa'], custom: true, status: true,
  },
  {
    group: 'security.istio.io', version: 'v1', plural: 'authorizationpolicies', singular: 'authorizationpolicy',
    kind: 'AuthorizationPolicy', namespaced: true, shortNames: ['ap'], custom: true, status: true,
  },
];

export function groupVersion(r: Pick<ResourceType, 'group' | 'version'>): string {
  return r.group === '' ? r.version : `${r.group}/${r.version}`;
}

/** The resource served at `<group>/<version>/<plural>`, or undefined. */
export function findResource(group: string, version: string, plural: string): ResourceType | undefined {
  return RESOURCES.find((r) => r.group === group && r.version === version && r.plural === plural);
}

/** The collection path of a resource, in a namespace when given. */
export function collectionPath(r: ResourceType, namespace?: string): string {
  const base = r.group === '' ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`;
  return namespace !== undefined && r.namespaced ? `${base}/namespaces/${namespace}/${r.plural}` : `${base}/${r.plural}`;
}
