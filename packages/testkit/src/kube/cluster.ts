// Where the Kubernetes tests take their API server from: the test API server of this kit (started per test), or
// the cluster MESH_TEST_KUBECONFIG points at. Tests write objects through this interface alone, so the same test
// runs against both; the switches only the test server has (stall, drop, compaction, stop) are on `fake`,
// undefined against a cluster, and tests that need them skip (FAKE_ONLY says why).
import { CoreV1Api, KubeConfig, type KubernetesObject, KubernetesObjectApi, type V1Pod } from '@kubernetes/client-node';

import type { KubeObject } from './resources.js';
import { KubeApiServer, type KubeApiServerOptions } from './server.js';

/** The environment variable that points the Kubernetes tests at a real cluster (a kubeconfig path). */
export const MESH_TEST_KUBECONFIG = 'MESH_TEST_KUBECONFIG';

/** Why a test is skipped against a real cluster. */
export const FAKE_ONLY = `needs the test API server's switches (stall, drop, compaction, stop), which a cluster (${MESH_TEST_KUBECONFIG}) does not have`;

/** Whether the Kubernetes tests run against a real cluster. */
export const realCluster = (): boolean => !!process.env[MESH_TEST_KUBECONFIG];

type Ref = Pick<KubeObject, 'apiVersion' | 'kind'> & { metadata: { name?: string; namespace?: string } };

export interface KubeCluster extends AsyncDisposable {
  /** A kubeconfig for clients (the agent, kubectl). */
  readonly kubeconfigPath: string;
  /** The test API server when it is one; undefined against a real cluster. */
  readonly fake: KubeApiServer | undefined;
  /** As the API server stored it (status too: a Pod's is written through /status, as kubelet does). */
  create(obj: KubeObject): Promise<KubeObject>;
  replace(obj: KubeObject): Promise<KubeObject>;
  delete(ref: Ref): Promise<void>;
  get(ref: Ref): Promise<KubeObject | undefined>;
  list(ref: Pick<KubeObject, 'apiVersion' | 'kind'>, namespace?: string): Promise<KubeObject[]>;
  /** Against a real cluster: deletes what this fixture created that is still there (not Namespaces, which a
   *  cluster removes slowly and other runs reuse). The test server: closes it. */
  close(): Promise<void>;
}

/** The test API server, or the cluster of MESH_TEST_KUBECONFIG when set. */
export async function startKubeCluster(opts: KubeApiServerOptions = {}): Promise<KubeCluster> {
  const path = process.env[MESH_TEST_KUBECONFIG];
  return path ? new RealCluster(path) : fakeCluster(await KubeApiServer.start(opts));
}

function fakeCluster(server: KubeApiServer): KubeCluster {
  return {
    kubeconfigPath: server.kubeconfigPath,
    fake: server,
    create: async (o) => server.create(o),
    replace: async (o) => server.replace(o),
    delete: async (r) => void server.delete(r),
    get: async (r) => server.get(r),
    list: async (r, ns) => server.list(r, ns),
    close: () => server.close(),
    [Symbol.asyncDispose]: () => server.close(),
  };
}

/** Plain JSON, as the server sent it (client-node returns its model classes, with Dates). */
const plain = (o: unknown): KubeObject => JSON.parse(JSON.stringify(o)) as KubeObject;
const statusOf = (err: unknown) => (err as { code?: number }).code;

class RealCluster implements KubeCluster {
  readonly fake = undefined;
  private readonly objects: KubernetesObjectApi;
  private readonly core: CoreV1Api;
  private readonly created = new Map<string, Ref>();

  constructor(readonly kubeconfigPath: string) {
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfigPath);
    if (!kc.getCurrentCluster()) throw new Error(`${MESH_TEST_KUBECONFIG}=${kubeconfigPath}: no current context with a cluster`);
    this.objects = KubernetesObjectApi.makeApiClient(kc);
    this.core = kc.makeApiClient(CoreV1Api);
  }

  async create(obj: KubeObject): Promise<KubeObject> {
    let made: KubeObject;
    try {
      made = plain(await this.objects.create(obj as KubernetesObject));
    } catch (err) {
      // A namespace left by an earlier run (they are kept): take it, with this test's labels.
      if (obj.kind !== 'Namespace' || statusOf(err) !== 409) throw err;
      const have = (await this.get(obj))!;
      return this.replace({ ...obj, metadata: { ...obj.metadata, resourceVersion: have.metadata.resourceVersion } });
    }
    if (obj.kind !== 'Namespace') this.created.set(key(made), { apiVersion: obj.apiVersion, kind: obj.kind, metadata: { name: made.metadata.name, namespace: made.metadata.namespace } });
    return obj.kind === 'Pod' && obj.status ? this.writePodStatus(made, obj.status) : made;
  }

  async replace(obj: KubeObject): Promise<KubeObject> {
    const have = await this.get(obj);
    // A replace without a resourceVersion overwrites, as the test server's in-process replace does.
    const next = { ...obj, metadata: { ...obj.metadata, resourceVersion: obj.metadata.resourceVersion ?? have?.metadata.resourceVersion } };
    const made = plain(await this.objects.replace(next as KubernetesObject));
    return obj.kind === 'Pod' && obj.status ? this.writePodStatus(made, obj.status) : made;
  }

  async delete(ref: Ref): Promise<void> {
    await this.objects.delete(ref as KubernetesObject);
    this.created.delete(key(ref as KubeObject));
  }

  async get(ref: Ref): Promise<KubeObject | undefined> {
    try {
      return plain(await this.objects.read({ apiVersion: ref.apiVersion, kind: ref.kind, metadata: { name: ref.metadata.name!, namespace: ref.metadata.namespace ?? 'default' } } as never));
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  async list(ref: Pick<KubeObject, 'apiVersion' | 'kind'>, namespace?: string): Promise<KubeObject[]> {
    const l = await this.objects.list(ref.apiVersion ?? 'v1', ref.kind ?? '', namespace);
    return l.items.map((o) => ({ ...plain(o), apiVersion: ref.apiVersion, kind: ref.kind }));
  }

  /** What kubelet does for a pod: its status written through /status (a create drops it). */
  private async writePodStatus(pod: KubeObject, status: unknown): Promise<KubeObject> {
    const body = { ...pod, status } as V1Pod;
    return plain(await this.core.replaceNamespacedPodStatus({ name: pod.metadata.name!, namespace: pod.metadata.namespace!, body }));
  }

  async close(): Promise<void> {
    for (const ref of this.created.values()) {
      await this.objects.delete(ref as KubernetesObject).catch((err: unknown) => {
        if (statusOf(err) !== 404) throw err;
      });
    }
    this.created.clear();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

const key = (o: Pick<KubeObject, 'kind'> & { metadata: { name?: string; namespace?: string } }) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name ?? ''}`;
