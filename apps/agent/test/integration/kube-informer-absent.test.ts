// A custom resource whose definition is not installed (the API server answers 404): for an optional resource
// (HTTPRoute on a cluster without the Gateway API) the informer is synced and empty, not an outage that would
// keep the first snapshot from ever being made; for a required one it is an error, named in health.
import { afterEach, describe, expect, it } from 'vitest';

import { KubeApiServer } from '@mesh/testkit';

import { KubeClient } from '../../src/config/kubernetes/client.js';
import { SupervisedInformer } from '../../src/config/kubernetes/informer.js';
import { loadKubeConfig } from '../../src/config/kubernetes/resources.js';
import { waitFor } from './kube-harness.js';

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

async function watchMissing(optional: boolean): Promise<{ informer: SupervisedInformer; changes: () => number }> {
  server = await KubeApiServer.start();
  const c = new KubeClient(loadKubeConfig({ kubeconfig: server.kubeconfigPath }));
  client = c;
  let changes = 0;
  const inf = new SupervisedInformer(
    'things',
    c,
    '/apis/nosuch.example.com/v1/things',
    (page, signal) => c.list('/apis/nosuch.example.com/v1/things', { limit: page.limit }, signal),
    { optional, backoffMinMs: 100, backoffMaxMs: 300, onChange: () => changes++ },
  );
  informer = inf;
  inf.start();
  return { informer: inf, changes: () => changes };
}

describe('an informer on a resource the server does not serve', () => {
  it('optional: synced, empty, healthy and marked absent; looked for again', async () => {
    const { informer: inf, changes } = await watchMissing(true);
    await waitFor(() => inf.health().synced, 20_000, 'the informer to count as synced');
    expect(inf.health()).toMatchObject({ synced: true, healthy: true, absent: true });
    expect(inf.list()).toEqual([]);
    expect(changes()).toBe(1);
    // Looked for again at the longest backoff (300 ms here).
    const lists = () => server!.requests.filter((r) => r.url.startsWith('/apis/nosuch.example.com/v1/things')).length;
    const n = lists();
    await waitFor(() => lists() > n, 20_000, 'another look');
    expect(server!.requests.find((r) => r.url.startsWith('/apis/nosuch.example.com/'))!.status).toBe(404);
  });

  it('required: not synced, unhealthy, the 404 named in health, restarted with backoff', async () => {
    const { informer: inf } = await watchMissing(false);
    await waitFor(() => inf.health().restarts >= 2, 20_000, 'two restarts');
    expect(inf.health()).toMatchObject({ synced: false, healthy: false });
    expect(inf.health().lastError?.message).toMatch(/^HTTP 404/);
  });
});
