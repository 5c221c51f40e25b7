// The Kubernetes source's pure parts: which pods are in the mesh, which Services the mesh carries, what a
// pod's workload holds, the node name, the in-cluster config, and mesh-agent's flags for it.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

import type { V1Namespace, V1Pod, V1Service } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';

import { inMesh, podProblem, podToWorkload } from '../../src/config/kubernetes/pods.js';
import { loadKubeConfig, SERVICE_ACCOUNT_DIR } from '../../src/config/kubernetes/resources.js';
import { nodeName } from '../../src/config/kubernetes/setup.js';
import { serviceSkipReason, serviceView } from '../../src/config/kubernetes/views.js';

const ns = (labels: Record<string, string> = {}): V1Namespace => ({ metadata: { name: 'n', labels } });
const pod = (labels: Record<string, string> = {}, extra: Partial<V1Pod> = {}): V1Pod => ({
  metadata: { name: 'p', namespace: 'n', uid: 'u-1', labels },
  spec: { containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }, { containerPort: 9090 }] }] },
  ...extra,
});

describe('mesh membership', () => {
  it.each([
    ['namespace enabled', {}, { 'mesh.dev/enabled': 'true' }, true],
    ['pod enabled', { 'mesh.dev/enabled': 'true' }, {}, true],
    ['pod opted out of an enabled namespace', { 'mesh.dev/enabled': 'false' }, { 'mesh.dev/enabled': 'true' }, false],
    ['Istio ambient namespace', {}, { 'istio.io/dataplane-mode': 'ambient' }, true],
    ['Istio ambient pod', { 'istio.io/dataplane-mode': 'ambient' }, {}, true],
    ['Istio opt-out in an ambient namespace', { 'istio.io/dataplane-mode': 'none' }, { 'istio.io/dataplane-mode': 'ambient' }, false],
    ['no label', {}, {}, false],
    ['a value other than true', { 'mesh.dev/enabled': 'yes' }, {}, false],
  ])('%s', (_name, podLabels, nsLabels, want) => {
    expect(inMesh(pod(podLabels), ns(nsLabels))).toBe(want);
  });
});

describe('pod → workload', () => {
  it('addresses, readiness, service account, named ports, sorted labels', () => {
    const p = pod({ z: '1', a: '2' }, {
      status: { podIPs: [{ ip: '10.0.0.1' }, { ip: 'fd00::1' }], conditions: [{ type: 'Ready', status: 'True' }] },
    });
    p.spec!.serviceAccountName = 'reviews';
    expect(podToWorkload(p, { cgroup: 'kubepods-pod1.slice' })).toEqual({
      apiVersion: 'mesh.dev/v1alpha1',
      kind: 'Workload',
      metadata: { name: 'p', namespace: 'n', labels: { a: '2', z: '1' } },
      spec: { serviceAccount: 'reviews', cgroup: 'kubepods-pod1.slice', addresses: ['10.0.0.1', 'fd00::1'], ports: [{ name: 'http', port: 8080, protocol: 'TCP' }], ready: true },
    });
  });

  it('a pod without IPs yet is an unready workload with no address; podIP alone is read', () => {
    expect(podToWorkload(pod(), { cgroup: 'x' }).spec).toMatchObject({ addresses: [], ready: false });
    expect(podToWorkload(pod({}, { status: { podIP: '10.0.0.2' } }), { cgroup: 'x' }).spec.addresses).toEqual(['10.0.0.2']);
  });

  it('names what keeps a pod out', () => {
    expect(podProblem(pod())).toBeUndefined();
    expect(podProblem({ ...pod(), metadata: { ...pod().metadata, name: 'a.b' } })).toMatch(/^metadata\.name: "a\.b" is not a DNS label/);
    expect(podProblem(pod({}, { spec: { containers: [], hostNetwork: true } }))).toMatch(/^spec\.hostNetwork/);
    expect(podProblem(pod({}, { spec: { containers: [], serviceAccountName: 'a.b' } }))).toMatch(/^spec\.serviceAccountName/);
  });
});

describe('Services the mesh carries', () => {
  const svc = (spec: V1Service['spec']): V1Service => ({ metadata: { name: 's', namespace: 'n' }, spec });
  it('headless, ExternalName and port-less Services are left out', () => {
    expect(serviceSkipReason(svc({ clusterIP: 'None', clusterIPs: ['None'], ports: [{ port: 80 }] }))).toMatch(/headless/);
    expect(serviceSkipReason(svc({ type: 'ExternalName', externalName: 'example.org' }))).toMatch(/ExternalName/);
    expect(serviceSkipReason(svc({ clusterIP: '10.96.0.1', ports: [] }))).toBe('no ports');
    expect(serviceSkipReason(svc({ clusterIP: '10.96.0.1', ports: [{ port: 80 }] }))).toBeUndefined();
  });

  it('the view keeps what routing reads and nothing else', () => {
    const s = svc({ clusterIP: '10.96.0.1', clusterIPs: ['10.96.0.1'], ports: [{ name: 'h', port: 80, targetPort: 'http' as never, protocol: 'TCP' }], selector: { b: '1', a: '2' }, sessionAffinity: 'None' });
    s.metadata!.resourceVersion = '42';
    expect(JSON.stringify(serviceView(s))).toBe(
      '{"apiVersion":"v1","kind":"Service","metadata":{"name":"s","namespace":"n"},"spec":{"clusterIP":"10.96.0.1","clusterIPs":["10.96.0.1"],"ports":[{"name":"h","port":80,"targetPort":"http","protocol":"TCP"}],"selector":{"a":"2","b":"1"}}}',
    );
  });
});

describe('node name and in-cluster config', () => {
  it('--node-name, then NODE_NAME, then the host name; a bad one is named', () => {
    expect(nodeName('n1', { NODE_NAME: 'n2' })).toBe('n1');
    expect(nodeName(undefined, { NODE_NAME: 'n2' })).toBe('n2');
    expect(() => nodeName('Bad_Name', {})).toThrow(/node name "Bad_Name" is not a DNS subdomain/);
  });

  it('in-cluster: the service account files and the service env; what is missing is named', () => {
    const root = mkdtempSync(join(tmpdir(), 'kube-sa-'));
    const saved = { ...process.env };
    try {
      delete process.env.KUBERNETES_SERVICE_HOST;
      expect(() => loadKubeConfig({ inCluster: true })).toThrow(/KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set/);
      process.env.KUBERNETES_SERVICE_HOST = '10.96.0.1';
      process.env.KUBERNETES_SERVICE_PORT = '443';
      const dir = join(root, SERVICE_ACCOUNT_DIR);
      expect(() => loadKubeConfig({ inCluster: true, serviceAccountDir: dir })).toThrow(/token is missing/);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'token'), 'tok');
      writeFileSync(join(dir, 'ca.crt'), 'ca');
      const kc = loadKubeConfig({ inCluster: true, serviceAccountDir: dir });
      expect(kc).toMatchObject({ server: 'https://10.96.0.1:443', caFile: join(dir, 'ca.crt'), tokenFile: join(dir, 'token') });
    } finally {
      process.env = saved;
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('mesh-agent: one source only; in-cluster outside a pod fails naming why', async () => {
    const agent = resolve(import.meta.dirname, '../../bin/mesh-agent.mjs');
    const run = async (args: string[]) => {
      try {
        const r = await promisify(execFile)(process.execPath, [agent, ...args], { timeout: 10_000, env: { ...process.env, KUBERNETES_SERVICE_HOST: '' } });
        return { code: 0, stderr: r.stderr };
      } catch (err) {
        return err as { code: number; stderr: string };
      }
    };
    const both = await run(['--config', 'x.yaml', '--kubernetes']);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/give one of --config, --kubeconfig and --kubernetes/);
    const check = await run(['--kubeconfig', 'k', '--check']);
    expect(check.code).toBe(2);
    const outside = await run(['--kubernetes', '--cgroup-root', '/nonexistent-kubepods']);
    expect(outside.code).toBe(1);
    expect(outside.stderr).toMatch(/in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set/);
  }, 30_000);
});
