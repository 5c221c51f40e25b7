// mesh-agent --kubeconfig against the test API server: the objects of the cluster become the datapath's
// services and this node's pods its workloads, changes follow, and kubelet's pod cgroups are never made or
// remade by the agent.
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { expect, it } from 'vitest';

import { capturedOutput, describePrivileged, KubeApiServer } from '@mesh/testkit';

import { AGENT_BIN, httpGet, type MeshEnv, meshEnvPerTest } from './harness.js';

const NODE = 'node-e2e';

async function startKubeAgent(env: MeshEnv, kubeconfig: string) {
  const child = env.procs.spawn(
    AGENT_BIN,
    ['--kubeconfig', kubeconfig, '--node-name', NODE, '--listen', env.listen, '--api-socket', env.apiSocket, '--pin-root', env.pinRoot, '--cgroup-root', env.cgroupRoot, '--state-dir', env.stateDir],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`mesh-agent exited (${child.exitCode}):\n${capturedOutput(child).stderr}`);
    const r = await httpGet('127.0.0.1', env.port, '/readyz', 1000).catch(() => undefined);
    if (r?.status === 200) return child;
    if (Date.now() > deadline) throw new Error(`mesh-agent not ready after 30 s:\n${capturedOutput(child).stderr}`);
    await sleep(50);
  }
}

const api = (env: MeshEnv, path: string) => env.api<any>(path);

async function until<T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v)}`);
    await sleep(100);
  }
}

describePrivileged('mesh-agent with the Kubernetes source', () => {
  const newEnv = meshEnvPerTest();

  it('applies the cluster\'s objects and this node\'s pods, follows changes, and leaves pod cgroups to kubelet', async () => {
    const env = await newEnv();
    await using server = await KubeApiServer.start();
    server.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'mesh.dev/enabled': 'true' } } });
    for (const name of ['web', 'web-a', 'web-b']) {
      server.create({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop' }, spec: { ports: [{ port: 8080 }] } });
    }
    for (const [svc, ip] of [['web-a', '10.20.0.1'], ['web-b', '10.20.0.2']] as const) {
      server.create({
        apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: `${svc}-x`, namespace: 'shop', labels: { 'kubernetes.io/service-name': svc } },
        addressType: 'IPv4', endpoints: [{ addresses: [ip], conditions: { ready: true } }], ports: [{ port: 8080, protocol: 'TCP' }],
      });
    }
    const route = (a: number, b: number) => ({
      apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'split', namespace: 'shop' },
      spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web', port: 8080 }], rules: [{ backendRefs: [{ name: 'web-a', port: 8080, weight: a }, { name: 'web-b', port: 8080, weight: b }] }] },
    });
    server.create(route(90, 10));
    const pod = server.create({
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-a-1', namespace: 'shop', labels: { app: 'web' } },
      spec: { nodeName: NODE, containers: [{ name: 'c', image: 'x' }] },
      status: { phase: 'Running', qosClass: 'BestEffort', podIP: '10.20.0.1', podIPs: [{ ip: '10.20.0.1' }], conditions: [{ type: 'Ready', status: 'True' }] },
    });
    // kubelet's layout under the agent's cgroup root (the kubepods directory on a node; a scratch one here).
    const podCgroup = `kubepods-besteffort.slice/kubepods-besteffort-pod${pod.metadata.uid!.replaceAll('-', '_')}.slice`;
    mkdirSync(join(env.cgroupRoot, podCgroup), { recursive: true });

    await startKubeAgent(env, server.kubeconfigPath);
    const share = (s: any, backend: string) => s.services.find((x: any) => x.service === 'shop/web')?.backends.find((b: any) => b.ref.includes(backend))?.weight;
    let services = await until('the route in the datapath', () => api(env, '/v1/services'), (s) => share(s, 'web-a') === 90);
    expect(share(services, 'web-b')).toBe(10);
    const workloads = await api(env, '/v1/workloads');
    expect(workloads.workloads).toEqual([expect.objectContaining({ name: 'web-a-1', namespace: 'shop', cgroup: podCgroup, addresses: ['10.20.0.1'] })]);
    const status = await api(env, '/v1/status');
    expect(status.source).toMatch(/^kubernetes https:\/\/127\.0\.0\.1:\d+ node node-e2e$/);
    expect(status.sourceHealth).toMatchObject({ synced: true, healthy: true });

    // kubelet tears the pod's cgroup down; the next apply must not bring it back.
    rmdirSync(join(env.cgroupRoot, podCgroup));
    server.replace(route(50, 50));
    services = await until('the new weights', () => api(env, '/v1/services'), (s) => share(s, 'web-a') === 50);
    expect(existsSync(join(env.cgroupRoot, podCgroup))).toBe(false);
  });
});
