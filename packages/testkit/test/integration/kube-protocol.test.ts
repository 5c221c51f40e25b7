// The test API server's wire protocol, checked with a raw HTTP client: discovery documents, status codes and
// Status bodies, one global resourceVersion, selectors, paging, and the watch stream (replay, bookmarks,
// selector moves, timeouts, both forms of 410, stalls). Plain HTTP on loopback; kubectl covers HTTPS.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeApiServer, uniqueName, type KubeObject } from '../../src/index.js';
import { call, waitFor, watch, type OpenWatch } from './kube-client.js';

const WAIT_MS = 10_000;
let server: KubeApiServer;
const open: OpenWatch[] = [];

beforeAll(async () => {
  server = await KubeApiServer.start({ tls: false });
});

afterAll(async () => {
  for (const w of open) w.close();
  await server?.close();
});

async function namespace(): Promise<string> {
  const name = uniqueName('proto', 40);
  expect((await call(server, 'POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name } })).status).toBe(201);
  return name;
}

function svc(name: string, labels: Record<string, string> = {}, port = 80): KubeObject {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, labels }, spec: { ports: [{ port }] } };
}

function pod(name: string, nodeName: string): KubeObject {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name }, spec: { nodeName, containers: [{ name: 'c', image: 'x' }] } };
}

const route = (name: string, weight: number): KubeObject => ({
  apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name },
  spec: { rules: [{ backendRefs: [{ name: 'v1', port: 80, weight }] }] },
});

async function opened(path: string): Promise<OpenWatch> {
  const w = await watch(server, path);
  open.push(w);
  return w;
}

describe('discovery', () => {
  it('serves /api, /api/v1, /apis and each group version, as client-go reads them', async () => {
    expect((await call(server, 'GET', '/api')).body).toMatchObject({ kind: 'APIVersions', versions: ['v1'] });
    const core = (await call(server, 'GET', '/api/v1')).body;
    expect(core).toMatchObject({ kind: 'APIResourceList', groupVersion: 'v1' });
    expect(core.resources.find((r: { name: string }) => r.name === 'pods')).toEqual({
      name: 'pods', singularName: 'pod', namespaced: true, kind: 'Pod', shortNames: ['po'],
      verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
    });
    const groups = (await call(server, 'GET', '/apis')).body;
    expect(groups.kind).toBe('APIGroupList');
    expect(groups.groups.map((g: { name: string }) => g.name).sort()).toEqual(['discovery.k8s.io', 'gateway.networking.k8s.io', 'security.istio.io']);
    const istio = (await call(server, 'GET', '/apis/security.istio.io/v1')).body;
    expect(istio.resources.map((r: { name: string; kind: string; namespaced: boolean }) => [r.name, r.kind, r.namespaced])).toEqual([
      ['peerauthentications', 'PeerAuthentication', true], ['peerauthentications/status', 'PeerAuthentication', true],
      ['authorizationpolicies', 'AuthorizationPolicy', true], ['authorizationpolicies/status', 'AuthorizationPolicy', true],
    ]);
    expect((await call(server, 'GET', '/apis/discovery.k8s.io')).body.preferredVersion).toEqual({ groupVersion: 'discovery.k8s.io/v1', version: 'v1' });
    expect((await call(server, 'GET', '/version')).body.gitVersion).toBe('v1.32.0-mesh-test');
    const missing = await call(server, 'GET', '/apis/example.com/v1');
    expect(missing.status).toBe(404);
    expect(missing.body).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'NotFound', code: 404 });
  });
});

describe('options', () => {
  it('bad options are refused before anything is made, naming the option', async () => {
    await expect(KubeApiServer.start({ tls: false, bookmarkIntervalMs: 0 })).rejects.toThrow('bookmarkIntervalMs must be at least 10, got 0');
    await expect(KubeApiServer.start({ tls: false, port: 70000 })).rejects.toThrow('port must be an integer in 0..65535, got 70000');
    await expect(KubeApiServer.start({ tls: false, historyLimit: 0 })).rejects.toThrow('historyLimit must be a positive integer, got 0');
    await expect(KubeApiServer.start({ tls: false, expiredForm: 'both' as 'http' })).rejects.toThrow("expiredForm must be 'http' or 'event'");
    await expect(KubeApiServer.start({ tls: false, serviceClusterIPRange: '10.0.0.0' })).rejects.toThrow('serviceClusterIPRange must be an IPv4 CIDR');
  });
});

describe('objects', () => {
  it('create sets uid, creationTimestamp, resourceVersion and generation from one global counter; errors are Status objects', async () => {
    const ns = await namespace();
    const before = server.store.resourceVersion;
    const created = await call(server, 'POST', `/api/v1/namespaces/${ns}/services`, svc('a'));
    expect(created.status).toBe(201);
    const meta = created.body.metadata;
    expect(meta).toMatchObject({ name: 'a', namespace: ns, resourceVersion: String(before + 1), generation: 1 });
    expect(meta.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(meta.creationTimestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const r2 = await call(server, 'POST', `/apis/gateway.networking.k8s.io/v1/namespaces/${ns}/httproutes`, route('a', 1));
    expect(r2.body.metadata.resourceVersion).toBe(String(before + 2));

    const dup = await call(server, 'POST', `/api/v1/namespaces/${ns}/services`, svc('a'));
    expect([dup.status, dup.body.reason, dup.body.message]).toEqual([409, 'AlreadyExists', 'services "a" already exists']);
    const noNs = await call(server, 'POST', '/api/v1/namespaces/nowhere/services', svc('a'));
    expect([noNs.status, noNs.body.message]).toEqual([404, 'namespaces "nowhere" not found']);
    const badName = await call(server, 'POST', `/api/v1/namespaces/${ns}/services`, svc('Bad_Name'));
    expect([badName.status, badName.body.reason]).toEqual([422, 'Invalid']);
    expect(badName.body.message).toContain('metadata.name');
    const wrongNs = await call(server, 'POST', `/api/v1/namespaces/${ns}/services`, { ...svc('b'), metadata: { name: 'b', namespace: 'other' } });
    expect([wrongNs.status, wrongNs.body.reason]).toEqual([400, 'BadRequest']);
    const wrongKind = await call(server, 'POST', `/api/v1/namespaces/${ns}/services`, { ...svc('b'), kind: 'Pod' });
    expect(wrongKind.body.message).toContain('does not match the expected kind (Service)');
    const notJson = await call(server, 'POST', `/api/v1/namespaces/${ns}/services`, '{"kind":');
    expect([notJson.status, notJson.body.reason]).toEqual([400, 'BadRequest']);
    expect(server.store.resourceVersion).toBe(before + 2);
  });

  it('replace: 409 on a stale resourceVersion, no write when nothing changes, generation only for spec changes', async () => {
    const ns = await namespace();
    const path = `/apis/gateway.networking.k8s.io/v1/namespaces/${ns}/httproutes/r`;
    const v1 = (await call(server, 'POST', `/apis/gateway.networking.k8s.io/v1/namespaces/${ns}/httproutes`, route('r', 1))).body;
    const v2 = await call(server, 'PUT', path, { ...v1, spec: route('r', 2).spec });
    expect([v2.status, v2.body.metadata.generation]).toEqual([200, 2]);
    const stale = await call(server, 'PUT', path, { ...v1, spec: route('r', 3).spec });
    expect([stale.status, stale.body.reason]).toEqual([409, 'Conflict']);
    expect(stale.body.message).toBe('Operation cannot be fulfilled on httproutes.gateway.networking.k8s.io "r": the object has been modified; please apply your changes to the latest version and try again');
    const same = await call(server, 'PUT', path, v2.body);
    expect(same.body.metadata.resourceVersion).toBe(v2.body.metadata.resourceVersion);
    const labelled = await call(server, 'PUT', path, { ...v2.body, metadata: { ...v2.body.metadata, labels: { x: 'y' } } });
    expect(labelled.body.metadata.generation).toBe(2);
    expect(Number(labelled.body.metadata.resourceVersion)).toBeGreaterThan(Number(v2.body.metadata.resourceVersion));
    const renamed = await call(server, 'PUT', path, { ...v2.body, metadata: { ...v2.body.metadata, name: 'other' } });
    expect(renamed.status).toBe(400);
  });

  it('patch: JSON merge patch everywhere, strategic merge for built-ins only; delete answers Status or the object', async () => {
    const ns = await namespace();
    await call(server, 'POST', `/api/v1/namespaces/${ns}/services`, svc('s', { a: '1', b: '2' }));
    const merged = await call(server, 'PATCH', `/api/v1/namespaces/${ns}/services/s`, { metadata: { labels: { a: null, c: '3' } } }, { contentType: 'application/merge-patch+json' });
    expect(merged.body.metadata.labels).toEqual({ b: '2', c: '3' });
    const smp = await call(server, 'PATCH', `/api/v1/namespaces/${ns}/services/s`, { spec: { ports: [{ port: 443 }] } }, { contentType: 'application/strategic-merge-patch+json' });
    expect(smp.body.spec.ports.map((p: { port: number }) => p.port)).toEqual([80, 443]);
    const clusterIP = smp.body.spec.clusterIP;

    await call(server, 'POST', `/apis/gateway.networking.k8s.io/v1/namespaces/${ns}/httproutes`, route('r', 1));
    const refused = await call(server, 'PATCH', `/apis/gateway.networking.k8s.io/v1/namespaces/${ns}/httproutes/r`, {}, { contentType: 'application/strategic-merge-patch+json' });
    expect([refused.status, refused.body.reason]).toEqual([415, 'UnsupportedMediaType']);
    const routePath = `/apis/gateway.networking.k8s.io/v1/namespaces/${ns}/httproutes/r`;
    const weight = '/spec/rules/0/backendRefs/0/weight';
    const jp = await call(server, 'PATCH', routePath, [{ op: 'test', path: weight, value: 1 }, { op: 'replace', path: weight, value: 7 }], { contentType: 'application/json-patch+json' });
    expect(jp.body.spec.rules[0].backendRefs[0].weight).toBe(7);
    const failed = await call(server, 'PATCH', routePath, [{ op: 'replace', path: weight, value: 8 }, { op: 'test', path: weight, value: 1 }], { contentType: 'application/json-patch+json' });
    expect([failed.status, failed.body.reason]).toEqual([422, 'Invalid']);
    expect(failed.body.message).toContain('json patch operation 1');
    expect((await call(server, 'GET', routePath)).body.metadata.resourceVersion).toBe(jp.body.metadata.resourceVersion);
    const apply = await call(server, 'PATCH', routePath, 'kind: HTTPRoute', { contentType: 'application/apply-patch+yaml' });
    expect(apply.status).toBe(415);
    const missing = await call(server, 'PATCH', `/api/v1/namespaces/${ns}/services/nope`, {}, { contentType: 'application/merge-patch+json' });
    expect(missing.status).toBe(404);

    const gone = await call(server, 'DELETE', `/api/v1/namespaces/${ns}/services/s`);
    expect(gone.body).toMatchObject({ kind: 'Status', status: 'Success', details: { name: 's', kind: 'services' } });
    const goneRoute = await call(server, 'DELETE', `/apis/gateway.networking.k8s.io/v1/namespaces/${ns}/httproutes/r`);
    expect(goneRoute.body).toMatchObject({ kind: 'HTTPRoute', metadata: { name: 'r' } });
    expect((await call(server, 'GET', `/api/v1/namespaces/${ns}/services/s`)).status).toBe(404);
    expect((await call(server, 'DELETE', `/api/v1/namespaces/${ns}/services/s`)).status).toBe(404);
    // A new Service gets the freed cluster IP back only when nothing else holds it; here it is free.
    const again = await call(server, 'POST', `/api/v1/namespaces/${ns}/services`, svc('s2'));
    expect(again.body.spec.clusterIP).toBe(clusterIP);
  });

  it('status is a subresource: writes to the object keep it, writes to /status change only it', async () => {
    const ns = await namespace();
    const base = `/api/v1/namespaces/${ns}/pods`;
    const created = await call(server, 'POST', base, { ...pod('p', 'n1'), status: { phase: 'Running' } });
    expect(created.body.status).toBeUndefined();
    // The kubelet's part, done programmatically.
    const running = server.replace({ ...created.body, status: { phase: 'Running', podIP: '127.0.0.9' } });
    const put = await call(server, 'PUT', `${base}/p`, { ...running, metadata: { ...running.metadata, labels: { a: 'b' } }, status: { phase: 'Failed' } });
    expect([put.body.metadata.labels, put.body.status.phase]).toEqual([{ a: 'b' }, 'Running']);
    const statusPut = await call(server, 'PUT', `${base}/p/status`, { ...put.body, spec: { nodeName: 'elsewhere' }, status: { phase: 'Succeeded' } });
    expect([statusPut.status, statusPut.body.spec.nodeName, statusPut.body.status.phase, statusPut.body.metadata.generation]).toEqual([200, 'n1', 'Succeeded', 1]);
    const stale = await call(server, 'PUT', `${base}/p/status`, put.body);
    expect(stale.status).toBe(409);
    const patched = await call(server, 'PATCH', `${base}/p/status`, { status: { podIP: '127.0.0.10' }, metadata: { labels: { c: 'd' } } }, { contentType: 'application/merge-patch+json' });
    expect([patched.body.status, patched.body.metadata.labels]).toEqual([{ phase: 'Succeeded', podIP: '127.0.0.10' }, { a: 'b' }]);
    const mainPatch = await call(server, 'PATCH', `${base}/p`, { status: { phase: 'Unknown' } }, { contentType: 'application/merge-patch+json' });
    expect(mainPatch.body.status.phase).toBe('Succeeded');
    expect((await call(server, 'DELETE', `${base}/p/status`)).status).toBe(405);
    expect((await call(server, 'GET', `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices/x/status`)).status).toBe(404);
    const core = (await call(server, 'GET', '/api/v1')).body;
    expect(core.resources.find((r: { name: string }) => r.name === 'pods/status')).toMatchObject({ kind: 'Pod', verbs: ['get', 'patch', 'update'] });
  });

  it('list: the global resourceVersion, label and field selectors, type meta on custom resource items only, consistent pages', async () => {
    const ns = await namespace();
    for (const [name, node] of [['p1', 'n1'], ['p2', 'n2'], ['p3', 'n1']]) await call(server, 'POST', `/api/v1/namespaces/${ns}/pods`, { ...pod(name!, node!), metadata: { name, labels: { app: name === 'p2' ? 'b' : 'a' } } });
    await call(server, 'POST', `/apis/gateway.networking.k8s.io/v1/namespaces/${ns}/httproutes`, route('r', 1));
    const names = (body: { items: KubeObject[] }): string[] => body.items.map((o) => o.metadata.name!);

    const all = (await call(server, 'GET', `/api/v1/namespaces/${ns}/pods`)).body;
    expect(all).toMatchObject({ kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(server.store.resourceVersion) } });
    expect(names(all)).toEqual(['p1', 'p2', 'p3']);
    expect(all.items[0].kind).toBeUndefined();
    expect((await call(server, 'GET', `/apis/gateway.networking.k8s.io/v1/namespaces/${ns}/httproutes`)).body.items[0].kind).toBe('HTTPRoute');

    const q = async (query: string): Promise<string[]> => names((await call(server, 'GET', `/api/v1/namespaces/${ns}/pods?${query}`)).body);
    expect(await q('fieldSelector=spec.nodeName%3Dn1')).toEqual(['p1', 'p3']);
    expect(await q('fieldSelector=spec.nodeName%21%3Dn1,metadata.name%3Dp2')).toEqual(['p2']);
    expect(await q('labelSelector=app%3Da')).toEqual(['p1', 'p3']);
    expect(await q('labelSelector=app+in+(b,c)')).toEqual(['p2']);
    expect(await q('labelSelector=!app')).toEqual([]);
    const cluster = (await call(server, 'GET', `/api/v1/pods?fieldSelector=metadata.namespace%3D${ns},spec.nodeName%3Dn2`)).body;
    expect(names(cluster)).toEqual(['p2']);
    const badField = await call(server, 'GET', `/api/v1/namespaces/${ns}/services?fieldSelector=spec.nodeName%3Dn1`);
    expect([badField.status, badField.body.message]).toEqual([400, 'field label not supported: spec.nodeName (for services: metadata.name, metadata.namespace)']);
    expect((await call(server, 'GET', `/api/v1/namespaces/${ns}/pods?labelSelector=a+%3E+b`)).status).toBe(400);
    for (const bad of ['resourceVersion=abc', 'limit=-1', 'watch=true&timeoutSeconds=x', 'watch=true&resourceVersion=1.5']) {
      const r = await call(server, 'GET', `/api/v1/namespaces/${ns}/pods?${bad}`);
      expect([bad, r.status, r.body.reason]).toEqual([bad, 400, 'BadRequest']);
    }
    const ahead = await call(server, 'GET', `/api/v1/namespaces/${ns}/pods?resourceVersion=${server.store.resourceVersion + 5}`);
    expect([ahead.status, ahead.body.details.causes[0].reason]).toEqual([504, 'ResourceVersionTooLarge']);

    // Pages come from one snapshot: a pod created between them does not appear, the resourceVersion holds.
    const p1 = (await call(server, 'GET', `/api/v1/namespaces/${ns}/pods?limit=2`)).body;
    expect([names(p1), p1.metadata.remainingItemCount]).toEqual([['p1', 'p2'], 1]);
    await call(server, 'POST', `/api/v1/namespaces/${ns}/pods`, pod('p0', 'n1'));
    const p2 = (await call(server, 'GET', `/api/v1/namespaces/${ns}/pods?limit=2&continue=${p1.metadata.continue}`)).body;
    expect([names(p2), p2.metadata.continue, p2.metadata.resourceVersion]).toEqual([['p3'], undefined, p1.metadata.resourceVersion]);
    // A continue token outlives no compaction past its list.
    const p1b = (await call(server, 'GET', `/api/v1/namespaces/${ns}/pods?limit=1`)).body;
    await call(server, 'POST', `/api/v1/namespaces/${ns}/pods`, pod('p9', 'n1'));
    server.compact();
    const expired = await call(server, 'GET', `/api/v1/namespaces/${ns}/pods?limit=1&continue=${p1b.metadata.continue}`);
    expect([expired.status, expired.body.reason]).toEqual([410, 'Expired']);
  });
});

describe('watch', () => {
  it('without a resourceVersion: the current objects as ADDED, then every change; DELETED carries a new resourceVersion', async () => {
    const ns = await namespace();
    server.create({ ...svc('a'), metadata: { name: 'a', namespace: ns } });
    const w = await opened(`/api/v1/namespaces/${ns}/services?watch=true`);
    expect(w.status).toBe(200);
    await waitFor(() => w.events.length === 1, WAIT_MS, 'the initial ADDED');
    const b = server.create({ ...svc('b'), metadata: { name: 'b', namespace: ns } });
    server.replace({ ...b, spec: { ports: [{ port: 81 }] } });
    const del = server.delete(b);
    await waitFor(() => w.events.length === 4, WAIT_MS, 'three more events');
    expect(w.events.map((e) => `${e.type} ${e.object.metadata.name}`)).toEqual(['ADDED a', 'ADDED b', 'MODIFIED b', 'DELETED b']);
    expect(w.events[3]!.object.metadata.resourceVersion).toBe(del.metadata.resourceVersion);
    expect(w.events[1]!.object.kind).toBe('Service');
  });

  it('from a resourceVersion: exactly the changes after it, in order; other namespaces and kinds are not sent', async () => {
    const ns = await namespace();
    const other = await namespace();
    const a = server.create({ ...svc('a'), metadata: { name: 'a', namespace: ns } });
    server.create({ ...svc('x'), metadata: { name: 'x', namespace: other } });
    server.create({ ...route('a', 1), metadata: { name: 'a', namespace: ns } });
    server.replace({ ...a, metadata: { ...a.metadata, labels: { v: '2' } } });
    server.create({ ...svc('b'), metadata: { name: 'b', namespace: ns } });
    const w = await opened(`/api/v1/namespaces/${ns}/services?watch=1&resourceVersion=${a.metadata.resourceVersion}`);
    await waitFor(() => w.events.length === 2, WAIT_MS, 'two replayed events');
    await sleep(100);
    expect(w.events.map((e) => `${e.type} ${e.object.metadata.name}`)).toEqual(['MODIFIED a', 'ADDED b']);
  });

  it('from a resourceVersion not reached yet: only the changes after it', async () => {
    const ns = await namespace();
    const ahead = server.store.resourceVersion + 2;
    const w = await opened(`/api/v1/namespaces/${ns}/services?watch=true&resourceVersion=${ahead}`);
    for (const name of ['a', 'b', 'c']) server.create({ ...svc(name), metadata: { name, namespace: ns } });
    await waitFor(() => w.events.length === 1, WAIT_MS, 'one event');
    await sleep(100);
    expect(w.events.map((e) => e.object.metadata.name)).toEqual(['c']);
  });

  it('bookmarks only when asked: on demand, every interval, and marking the end of sendInitialEvents', async () => {
    const ns = await namespace();
    server.create({ ...svc('a'), metadata: { name: 'a', namespace: ns } });
    const rv = server.store.resourceVersion;
    const asked = await opened(`/api/v1/namespaces/${ns}/services?watch=true&resourceVersion=${rv}&allowWatchBookmarks=true`);
    const plain = await opened(`/api/v1/namespaces/${ns}/services?watch=true&resourceVersion=${rv}`);
    server.sendBookmarks();
    await waitFor(() => asked.events.length === 1, WAIT_MS, 'a bookmark');
    expect(asked.events[0]).toEqual({ type: 'BOOKMARK', object: { apiVersion: 'v1', kind: 'Service', metadata: { resourceVersion: String(rv) } } });
    await sleep(100);
    expect(plain.events).toEqual([]);

    const initial = await opened(`/api/v1/namespaces/${ns}/services?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan`);
    await waitFor(() => initial.events.length === 2, WAIT_MS, 'ADDED then the initial-events-end bookmark');
    expect(initial.events.map((e) => e.type)).toEqual(['ADDED', 'BOOKMARK']);
    expect(initial.events[1]!.object.metadata.annotations).toEqual({ 'k8s.io/initial-events-end': 'true' });

    await using quick = await KubeApiServer.start({ tls: false, bookmarkIntervalMs: 100 });
    const periodic = await watch(quick, '/api/v1/namespaces/default/services?watch=true&allowWatchBookmarks=true');
    try {
      await waitFor(() => periodic.events.filter((e) => e.type === 'BOOKMARK').length >= 3, WAIT_MS, 'three periodic bookmarks');
    } finally {
      periodic.close();
    }
  });

  it('an object relabelled out of a label selector is DELETED to that watch, and ADDED when it comes back', async () => {
    const ns = await namespace();
    const a = server.create({ ...svc('a', { mesh: 'on' }), metadata: { name: 'a', namespace: ns, labels: { mesh: 'on' } } });
    const w = await opened(`/api/v1/namespaces/${ns}/services?watch=true&labelSelector=mesh%3Don`);
    await waitFor(() => w.events.length === 1, WAIT_MS, 'the initial ADDED');
    const off = server.replace({ ...a, metadata: { ...a.metadata, resourceVersion: undefined, labels: { mesh: 'off' } } });
    server.replace({ ...off, metadata: { ...off.metadata, resourceVersion: undefined, labels: { mesh: 'off', x: '1' } } });
    server.replace({ ...off, metadata: { ...off.metadata, resourceVersion: undefined, labels: { mesh: 'on' } } });
    await waitFor(() => w.events.length === 3, WAIT_MS, 'DELETED then ADDED');
    expect(w.events.map((e) => e.type)).toEqual(['ADDED', 'DELETED', 'ADDED']);
  });

  it('timeoutSeconds ends the response cleanly', async () => {
    const started = Date.now();
    const w = await opened('/api/v1/namespaces/default/services?watch=true&timeoutSeconds=1');
    expect(await w.ended).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });

  it('a compacted resourceVersion is refused with HTTP 410, or with HTTP 200 and an ERROR event holding a 410 Status', async () => {
    const ns = await namespace();
    const a = server.create({ ...svc('a'), metadata: { name: 'a', namespace: ns } });
    server.create({ ...svc('b'), metadata: { name: 'b', namespace: ns } });
    server.compact();
    const path = `/api/v1/namespaces/${ns}/services?watch=true&resourceVersion=${a.metadata.resourceVersion}`;
    const message = `too old resource version: ${a.metadata.resourceVersion} (${server.store.compactedResourceVersion})`;
    server.expiredForm = 'http';
    try {
      const http = await call(server, 'GET', path);
      expect(http.status).toBe(410);
      expect(http.body).toEqual({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason: 'Expired', code: 410 });
    } finally {
      server.expiredForm = 'event';
    }
    const w = await opened(path);
    expect(w.status).toBe(200);
    expect(await w.ended).toBe(true);
    expect(w.events).toEqual([{ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason: 'Expired', code: 410 } }]);
    // From the compacted point itself nothing is missing.
    const fine = await opened(`/api/v1/namespaces/${ns}/services?watch=true&resourceVersion=${server.store.compactedResourceVersion}`);
    expect(fine.status).toBe(200);
  });

  it('the history is bounded: a watch from before the last historyLimit changes gets 410', async () => {
    await using small = await KubeApiServer.start({ tls: false, historyLimit: 5 });
    const first = small.create(svc('s0'));
    for (let i = 1; i <= 5; i++) small.create(svc(`s${i}`));
    const rv = Number(first.metadata.resourceVersion);
    expect(small.store.compactedResourceVersion).toBe(rv);
    const fine = await watch(small, `/api/v1/namespaces/default/services?watch=true&resourceVersion=${rv}`);
    fine.close();
    expect(fine.status).toBe(200);
    const w = await watch(small, `/api/v1/namespaces/default/services?watch=true&resourceVersion=${rv - 1}`);
    expect(await w.ended).toBe(true);
    expect(w.events[0]).toMatchObject({ type: 'ERROR', object: { code: 410 } });
  });

  it('a stalled watch stays open and silent; dropWatches ends it', async () => {
    const ns = await namespace();
    const w = await opened(`/api/v1/namespaces/${ns}/services?watch=true&resourceVersion=${server.store.resourceVersion}&timeoutSeconds=1`);
    await waitFor(() => server.watches.length > 0, WAIT_MS, 'the watch to register');
    server.stallWatches();
    server.create({ ...svc('a'), metadata: { name: 'a', namespace: ns } });
    let ended = false;
    void w.ended.then(() => (ended = true));
    // Past its timeoutSeconds: a stalled watch does not even time out.
    await sleep(1500);
    expect([ended, w.events]).toEqual([false, []]);
    server.dropWatches();
    expect(await w.ended).toBe(true);
  });
});
