// The switch between the test API server and a real cluster (MESH_TEST_KUBECONFIG): here the "real cluster" is
// a test API server this test starts itself, not through the fixture, so the fixture's cluster path (client-node
// over HTTPS, pod status through /status, clean-up of what it made) runs against a server it did not start.
import { afterEach, expect, it } from 'vitest';

import { describePrivileged, FAKE_ONLY, KubeApiServer, MESH_TEST_KUBECONFIG, realCluster } from '@mesh/testkit';

import { converged, namespace, pod, type Rig, runPod, service, slice, startRig } from './kube-harness.js';

let rig: Rig | undefined;
let server: KubeApiServer | undefined;
const saved = process.env[MESH_TEST_KUBECONFIG];
afterEach(async () => {
  await rig?.close();
  await server?.close();
  rig = server = undefined;
  if (saved === undefined) delete process.env[MESH_TEST_KUBECONFIG];
  else process.env[MESH_TEST_KUBECONFIG] = saved;
});

describePrivileged('Kubernetes tests against a cluster named by MESH_TEST_KUBECONFIG', () => {
  it('the source follows objects written to that cluster over its API; fake-only switches refused; what the test made is removed', async () => {
    server = await KubeApiServer.start();
    server.create(namespace('kept')); // a namespace an earlier run left
    process.env[MESH_TEST_KUBECONFIG] = server.kubeconfigPath;
    expect(realCluster()).toBe(true);
    rig = await startRig();
    expect(rig.cluster.fake).toBeUndefined();
    expect(() => rig!.server).toThrow(FAKE_ONLY);
    expect(() => rig!.lists('/api/v1/services')).toThrow(FAKE_ONLY);
    await expect(startRig({ serverDown: true })).rejects.toThrow(FAKE_ONLY);

    await rig.create(namespace('kept', { 'mesh.dev/enabled': 'true' }));
    const svc = await rig.create(service('kept', 'web', 80));
    await rig.create(slice('kept', 'web', 'web-1', ['10.9.0.1']));
    const p = await rig.create(pod('kept', 'p', '10.9.0.1'));
    runPod(rig, p);
    // Objects the test did not write, in a namespace it did not write to: on a cluster they are not compared.
    server.create(namespace('other', { 'mesh.dev/enabled': 'true' }));
    server.create(service('other', 'not-mine', 80));
    const got = await converged(rig, 'the objects written through the cluster path');
    expect(got.services).toEqual({ 'kept/web': `${(svc.spec as { clusterIP: string }).clusterIP} 80>8080` });
    expect(Object.keys(got.workloads)).toEqual(['kept/p']);

    // Written over HTTP, as to a cluster: the create dropped the pod's status, which then went through /status.
    const writes = server.requests.filter((r) => r.method !== 'GET').map((r) => `${r.method} ${new URL(r.url, 'http://x').pathname}`);
    expect(writes).toContain('POST /api/v1/namespaces/kept/pods');
    expect(writes).toContain('PUT /api/v1/namespaces/kept/pods/p/status');
    expect(server.requests.every((r) => r.user !== '')).toBe(true);
    expect((server.get(pod('kept', 'p', ''))!.status as { podIP?: string }).podIP).toBe('10.9.0.1');

    await rig.close();
    rig = undefined;
    // What the test made is gone; the namespaces stay (a cluster removes them slowly, and runs reuse them).
    expect(server.list({ apiVersion: 'v1', kind: 'Service' }, 'kept')).toEqual([]);
    expect(server.list({ apiVersion: 'v1', kind: 'Pod' }, 'kept')).toEqual([]);
    expect(server.list({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice' }, 'kept')).toEqual([]);
    expect(server.list({ apiVersion: 'v1', kind: 'Service' }, 'other').map((s) => s.metadata.name)).toEqual(['not-mine']);
    expect(server.get(namespace('kept'))).toBeDefined();
  });
});
