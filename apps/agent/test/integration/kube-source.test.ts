// The Kubernetes source against the test API server (or a real cluster, MESH_TEST_KUBECONFIG): its snapshots follow create, update and delete of every
// kind it reads; the first comes only once every informer has listed; changes are debounced; a relist or a
// write that changes nothing the mesh reads delivers nothing; pods become workloads once kubelet's cgroup is there.
import { setTimeout as sleep } from 'node:timers/promises';

import { afterEach, expect, it } from 'vitest';

import { describePrivileged, FAKE_ONLY, type KubeObject, realCluster } from '@mesh/testkit';

import { converged, namespace, pod, type Rig, route, runPod, service, slice, startRig, WAIT_MS, waitFor } from './kube-harness.js';

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

describePrivileged('Kubernetes source: snapshots', () => {
  it('follows create, update and delete of Services, EndpointSlices, HTTPRoutes, Pods and Namespaces', async () => {
    rig = await startRig();
    await waitFor(() => rig!.updates.length === 1, WAIT_MS, 'the first snapshot');
    await rig.create(namespace('shop', { 'mesh.dev/enabled': 'true' }));
    await rig.create(service('shop', 'reviews', 80, { app: 'reviews' }));
    await rig.create(service('shop', 'reviews-v2', 80));
    await rig.create(slice('shop', 'reviews', 'reviews-abc', ['10.1.0.1', '10.1.0.2']));
    await rig.create(route('shop', 'split', 'reviews', [['reviews', 90], ['reviews-v2', 10]]));
    const p1 = await rig!.create(pod('shop', 'reviews-1', '10.1.0.1', { labels: { app: 'reviews' } }));
    runPod(rig, p1);
    await rig.create(pod('shop', 'elsewhere', '10.1.9.9', { node: 'node-b' })); // another node's: never a workload here
    let got = await converged(rig, 'every kind created');
    expect(Object.keys(got.services)).toEqual(['shop/reviews', 'shop/reviews-v2']);
    expect(got.slices).toEqual({ 'shop/reviews-abc': '10.1.0.1,10.1.0.2' });
    expect(got.routes).toEqual({ 'shop/split': 'reviews=90,reviews-v2=10' });
    expect(Object.keys(got.workloads)).toEqual(['shop/reviews-1']);
    const w = rig.last()!.workloads[0]!;
    expect(w.spec).toMatchObject({ serviceAccount: 'web', addresses: ['10.1.0.1'], ready: true, ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] });
    expect(w.spec.cgroup).toMatch(new RegExp(`^kubepods\\.slice/kubepods-burstable\\.slice/kubepods-burstable-pod${p1.metadata.uid!.replaceAll('-', '_')}\\.slice$`));
    // The source's objects pass the agent's own validation, as the file source's do.
    const { resolveConfig } = await import('../../src/config/objects.js');
    expect(resolveConfig(rig.last()!).compiled.services.length).toBeGreaterThan(0);

    // Updates.
    const svc = (await rig.get(service('shop', 'reviews', 80)))!;
    await rig.replace({ ...svc, spec: { ...(svc.spec as object), ports: [{ name: 'http', port: 81, targetPort: 9090 }] } });
    await rig.replace({ ...slice('shop', 'reviews', 'reviews-abc', ['10.1.0.3'], false) });
    await rig.replace(route('shop', 'split', 'reviews', [['reviews', 50], ['reviews-v2', 50]]));
    await rig.replace({ ...pod('shop', 'reviews-1', '10.1.0.1', { labels: { app: 'reviews' }, ready: false }) });
    got = await converged(rig, 'every kind updated');
    expect(got.services['shop/reviews']).toMatch(/ 81>9090$/);
    expect(got.slices['shop/reviews-abc']).toBe('10.1.0.3!');
    expect(got.routes['shop/split']).toBe('reviews=50,reviews-v2=50');
    expect(got.workloads['shop/reviews-1']).toMatch(/ unready /);

    // A namespace that leaves the mesh takes its pods out; a pod label brings one back.
    await rig.replace(namespace('shop'));
    got = await converged(rig, 'the namespace out of the mesh');
    expect(got.workloads).toEqual({});
    await rig.replace({ ...pod('shop', 'reviews-1', '10.1.0.1', { labels: { app: 'reviews', 'mesh.dev/enabled': 'true' } }) });
    got = await converged(rig, 'the pod enrolled by its own label');
    expect(Object.keys(got.workloads)).toEqual(['shop/reviews-1']);

    // Deletes.
    await rig.delete(route('shop', 'split', 'reviews', []));
    await rig.delete(slice('shop', 'reviews', 'reviews-abc', []));
    await rig.delete(service('shop', 'reviews-v2', 80));
    await rig.delete(pod('shop', 'reviews-1', ''));
    got = await converged(rig, 'every kind deleted');
    expect(got).toEqual({ services: { 'shop/reviews': expect.any(String) }, slices: {}, routes: {}, workloads: {} });
  });

  // Starts with the server stopped.
  it.skipIf(realCluster())('delivers nothing until every informer has listed: the first snapshot is whole' + (realCluster() ? ` (skipped: ${FAKE_ONLY})` : ''), async () => {
    // Many Services make their list the slowest; the other lists answer first.
    rig = await startRig({
      debounceMs: 1,
      serverDown: true,
      before: (server) => {
        server.create(namespace('big', { 'mesh.dev/enabled': 'true' }));
        for (let i = 0; i < 1500; i++) server.create(service('big', `s${i}`, 80));
        server.create(slice('big', 's0', 's0-a', ['10.2.0.1']));
        server.create(route('big', 'r', 's0', [['s1', 1]]));
      },
    });
    await sleep(500);
    expect(rig.updates).toHaveLength(0);
    const h = rig.source.health();
    expect(h).toMatchObject({ synced: false, healthy: false });
    expect(h.lastError?.message).toMatch(/ECONNREFUSED|fetch failed/);
    const p = pod('big', 'p', '10.2.0.9');
    await rig.server.listen();
    const created = rig.server.create(p);
    runPod(rig, created);
    await waitFor(() => rig!.updates.length >= 1, WAIT_MS, 'the first snapshot');
    const first = rig.updates[0]!.snapshot!;
    expect(first.services.filter((s) => s.metadata.namespace === 'big')).toHaveLength(1500);
    expect(first.endpointSlices.map((s) => s.metadata.name)).toEqual(['s0-a']);
    expect(first.httpRoutes.map((r) => r.metadata.name)).toEqual(['r']);
    await converged(rig, 'the pod as a workload');
    await waitFor(() => rig!.source.health().healthy, WAIT_MS, 'every watch up');
    expect(rig.source.health()).toMatchObject({ synced: true, healthy: true });
  });

  it('debounces: a burst of changes is one snapshot', async () => {
    rig = await startRig({ debounceMs: 300, maxDelayMs: 5000 });
    await waitFor(() => rig!.updates.length === 1, WAIT_MS, 'the first snapshot');
    await rig.create(namespace('burst'));
    for (let i = 0; i < 50; i++) await rig.create(service('burst', `s${i}`, 80));
    await converged(rig, '50 services');
    await sleep(600);
    expect(rig.updates).toHaveLength(2);
  });

  it('a steady stream of changes still delivers, at most the max delay apart', async () => {
    rig = await startRig({ debounceMs: 200, maxDelayMs: 600 });
    await waitFor(() => rig!.updates.length === 1, WAIT_MS, 'the first snapshot');
    await rig.create(namespace('churn'));
    // A change every 50 ms for 2.4 s: never 200 ms of quiet.
    for (let i = 0; i < 48; i++) {
      await rig.create(service('churn', `s${i}`, 80));
      await sleep(50);
    }
    const during = rig.updates.length - 1;
    await converged(rig, 'the 48 services');
    expect(during).toBeGreaterThanOrEqual(2);
  });

  // Forces a relist by compaction, and counts lists at the server.
  it.skipIf(realCluster())('a relist that changes nothing, and writes to fields the mesh does not read, deliver nothing' + (realCluster() ? ` (skipped: ${FAKE_ONLY})` : ''), async () => {
    rig = await startRig();
    const { server } = rig;
    server.create(namespace('quiet', { 'mesh.dev/enabled': 'true' }));
    server.create(service('quiet', 'a', 80));
    server.create(slice('quiet', 'a', 'a-1', ['10.3.0.1']));
    runPod(rig, server.create(pod('quiet', 'p', '10.3.0.1')));
    await converged(rig, 'the objects');
    await sleep(300);
    const before = rig.updates.length;
    const lists = rig.lists('/api/v1/services');

    // Annotations, a status write: new resourceVersions, nothing the mesh reads.
    const svc = server.get(service('quiet', 'a', 80))!;
    server.replace({ ...svc, metadata: { ...svc.metadata, annotations: { note: 'x' } } });
    const p = server.get(pod('quiet', 'p', ''))!;
    server.replace({ ...p, status: { ...(p.status as object), startTime: '2026-01-01T00:00:00Z' } });
    // An expired resourceVersion: every informer relists and finds the same objects.
    server.stallWatches();
    server.create(namespace('unrelated')); // a namespace with no label and nothing in it: nothing the mesh reads
    server.delete(namespace('unrelated'));
    server.compact();
    server.dropWatches();
    await waitFor(() => rig!.lists('/api/v1/services') > lists, WAIT_MS, 'the relist');
    await sleep(500);
    expect(rig.updates.length).toBe(before);
    expect(rig.source.health()).toMatchObject({ synced: true, healthy: true });
  });

  it('an in-mesh pod waits for kubelet\'s cgroup, reported in health, and becomes a workload once it is there', async () => {
    rig = await startRig();
    await rig.create(namespace('late', { 'istio.io/dataplane-mode': 'ambient' }));
    const p = await rig.create(pod('late', 'p', '10.4.0.1', { qos: 'Guaranteed' }));
    await rig.create(pod('late', 'out', '10.4.0.2', { labels: { 'istio.io/dataplane-mode': 'none' } }));
    await waitFor(() => rig!.source.health().pendingCgroups.length === 1, WAIT_MS, 'the pod reported as waiting for its cgroup');
    expect(rig.source.health().pendingCgroups[0]).toMatchObject({ pod: 'late/p', uid: p.metadata.uid });
    expect(rig.last()?.workloads ?? []).toEqual([]);
    const rel = runPod(rig, p);
    await waitFor(() => (rig!.last()?.workloads.length ?? 0) === 1, WAIT_MS, 'the workload');
    expect(rig.last()!.workloads[0]!.spec.cgroup).toBe(rel);
    expect(rel).toMatch(/^kubepods\.slice\/kubepods-pod[0-9a-f_]+\.slice$/);
    expect(rig.source.health().pendingCgroups).toEqual([]);
  });

  it('pods the mesh cannot take are left out and reported, not a rejected snapshot', async () => {
    rig = await startRig();
    await rig.create(namespace('odd', { 'mesh.dev/enabled': 'true' }));
    const dotted: KubeObject = pod('odd', 'web.v1', '10.5.0.1');
    runPod(rig, await rig!.create(dotted));
    const host = pod('odd', 'host', '192.0.2.1');
    (host.spec as { hostNetwork?: boolean }).hostNetwork = true;
    runPod(rig, await rig!.create(host));
    runPod(rig, await rig!.create(pod('odd', 'fine', '10.5.0.3')));
    await waitFor(() => rig!.source.health().skippedPods.length === 2, WAIT_MS, 'two pods reported');
    await waitFor(() => rig!.last()?.workloads.length === 1, WAIT_MS, 'the one workload');
    expect(rig.last()!.workloads[0]!.metadata.name).toBe('fine');
    expect(rig.source.health().skippedPods.map((s) => s.pod).sort()).toEqual(['odd/host', 'odd/web.v1']);
  });
});
