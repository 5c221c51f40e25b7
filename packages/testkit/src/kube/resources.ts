// The resource types the test API server serves, and the discovery documents clients read to map a kind to
// a URL (kubectl's RESTMapper, client-go's discovery): /api, /api/v1, /apis, /apis/<group>[/<version>].

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

const podField = (get: (spec: Record<string, unknown>, status: Record<string, unknown>) => unknown) =>
  (obj: KubeObject): string | undefined => {
    const v = get((obj.spec ?? {}) as Record<string, unknown>, (obj.status ?? {}) as Record<string, unknown>);
    return typeof v === 'string' ? v : undefined;
  };

const META_MERGE_KEYS = { 'metadata.ownerReferences': 'uid' };
const META_SCALAR_LISTS = ['metadata.finalizers'];

export const RESOURCES: readonly ResourceType[] = [
  {
    group: '', version: 'v1', plural: 'namespaces', singular: 'namespace', kind: 'Namespace', namespaced: false,
    shortNames: ['ns'], custom: false, fields: { 'status.phase': podField((_, st) => st.phase) },
    mergeKeys: META_MERGE_KEYS, mergeScalarLists: [...META_SCALAR_LISTS, 'spec.finalizers'],
  },
  {
    group: '', version: 'v1', plural: 'services', singular: 'service', kind: 'Service', namespaced: true,
    shortNames: ['svc'], custom: false,
    mergeKeys: { ...META_MERGE_KEYS, 'spec.ports': 'port' }, mergeScalarLists: META_SCALAR_LISTS,
  },
  {
    group: '', version: 'v1', plural: 'pods', singular: 'pod', kind: 'Pod', namespaced: true, shortNames: ['po'], custom: false,
    fields: {
      'spec.nodeName': podField((sp) => sp.nodeName ?? ''),
      'spec.serviceAccountName': podField((sp) => sp.serviceAccountName ?? ''),
      'status.phase': podField((_, st) => st.phase ?? ''),
      'status.podIP': podField((_, st) => st.podIP ?? ''),
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
    namespaced: true, custom: false, fields: { addressType: (o) => (typeof o.addressType === 'string' ? o.addressType : undefined) },
    mergeKeys: META_MERGE_KEYS, mergeScalarLists: META_SCALAR_LISTS,
  },
  { group: 'gateway.networking.k8s.io', version: 'v1', plural: 'httproutes', singular: 'httproute', kind: 'HTTPRoute', namespaced: true, custom: true },
  {
    group: 'security.istio.io', version: 'v1', plural: 'peerauthentications', singular: 'peerauthentication',
    kind: 'PeerAuthentication', namespaced: true, shortNames: ['pa'], custom: true,
  },
  {
    group: 'security.istio.io', version: 'v1', plural: 'authorizationpolicies', singular: 'authorizationpolicy',
    kind: 'AuthorizationPolicy', namespaced: true, shortNames: ['ap'], custom: true,
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

export function groupVersions(): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const r of RESOURCES) {
    if (r.group === '') continue;
    const versions = groups.get(r.group) ?? [];
    if (!versions.includes(r.version)) versions.push(r.version);
    groups.set(r.group, versions);
  }
  return groups;
}

// Discovery documents, shaped as the apiserver serves them (meta/v1 APIVersions, APIGroupList, APIResourceList).

export function apiVersions(serverAddress: string): object {
  return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }] };
}

function apiGroup(name: string, versions: string[]): object {
  const gvs = versions.map((version) => ({ groupVersion: `${name}/${version}`, version }));
  return { name, versions: gvs, preferredVersion: gvs[0] };
}

export function apiGroupList(): object {
  return { kind: 'APIGroupList', apiVersion: 'v1', groups: [...groupVersions()].map(([name, versions]) => apiGroup(name, versions)) };
}

export function apiGroupDoc(group: string): object | undefined {
  const versions = groupVersions().get(group);
  return versions && { kind: 'APIGroup', apiVersion: 'v1', ...apiGroup(group, versions) };
}

export function apiResourceList(group: string, version: string): object | undefined {
  const served = RESOURCES.filter((r) => r.group === group && r.version === version);
  if (served.length === 0) return undefined;
  return {
    kind: 'APIResourceList',
    apiVersion: 'v1',
    groupVersion: groupVersion({ group, version }),
    resources: served.map((r) => ({
      name: r.plural,
      singularName: r.singular,
      namespaced: r.namespaced,
      kind: r.kind,
      verbs: [...VERBS],
      ...(r.shortNames && { shortNames: r.shortNames }),
    })),
  };
}
