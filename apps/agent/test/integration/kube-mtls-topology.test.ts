// The Kubernetes source fills the mTLS topology (docs/mtls.md, "Other nodes") when asked for other nodes' pods
// (remotePods, what the agent does with --mtls): an in-mesh pod of another node becomes a Workload with
// spec.nodeName (no cgroup: an endpoint and an mTLS destination here, never enrolled), and its status.hostIP
// names its node's address, so each node's tunnel is that address and the agent's tunnel port — no
// --mtls-node needed. Without remotePods only this node's pods are read, with the node field selector, as before.
import { afterEach, expect, it as vitestIt } from 'vitest';

import { describePrivileged, type KubeObject, realCluster } from '@mesh/testkit';

import { resolveConfig } from '../../src/config/objects.js';
import { nodeTunnel } from '../../src/mtls-topology.js';
import { namespace, NODE, pod, type Rig, runPod, startRig, WAIT_MS, waitFor } from './kube-harness.js';

/** Against a real cluster (MESH_TEST_KUBECONFIG) these are skipped: they count every pod's workload and node
 *  address in the cluster (a cluster has pods of its own), and read the test server's request log. */
const it: typeof vitestIt = realCluster() ? (((name: string, fn: () => Promise<void>, timeout?: number) => vitestIt.skip(`${name} (skipped: it counts every pod of the cluster, and reads the test server's request log)`, fn, timeout)) as typeof vitestIt) : vitestIt;

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

const onNode = (p: KubeObject, hostIP: string): KubeObject => ({ ...p, status: { ...(p.status as object), hostIP, hostIPs: [{ ip: hostIP }] } });

describePrivileged('Kubernetes source: the mTLS topology', () => {
  it("other nodes' in-mesh pods are workloads with spec.nodeName, and their node's address comes from status.hostIP", async () => {
    rig = await startRig({ remotePods: true });
    const { server } = rig;
    server.create(namespace('shop', { 'mesh.dev/enabled': 'true' }));
    const local = server.create(onNode(pod('shop', 'client-1', '10.1.0.1', { labels: { app: 'client', 'mesh.dev/mtls': 'enabled' } }), '192.0.2.1'));
    runPod(rig, local);
    server.create(onNode(pod('shop', 'server-1', '10.1.1.1', { node: 'node-b', labels: { app: 'server', 'mesh.dev/mtls': 'enabled' } }), '192.0.2.2'));
    server.create(onNode(pod('shop', 'server-2', '10.1.2.1', { node: 'node-c', labels: { app: 'server', 'mesh.dev/mtls': 'enabled' } }), '2001:db8::3'));
    server.create(namespace('other'));
    server.create(onNode(pod('other', 'outside', '10.1.3.1', { node: 'node-d' }), '192.0.2.4')); // not in the mesh
    await waitFor(() => (rig!.last()?.workloads.length ?? 0) === 3, WAIT_MS, 'three workloads');
    const snap = rig.last()!;
    const byName = Object.fromEntries(snap.workloads.map((w) => [w.metadata.name, w.spec]));
    expect(byName['client-1']).not.toHaveProperty('nodeName');
    expect(byName['client-1']!.cgroup).toMatch(/^kubepods\.slice\//);
    expect(byName['server-1']).toMatchObject({ nodeName: 'node-b', serviceAccount: 'web', addresses: ['10.1.1.1'], ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] });
    expect(byName['server-1']).not.toHaveProperty('cgroup');
    expect(byName['server-2']).toMatchObject({ nodeName: 'node-c', addresses: ['10.1.2.1'] });
    expect(snap.nodeAddresses).toEqual({ 'node-b': '192.0.2.2', 'node-c': '2001:db8::3' });

    // The agent's validation takes it, and each remote node's tunnel follows: its address and our tunnel port.
    const resolved = resolveConfig(snap);
    expect(resolved.workloads.find((w) => w.name === 'server-1')).toMatchObject({ nodeName: 'node-b', namespace: 'shop', serviceAccount: 'web' });
    expect(nodeTunnel('node-b', resolved, { tunnel: '192.0.2.1:15008' })).toBe('192.0.2.2:15008');
    expect(nodeTunnel('node-c', resolved, { tunnel: '192.0.2.1:15008' })).toBe('[2001:db8::3]:15008');
    expect(nodeTunnel('node-d', resolved, { tunnel: '192.0.2.1:15008' })).toBeUndefined();
    // --mtls-node still names a tunnel explicitly, and wins.
    expect(nodeTunnel('node-b', resolved, { tunnel: '192.0.2.1:15008', peers: { 'node-b': '198.51.100.2:15009' } })).toBe('198.51.100.2:15009');

    // A remote pod that moves off its node (deleted) takes its node's address with it when it was the last.
    server.delete(pod('shop', 'server-2', ''));
    await waitFor(() => rig!.last()?.workloads.length === 2, WAIT_MS, 'server-2 gone');
    expect(rig.last()!.nodeAddresses).toEqual({ 'node-b': '192.0.2.2' });
  });

  it("without remotePods only this node's pods are read (the node field selector), as before", async () => {
    rig = await startRig();
    const { server } = rig;
    server.create(namespace('shop', { 'mesh.dev/enabled': 'true' }));
    const local = server.create(onNode(pod('shop', 'client-1', '10.1.0.1'), '192.0.2.1'));
    runPod(rig, local);
    server.create(onNode(pod('shop', 'server-1', '10.1.1.1', { node: 'node-b' }), '192.0.2.2'));
    await waitFor(() => rig!.last()?.workloads.length === 1, WAIT_MS, 'one workload');
    expect(rig.last()!.nodeAddresses ?? {}).toEqual({});
    const podLists = rig.server.requests.filter((r) => r.method === 'GET' && new URL(r.url, 'http://x').pathname === '/api/v1/pods');
    expect(podLists.length).toBeGreaterThan(0);
    expect(podLists.every((r) => new URL(r.url, 'http://x').searchParams.get('fieldSelector') === `spec.nodeName=${NODE}`)).toBe(true);
  });
});
