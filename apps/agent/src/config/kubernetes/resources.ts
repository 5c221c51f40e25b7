/**
 * What the Kubernetes source reads from the API server: one list-and-watch per resource, cluster-wide except
 * Pods (this node's only, unless mTLS needs other nodes' too). The RBAC the agent needs is exactly `list` and `watch` on these (docs/kubernetes.md).
 */
import { existsSync } from 'node:fs';

import {
  CoreV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
  KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from '@kubernetes/client-node';

export type ResourceName = 'services' | 'endpointslices' | 'pods' | 'httproutes' | 'namespaces' | 'peerauthentications' | 'authorizationpolicies';

export interface WatchedResource {
  name: ResourceName;
  /** API group ('' for core), as RBAC names it. */
  group: string;
  version: string;
  /** The collection's path, cluster-wide. */
  path: string;
  /** A custom resource whose definition may not be installed: absent means empty, not an error. */
  optional: boolean;
}

export const WATCHED: readonly WatchedResource[] = [
  { name: 'services', group: '', version: 'v1', path: '/api/v1/services', optional: false },
  { name: 'endpointslices', group: 'discovery.k8s.io', version: 'v1', path: '/apis/discovery.k8s.io/v1/endpointslices', optional: false },
  { name: 'pods', group: '', version: 'v1', path: '/api/v1/pods', optional: false },
  { name: 'httproutes', group: 'gateway.networking.k8s.io', version: 'v1', path: '/apis/gateway.networking.k8s.io/v1/httproutes', optional: true },
  { name: 'namespaces', group: '', version: 'v1', path: '/api/v1/namespaces', optional: false },
  { name: 'peerauthentications', group: 'security.istio.io', version: 'v1', path: '/apis/security.istio.io/v1/peerauthentications', optional: true },
  { name: 'authorizationpolicies', group: 'security.istio.io', version: 'v1', path: '/apis/security.istio.io/v1/authorizationpolicies', optional: true },
];

/** The field selector that limits Pods to one node's. */
export const nodeSelector = (nodeName: string) => `spec.nodeName=${nodeName}`;

/** One page of a list: at most `limit` items, from `_continue` (a token of the previous page) when given. */
export interface ListPage {
  limit: number;
  _continue?: string;
}

export type ListFn = (page: ListPage) => Promise<KubernetesListObject<KubernetesObject>>;

/** The list call of each resource, through client-node's typed clients (HTTPRoutes through the custom
 *  objects client, which returns the JSON as sent; so are Istio's security objects). Lists are read in pages
 *  (limit/continue), so a big cluster is never held decoded whole at once. */
export function listFunctions(kc: KubeConfig, nodeName: string | undefined): Record<ResourceName, ListFn> {
  const core = kc.makeApiClient(CoreV1Api);
  const discovery = kc.makeApiClient(DiscoveryV1Api);
  const custom = kc.makeApiClient(CustomObjectsApi);
  const customList = (group: string, plural: string): ListFn => (page) =>
    custom.listClusterCustomObject({ group, version: 'v1', plural, ...page }) as Promise<KubernetesListObject<KubernetesObject>>;
  return {
    services: (page) => core.listServiceForAllNamespaces(page),
    endpointslices: (page) => discovery.listEndpointSliceForAllNamespaces(page),
    pods: (page) => core.listPodForAllNamespaces({ ...(nodeName !== undefined && { fieldSelector: nodeSelector(nodeName) }), ...page }),
    httproutes: customList('gateway.networking.k8s.io', 'httproutes'),
    namespaces: (page) => core.listNamespace(page),
    peerauthentications: customList('security.istio.io', 'peerauthentications'),
    authorizationpolicies: customList('security.istio.io', 'authorizationpolicies'),
  };
}

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/**
 * The client configuration: a kubeconfig file, or in-cluster (the service account's token and CA, and the
 * KUBERNETES_SERVICE_HOST/PORT the kubelet sets). Throws naming what is missing.
 */
export function loadKubeConfig(opts: { kubeconfig: string } | { inCluster: true; serviceAccountDir?: string }): KubeConfig {
  const kc = new KubeConfig();
  if ('kubeconfig' in opts) {
    try {
      kc.loadFromFile(opts.kubeconfig);
    } catch (err) {
      throw new Error(`kubeconfig ${opts.kubeconfig}: ${(err as Error).message}`);
    }
    if (!kc.getCurrentCluster()) throw new Error(`kubeconfig ${opts.kubeconfig}: no current context with a cluster`);
    return kc;
  }
  const { KUBERNETES_SERVICE_HOST: host, KUBERNETES_SERVICE_PORT: port } = process.env;
  if (!host || !port) throw new Error('in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (is the agent running in a pod?)');
  const dir = opts.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  for (const f of ['token', 'ca.crt']) {
    if (!existsSync(`${dir}/${f}`)) throw new Error(`in-cluster config: ${dir}/${f} is missing (is a service account token mounted?)`);
  }
  // client-node reads the files under a prefix of the standard directory.
  if (!dir.endsWith(SERVICE_ACCOUNT_DIR)) throw new Error(`in-cluster config: the service account directory must end with ${SERVICE_ACCOUNT_DIR}, got ${dir}`);
  kc.loadFromCluster(dir.slice(0, dir.length - SERVICE_ACCOUNT_DIR.length));
  return kc;
}
