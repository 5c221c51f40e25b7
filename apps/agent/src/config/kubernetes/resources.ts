/**
 * What the Kubernetes source reads from the API server: one list-and-watch per resource, cluster-wide except
 * Pods (this node's only, unless mTLS needs other nodes' too). The RBAC the agent needs is exactly `list` and `watch` on these (docs/kubernetes.md).
 */
import { inClusterConfig, type KubeClient, type KubeClientConfig, kubeconfigFile, SERVICE_ACCOUNT_DIR } from './client.js';
import type { KubernetesObject } from './informer.js';

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

/** One page of a collection, as the server sent it. */
export interface ListBody {
  metadata?: { resourceVersion?: string; continue?: string };
  items: KubernetesObject[];
}

export type ListFn = (page: ListPage, signal?: AbortSignal) => Promise<ListBody>;

/** The list call of each resource (Pods: this node's, or every node's when `nodeName` is undefined). Lists are
 *  read in pages (limit/continue), so a big cluster is never held decoded whole at once. */
export function listFunctions(client: KubeClient, nodeName: string | undefined): Record<ResourceName, ListFn> {
  const lists = {} as Record<ResourceName, ListFn>;
  for (const r of WATCHED) {
    const selector = r.name === 'pods' && nodeName !== undefined ? nodeSelector(nodeName) : undefined;
    lists[r.name] = (page, signal) =>
      client.list<KubernetesObject>(r.path, { limit: page.limit || undefined, continue: page._continue, fieldSelector: selector }, signal);
  }
  return lists;
}

export { SERVICE_ACCOUNT_DIR };

/**
 * The client configuration: a kubeconfig file (its current context), or in-cluster (the service account's
 * token and CA, and the KUBERNETES_SERVICE_HOST/PORT the kubelet sets). Throws naming what is missing.
 */
export function loadKubeConfig(opts: { kubeconfig: string } | { inCluster: true; serviceAccountDir?: string }): KubeClientConfig {
  return 'kubeconfig' in opts ? kubeconfigFile(opts.kubeconfig) : inClusterConfig(opts.serviceAccountDir);
}
