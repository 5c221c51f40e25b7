// The machine's kubectl (v1.32, preinstalled on every machine of this kind) drives the test API server over
// HTTPS with the client certificate from the kubeconfig the server wrote: discovery, OpenAPI, create, get,
// replace, merge patch, client-side apply (strategic merge for a Service, JSON merge for an HTTPRoute), delete.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  findTool, KubeApiServer, processes, run, stopProcess, uniqueName, waitForLine, writeKubeconfig, type ExecResult, type KubeObject,
} from '../../src/index.js';

let server: KubeApiServer;
let dir: string;

beforeAll(async () => {
  if (findTool('kubectl') === undefined) throw new Error('kubectl not found on PATH: machines of this kind have it at /usr/bin/kubectl');
  server = await KubeApiServer.start();
  dir = mkdtempSync(join(tmpdir(), 'mesh-kubectl-'));
});

afterAll(async () => {
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function base(kubeconfig = server.kubeconfigPath): string[] {
  return ['--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache'), '--request-timeout', '20s'];
}

function kubectl(args: string[], opts: { kubeconfig?: string } = {}): Promise<ExecResult> {
  return run('kubectl', [...base(opts.kubeconfig), ...args], { timeoutMs: 40_000 });
}

async function ok(args: string[]): Promise<string> {
  const r = await kubectl(args);
  expect(r.code, `kubectl ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

/** Write a manifest (a stream of JSON objects, which kubectl reads like YAML documents) and return its path. */
function manifest(name: string, ...objects: object[]): string {
  const path = join(dir, `${name}.yaml`);
  writeFileSync(path, objects.map((o) => JSON.stringify(o, null, 2)).join('\n'));
  return path;
}

async function namespace(): Promise<string> {
  const ns = uniqueName('kctl', 40);
  // `create -f`, not `create namespace`: kubectl's generator subcommands send protobuf, which this server refuses.
  const created = await ok(['create', '-f', manifest(ns, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } })]);
  expect(created).toContain(`namespace/${ns} created`);
  return ns;
}

function svc(ns: string, ports: number[], labels: Record<string, string> = { app: 'reviews' }): KubeObject {
  return {
    apiVersion: 'v1', kind: 'Service', metadata: { name: 'reviews', namespace: ns, labels },
    spec: { selector: { app: 'reviews' }, ports: ports.map((port) => ({ name: `p${port}`, port })) },
  };
}

function route(ns: string, weights: [number, number]): KubeObject {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'reviews', namespace: ns },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: 'reviews', port: 9080 }],
      rules: [{ backendRefs: [{ name: 'reviews-v1', port: 9080, weight: weights[0] }, { name: 'reviews-v2', port: 9080, weight: weights[1] }] }],
    },
  };
}

const SVC = { apiVersion: 'v1', kind: 'Service' };
const ROUTE = { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute' };
const weightsOf = (o: KubeObject | undefined): unknown =>
  ((o?.spec as any)?.rules?.[0]?.backendRefs as { weight: number }[] | undefined)?.map((b) => b.weight);

describe('kubectl against the test API server', () => {
  it('reads discovery and version, and authenticates with the client certificate', async () => {
    const version = JSON.parse(await ok(['version', '-o', 'json']));
    expect(version.serverVersion.gitVersion).toBe('v1.32.0-mesh-test');
    expect(await ok(['get', 'namespaces', '-o', 'name'])).toContain('namespace/default');
    expect(await ok(['api-resources', '--no-headers', '-o', 'name'])).toMatch(/httproutes\.gateway\.networking\.k8s\.io[\s\S]*peerauthentications\.security\.istio\.io/);
    const mine = server.requests.filter((r) => r.url.startsWith('/api/v1/namespaces'));
    expect(mine.length).toBeGreaterThan(0);
    expect(mine.every((r) => r.user === 'mesh-test' && r.groups.includes('system:masters'))).toBe(true);

    // The same server and CA with a bearer token and no client certificate: the apiserver's 401.
    const anonymous = join(dir, 'token.kubeconfig');
    writeKubeconfig(anonymous, { server: server.url, ca: server.pki!.ca.cert, token: 'not-a-client-certificate' });
    const r = await kubectl(['get', 'namespaces'], { kubeconfig: anonymous });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('Unauthorized');
  });

  it('create -f, get with selectors, replace -f (and a stale replace: Conflict), patch --type=merge and --type=json, delete', async () => {
    const ns = await namespace();
    const out = await ok(['create', '-f', manifest('create', svc(ns, [9080]), route(ns, [90, 10]))]);
    expect(out).toContain('service/reviews created');
    expect(out).toContain('httproute.gateway.networking.k8s.io/reviews created');
    const created = server.get({ ...SVC, metadata: { name: 'reviews', namespace: ns } })!;
    expect((created.spec as any).clusterIP).toMatch(/^127\.96\./);

    expect(await ok(['get', 'svc', '-n', ns, '-l', 'app=reviews', '-o', 'name'])).toBe('service/reviews\n');
    expect(await ok(['get', 'svc', '-n', ns, '-l', 'app notin (reviews)', '-o', 'name'])).toBe('');
    expect(await ok(['get', 'httproutes', '-n', ns, '--field-selector', 'metadata.name=reviews', '-o', 'name'])).toBe('httproute.gateway.networking.k8s.io/reviews\n');
    const fetched = JSON.parse(await ok(['get', 'httproute', 'reviews', '-n', ns, '-o', 'json']));
    expect(weightsOf(fetched)).toEqual([90, 10]);

    // replace what was read, with new weights: generation moves on.
    const stale = structuredClone(fetched);
    (fetched.spec.rules[0].backendRefs as { weight: number }[]).forEach((b, i) => (b.weight = [70, 30][i]!));
    expect(await ok(['replace', '-f', manifest('replace', fetched)])).toContain('replaced');
    const replaced = server.get({ ...ROUTE, metadata: { name: 'reviews', namespace: ns } });
    expect(weightsOf(replaced)).toEqual([70, 30]);
    expect(replaced!.metadata.generation).toBe(2);

    // The resourceVersion read before that replace is stale now.
    (stale.spec.rules[0].backendRefs as { weight: number }[])[0]!.weight = 1;
    const conflict = await kubectl(['replace', '-f', manifest('stale', stale)]);
    expect(conflict.code).not.toBe(0);
    expect(conflict.stderr).toContain('Conflict');
    expect(conflict.stderr).toContain('the object has been modified');

    const patch = JSON.stringify({ spec: { rules: [{ backendRefs: [{ name: 'reviews-v1', port: 9080, weight: 0 }, { name: 'reviews-v2', port: 9080, weight: 100 }] }] } });
    expect(await ok(['patch', 'httproute', 'reviews', '-n', ns, '--type=merge', '-p', patch])).toContain('patched');
    expect(weightsOf(server.get({ ...ROUTE, metadata: { name: 'reviews', namespace: ns } }))).toEqual([0, 100]);
    const jsonPatch = JSON.stringify([{ op: 'replace', path: '/spec/rules/0/backendRefs/0/weight', value: 20 }, { op: 'replace', path: '/spec/rules/0/backendRefs/1/weight', value: 80 }]);
    expect(await ok(['patch', 'httproute', 'reviews', '-n', ns, '--type=json', '-p', jsonPatch])).toContain('patched');
    expect(weightsOf(server.get({ ...ROUTE, metadata: { name: 'reviews', namespace: ns } }))).toEqual([20, 80]);
    await ok(['patch', 'svc', 'reviews', '-n', ns, '--type=merge', '-p', '{"metadata":{"labels":{"tier":"backend"}}}']);
    expect(server.get({ ...SVC, metadata: { name: 'reviews', namespace: ns } })!.metadata.labels).toEqual({ app: 'reviews', tier: 'backend' });

    expect(await ok(['delete', 'httproute', 'reviews', '-n', ns])).toContain('deleted');
    expect(await ok(['delete', '-f', manifest('delete', svc(ns, [9080]))])).toContain('service "reviews" deleted');
    expect(server.list(SVC, ns)).toEqual([]);
    const gone = await kubectl(['get', 'httproute', 'reviews', '-n', ns]);
    expect(gone.stderr).toContain('NotFound');
  });

  it('get prints the server\'s columns (Table), and get -w prints each change as it happens', async () => {
    const ns = await namespace();
    await ok(['create', '-f', manifest('tables', svc(ns, [9080]), route(ns, [90, 10]))]);
    const clusterIP = (server.get({ ...SVC, metadata: { name: 'reviews', namespace: ns } })!.spec as any).clusterIP as string;
    const lines = (await ok(['get', 'svc', '-n', ns, '-o', 'wide'])).trim().split('\n').map((l) => l.split(/\s+/));
    expect(lines[0]).toEqual(['NAME', 'TYPE', 'CLUSTER-IP', 'EXTERNAL-IP', 'PORT(S)', 'AGE', 'SELECTOR']);
    expect(lines[1]).toEqual(['reviews', 'ClusterIP', clusterIP, '<none>', '9080/TCP', expect.stringMatching(/^\d+s$/), 'app=reviews']);

    const watching = processes.spawn('kubectl', [...base(), 'get', 'httproutes', '-n', ns, '-w', '--output-watch-events']);
    try {
      await waitForLine(watching, /^ADDED\s+reviews\s/, 20_000);
      await ok(['patch', 'httproute', 'reviews', '-n', ns, '--type=merge', '-p', '{"spec":{"hostnames":["reviews.example"]}}']);
      await waitForLine(watching, /^MODIFIED\s+reviews\s+reviews\.example\s/, 20_000);
      await ok(['delete', 'httproute', 'reviews', '-n', ns]);
      await waitForLine(watching, /^DELETED\s+reviews\s/, 20_000);
    } finally {
      await stopProcess(watching);
    }
  });

  it('apply -f creates, then applies changes three-way: strategic merge for the Service, JSON merge for the HTTPRoute', async () => {
    const ns = await namespace();
    const first = await ok(['apply', '-f', manifest('apply1', svc(ns, [9080, 9443], { app: 'reviews', stage: 'canary' }), route(ns, [90, 10]))]);
    expect(first).toContain('service/reviews created');
    const applied = server.get({ ...SVC, metadata: { name: 'reviews', namespace: ns } })!;
    expect(applied.metadata.annotations?.['kubectl.kubernetes.io/last-applied-configuration']).toContain('"stage":"canary"');

    // Drop a port and a label, change the weights; a label set by someone else (not in the manifest) stays.
    await ok(['label', 'svc', 'reviews', '-n', ns, 'owner=ops']);
    const second = await ok(['apply', '-f', manifest('apply2', svc(ns, [9080, 9090]), route(ns, [50, 50]))]);
    expect(second).toContain('service/reviews configured');
    expect(second).toContain('httproute.gateway.networking.k8s.io/reviews configured');
    const service = server.get({ ...SVC, metadata: { name: 'reviews', namespace: ns } })!;
    expect((service.spec as any).ports.map((p: { port: number; targetPort: number }) => [p.port, p.targetPort])).toEqual([[9080, 9080], [9090, 9090]]);
    expect(service.metadata.labels).toEqual({ app: 'reviews', owner: 'ops' });
    expect((service.spec as any).clusterIP).toBe((applied.spec as any).clusterIP);
    expect(weightsOf(server.get({ ...ROUTE, metadata: { name: 'reviews', namespace: ns } }))).toEqual([50, 50]);
    const patches = server.requests.filter((r) => r.method === 'PATCH' && r.url.includes(`/namespaces/${ns}/`) && r.url.includes('kubectl-client-side-apply'));
    expect(patches.map((r) => [new URL(r.url, 'http://x').pathname.split('/').at(-2), r.contentType, r.status])).toEqual([
      ['services', 'application/strategic-merge-patch+json', 200],
      ['httproutes', 'application/merge-patch+json', 200],
    ]);

    const rv = server.store.resourceVersion;
    expect(await ok(['apply', '-f', manifest('apply3', svc(ns, [9080, 9090]), route(ns, [50, 50]))])).toContain('service/reviews unchanged');
    expect(server.store.resourceVersion).toBe(rv);
  });
});
