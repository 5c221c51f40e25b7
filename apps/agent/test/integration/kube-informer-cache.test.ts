// What an informer holds: lists are read in pages (limit/continue, as client-go's pager), and every object,
// listed or watched, goes through the transform before the informer caches it, so a big cluster is neither
// decoded whole at once nor kept whole (managedFields, annotations, status…) in the agent.
import type { V1Service } from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';

import { KubeApiServer } from '@mesh/testkit';

import { KubeClient } from '../../src/config/kubernetes/client.js';
import { type KubernetesObject, LIST_PAGE, SupervisedInformer } from '../../src/config/kubernetes/informer.js';
import { listFunctions, loadKubeConfig } from '../../src/config/kubernetes/resources.js';
import { namespace, service, WAIT_MS, waitFor } from './kube-harness.js';

let server: KubeApiServer | undefined;
let informer: SupervisedInformer | undefined;
let client: KubeClient | undefined;
afterEach(async () => {
  await informer?.stop();
  client?.close();
  client = undefined;
  await server?.close();
  informer = server = undefined;
});

/** A Service as a busy cluster serves it: managedFields and annotations the mesh never reads. */
function bulky(i: number) {
  const s = service('ns', `s-${i}`, 80);
  s.metadata.annotations = { 'kubectl.kubernetes.io/last-applied-configuration': JSON.stringify(s) };
  s.metadata.managedFields = [{ manager: 'kubectl', operation: 'Apply', apiVersion: 'v1', fieldsType: 'FieldsV1', fieldsV1: { 'f:spec': { 'f:ports': {} } } }];
  return s;
}

/** What this test's informer keeps of a Service. */
const keep = (o: KubernetesObject) => {
  const { name, namespace, resourceVersion } = o.metadata ?? {};
  return { metadata: { name, namespace, resourceVersion }, clusterIP: (o as V1Service).spec?.clusterIP };
};

describe('an informer over a big list', () => {
  it('lists in pages and caches only what the transform keeps, for watched objects too', async () => {
    server = await KubeApiServer.start();
    server.create(namespace('ns'));
    const total = 2 * LIST_PAGE + 1;
    for (let i = 0; i < total; i++) server.create(bulky(i));
    client = new KubeClient(loadKubeConfig({ kubeconfig: server.kubeconfigPath }));
    const inf = new SupervisedInformer('services', client, '/api/v1/services', listFunctions(client, 'node-a').services, { transform: keep, onChange: () => {} });
    informer = inf;
    inf.start();
    await waitFor(() => inf.health().synced && inf.list().length === total, WAIT_MS, `${total} services cached`);

    const lists = server.requests.filter((r) => /^\/api\/v1\/services(\?|$)/.test(r.url) && !/[?&]watch=true/.test(r.url)).map((r) => new URL(r.url, 'http://x').searchParams);
    expect(lists.map((q) => q.get('limit'))).toEqual([String(LIST_PAGE), String(LIST_PAGE), String(LIST_PAGE)]);
    expect(lists.map((q) => q.has('continue'))).toEqual([false, true, true]);

    const cached = inf.list() as ReturnType<typeof keep>[];
    for (const o of cached) expect(Object.keys(o).sort()).toEqual(['clusterIP', 'metadata']);
    const stored = server.get({ apiVersion: 'v1', kind: 'Service', metadata: { name: 's-7', namespace: 'ns' } })!;
    expect(cached.find((o) => o.metadata.name === 's-7')).toEqual({
      metadata: { name: 's-7', namespace: 'ns', resourceVersion: stored.metadata.resourceVersion },
      clusterIP: (stored.spec as { clusterIP: string }).clusterIP,
    });

    // A watched object is cut down the same way before it is cached.
    server.create(bulky(total));
    await waitFor(() => inf.list().length === total + 1, WAIT_MS, 'the created service in the cache');
    const added = (inf.list() as ReturnType<typeof keep>[]).find((o) => o.metadata.name === `s-${total}`)!;
    expect(Object.keys(added).sort()).toEqual(['clusterIP', 'metadata']);
    expect(added.clusterIP).toMatch(/^127\./);
  });
});
