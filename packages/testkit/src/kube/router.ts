// Request handling: URL → discovery document or resource verb, query parameters as the apiserver reads them,
// bodies as JSON, every error as a Status. Transport, TLS and the test switches live in server.ts.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { openapiV2, openapiV3Doc, openapiV3Root } from './openapi.js';
import { jsonPatch, mergePatch, strategicMergePatch } from './patch.js';
import { apiGroupDoc, apiGroupList, apiResourceList, apiVersions } from './discovery.js';
import { findResource, groupVersion, type KubeObject, type ResourceType } from './resources.js';
import { parseFieldSelector, parseLabelSelector, type Matcher } from './selectors.js';
import { ApiError, failure, success } from './status.js';
import type { ObjectStore } from './store.js';
import { table, wantsTable, type IncludeObject } from './table.js';
import { VERSION } from './version.js';
import { Watch, type ExpiredForm } from './watch.js';

export interface RouterContext {
  store: ObjectStore;
  /** host:port clients reach the server at, for /api. */
  address: string;
  expiredForm: ExpiredForm;
  bookmarkIntervalMs: number;
  addWatch(w: Watch): void;
  removeWatch(w: Watch): void;
}

const MAX_BODY = 8 * 1024 * 1024;
const STRATEGIC = 'application/strategic-merge-patch+json';
// Patch media types served; server-side apply (application/apply-patch+yaml) is not.
const PATCHES: Record<string, (current: KubeObject, patch: unknown, r: ResourceType) => unknown> = {
  'application/json-patch+json': (current, patch) => jsonPatch(current, patch),
  'application/merge-patch+json': (current, patch) => mergePatch(current, patch),
  [STRATEGIC]: (current, patch, r) => strategicMergePatch(current, patch, r),
};
// Snapshots behind continue tokens, so the pages of one list are of one resourceVersion.
const MAX_PAGED_LISTS = 64;

interface ResourcePath {
  resource: ResourceType;
  namespace?: string;
  name?: string;
  /** The object's /status. */
  status?: true;
}

export class Router {
  readonly #pages = new Map<string, { rv: number; items: KubeObject[] }>();

  constructor(readonly ctx: RouterContext) {}

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      await this.#route(req, res);
    } catch (e) {
      const status = e instanceof ApiError ? e.status : failure(500, 'InternalError', `test API server: ${(e as Error).stack ?? e}`);
      if (!res.headersSent) send(res, status.code, status);
      else res.destroy();
    }
  }

  async #route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const q = url.searchParams;
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const seg = path.split('/').slice(1);
    if (method === 'GET' && (path === '/healthz' || path === '/livez' || path === '/readyz')) {
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end('ok');
      return;
    }
    if (method === 'GET') {
      const doc = this.#discovery(path, seg);
      if (doc !== undefined) return send(res, 200, doc);
    }
    const rp = parseResourcePath(seg);
    if (rp === undefined) throw new ApiError(failure(404, 'NotFound', `the server could not find the requested resource (${method} ${path})`));
    if (q.has('dryRun')) throw ApiError.badRequest('dryRun is not supported by this test server');
    const { resource: r, namespace, name } = rp;
    if (name === undefined) {
      const asTable = wantsTable(req.headers.accept) ? includeObject(q) : undefined;
      if (method === 'GET') return q.get('watch') === 'true' || q.get('watch') === '1' ? this.#watch(rp, q, res, asTable) : this.#list(rp, q, res, asTable);
      if (method === 'POST') {
        const obj = inNamespace(asObject(await readJson(req), r), r, namespace);
        // What a client sends as status on create is dropped; controllers set it through /status.
        if (r.status) delete obj.status;
        return send(res, 201, this.ctx.store.create(r, obj));
      }
      throw methodNotAllowed(method, path);
    }
    const store = this.ctx.store;
    if (rp.status && method !== 'GET' && method !== 'PUT' && method !== 'PATCH') throw methodNotAllowed(method, path);
    switch (method) {
      case 'GET': {
        const obj = store.get(r, namespace, name);
        if (obj === undefined) throw ApiError.notFound(r.plural, name, r.group);
        if (wantsTable(req.headers.accept)) return send(res, 200, table(r, [obj], obj.metadata.resourceVersion!, includeObject(q)));
        return send(res, 200, obj);
      }
      case 'PUT': {
        const obj = inNamespace(asObject(await readJson(req), r), r, namespace);
        if (obj.metadata.name !== name) throw ApiError.badRequest(`the name of the object (${obj.metadata.name}) does not match the name on the URL (${name})`);
        return send(res, 200, store.replace(r, this.#scoped(rp, obj)));
      }
      case 'PATCH':
        return send(res, 200, await this.#patch(rp as Required<ResourcePath>, req));
      case 'DELETE': {
        const body = await readJson(req, true) as { preconditions?: { uid?: string; resourceVersion?: string } } | undefined;
        const gone = store.delete(r, namespace, name, body?.preconditions ?? {});
        // Custom resources and pods answer with the object; other built-ins with a Status, as the apiserver does.
        if (r.custom || r.plural === 'pods') return send(res, 200, gone);
        return send(res, 200, success({ name, group: r.group, kind: r.plural, uid: gone.metadata.uid! }));
      }
      default:
        throw methodNotAllowed(method, path);
    }
  }

  /**
   * An update through the object keeps its status; one through /status changes only the status. `obj` is the
   * whole object the client sent (or the patch made); its resourceVersion still guards the write.
   */
  #scoped(rp: ResourcePath, obj: KubeObject): KubeObject {
    const r = rp.resource;
    if (!r.status) return obj;
    const current = this.ctx.store.get(r, rp.namespace, rp.name!);
    if (current === undefined) throw ApiError.notFound(r.plural, rp.name!, r.group);
    const status = rp.status ? obj.status : current.status;
    const base = rp.status ? { ...current, metadata: { ...current.metadata, resourceVersion: obj.metadata.resourceVersion } } : obj;
    const { status: _drop, ...rest } = base;
    return status === undefined ? rest as KubeObject : { ...rest, status } as KubeObject;
  }

  #discovery(path: string, seg: string[]): object | undefined {
    if (path === '/version') return VERSION;
    if (path === '/openapi/v2') return openapiV2();
    if (path === '/openapi/v3') return openapiV3Root();
    if (path.startsWith('/openapi/v3/')) return openapiV3Doc(path.slice('/openapi/v3/'.length));
    if (path === '/api') return apiVersions(this.ctx.address);
    if (path === '/apis') return apiGroupList();
    if (seg[0] === 'api' && seg.length === 2) return apiResourceList('', seg[1]!);
    if (seg[0] === 'apis' && seg.length === 2) return apiGroupDoc(seg[1]!);
    if (seg[0] === 'apis' && seg.length === 3) return apiResourceList(seg[1]!, seg[2]!);
    return undefined;
  }

  #list(rp: ResourcePath, q: URLSearchParams, res: ServerResponse, asTable: IncludeObject | undefined): void {
    const { resource: r } = rp;
    const store = this.ctx.store;
    const matches = matcher(r, q);
    const rv = q.get('resourceVersion') ?? '';
    const match = q.get('resourceVersionMatch') ?? '';
    if (rv !== '' && rv !== '0') {
      const n = parseResourceVersion(rv);
      if (n > store.resourceVersion) {
        throw new ApiError(failure(504, 'Timeout', `Too large resource version: ${n}, current: ${store.resourceVersion}`, {
          causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }],
        }));
      }
      if (match === 'Exact' && n !== store.resourceVersion) throw ApiError.badRequest('resourceVersionMatch=Exact for a past resourceVersion is not supported by this test server');
    }
    const token = q.get('continue');
    const { id, snapshot: { items, rv: listRv }, offset } = token
      ? this.#continued(token)
      : { id: undefined, snapshot: { items: store.list(r, rp.namespace).filter(matches), rv: store.resourceVersion }, offset: 0 };
    const limit = q.has('limit') ? Number(q.get('limit')) : 0;
    if (!Number.isInteger(limit) || limit < 0) throw ApiError.badRequest(`limit must be a non-negative integer, got ${q.get('limit')}`);
    const metadata: Record<string, unknown> = { resourceVersion: String(listRv) };
    let page = items.slice(offset);
    if (limit > 0 && page.length > limit) {
      page = page.slice(0, limit);
      const next = { id: id ?? this.#snapshot(listRv, items), offset: offset + limit };
      metadata.continue = Buffer.from(JSON.stringify(next)).toString('base64url');
      metadata.remainingItemCount = items.length - offset - limit;
    }
    if (asTable !== undefined) return send(res, 200, { ...table(r, page, String(listRv), asTable), metadata });
    // Built-in lists carry kind/apiVersion on the list only; custom resource lists on each item too.
    const out = page.map((o) => (r.custom ? o : withoutTypeMeta(o)));
    send(res, 200, { apiVersion: groupVersion(r), kind: `${r.kind}List`, metadata, items: out });
  }

  #snapshot(rv: number, items: KubeObject[]): string {
    const id = randomUUID();
    this.#pages.set(id, { rv, items });
    if (this.#pages.size > MAX_PAGED_LISTS) this.#pages.delete(this.#pages.keys().next().value!);
    return id;
  }

  #continued(token: string): { id: string; snapshot: { rv: number; items: KubeObject[] }; offset: number } {
    let parsed: { id?: unknown; offset?: unknown };
    try {
      parsed = JSON.parse(Buffer.from(token, 'base64url').toString());
    } catch {
      throw ApiError.badRequest(`continue token ${JSON.stringify(token)} is not one this server issued`);
    }
    const snapshot = typeof parsed.id === 'string' ? this.#pages.get(parsed.id) : undefined;
    if (snapshot === undefined || snapshot.rv < this.ctx.store.compactedResourceVersion || typeof parsed.offset !== 'number') {
      throw ApiError.expired('The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.');
    }
    return { id: parsed.id as string, snapshot, offset: parsed.offset };
  }

  #watch(rp: ResourcePath, q: URLSearchParams, res: ServerResponse, asTable: IncludeObject | undefined): void {
    const rv = q.get('resourceVersion') ?? '';
    if (rv !== '' && rv !== '0') parseResourceVersion(rv);
    const timeout = q.get('timeoutSeconds');
    const timeoutSeconds = timeout === null ? undefined : Number(timeout);
    if (timeoutSeconds !== undefined && (!Number.isInteger(timeoutSeconds) || timeoutSeconds < 0)) {
      throw ApiError.badRequest(`timeoutSeconds must be a non-negative integer, got ${timeout}`);
    }
    const w = new Watch({
      resource: rp.resource,
      ...(rp.namespace !== undefined && { namespace: rp.namespace }),
      matches: matcher(rp.resource, q),
      resourceVersion: rv,
      allowBookmarks: q.get('allowWatchBookmarks') === 'true',
      sendInitialEvents: q.get('sendInitialEvents') === 'true',
      ...(timeoutSeconds !== undefined && timeoutSeconds > 0 && { timeoutSeconds }),
      ...(asTable !== undefined && { table: asTable }),
    }, res, this.ctx.store, {
      bookmarkIntervalMs: this.ctx.bookmarkIntervalMs,
      expiredForm: this.ctx.expiredForm,
      onClose: (x) => this.ctx.removeWatch(x),
    });
    this.ctx.addWatch(w);
    w.start();
  }

  async #patch(rp: Required<ResourcePath>, req: IncomingMessage): Promise<KubeObject> {
    const { resource: r, namespace, name } = rp;
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
    const apply = PATCHES[type];
    if (apply === undefined || (type === STRATEGIC && r.custom)) {
      // The apiserver's answer to a strategic merge patch on a custom resource, and to a type it does not know.
      const accepted = Object.keys(PATCHES).filter((t) => t !== STRATEGIC || !r.custom);
      throw new ApiError(failure(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: ${accepted.join(', ')}`));
    }
    const patch = await readJson(req);
    const current = this.ctx.store.get(r, namespace, name);
    if (current === undefined) throw ApiError.notFound(r.plural, name, r.group);
    const patched = apply(current, patch, r) as KubeObject;
    if (typeof patched !== 'object' || patched === null || Array.isArray(patched)) throw ApiError.badRequest('the patched object is not a JSON object');
    const meta = (patched.metadata ??= {});
    if (meta.name !== name || (r.namespaced && meta.namespace !== namespace)) throw ApiError.badRequest('a patch may not change metadata.name or metadata.namespace');
    return this.ctx.store.replace(r, this.#scoped(rp, patched));
  }

}

/** /api/v1/[namespaces/NS/]PLURAL[/NAME[/status]] or /apis/GROUP/VERSION/[namespaces/NS/]PLURAL[/NAME[/status]]. */
function parseResourcePath(seg: string[]): ResourcePath | undefined {
  let group: string;
  let rest: string[];
  if (seg[0] === 'api' && seg.length >= 3) [group, rest] = ['', seg.slice(1)];
  else if (seg[0] === 'apis' && seg.length >= 4) [group, rest] = [seg[1]!, seg.slice(2)];
  else return undefined;
  const [version, ...tail] = rest as [string, ...string[]];
  const item = (r: ResourceType, after: string[], namespace?: string): ResourcePath | undefined => {
    const [name, sub, ...more] = after;
    if (more.length > 0 || (sub !== undefined && (sub !== 'status' || !r.status))) return undefined;
    return { resource: r, ...(namespace !== undefined && { namespace }), ...(name !== undefined && { name }), ...(sub !== undefined && { status: true as const }) };
  };
  if (tail[0] === 'namespaces' && tail.length >= 3) {
    const r = findResource(group, version, tail[2]!);
    if (r?.namespaced) return item(r, tail.slice(3), tail[1]!);
  }
  const r = findResource(group, version, tail[0]!);
  return r === undefined || r.namespaced && tail.length > 1 ? undefined : item(r, tail.slice(1));
}

function matcher(r: ResourceType, q: URLSearchParams): Matcher {
  const label = q.get('labelSelector');
  const field = q.get('fieldSelector');
  const byLabel = label ? parseLabelSelector(label) : undefined;
  const byField = field ? parseFieldSelector(field, r) : undefined;
  return (o) => (byLabel?.(o) ?? true) && (byField?.(o) ?? true);
}

function includeObject(q: URLSearchParams): IncludeObject {
  const v = q.get('includeObject') ?? 'Metadata';
  if (v !== 'None' && v !== 'Metadata' && v !== 'Object') throw ApiError.badRequest(`includeObject must be None, Metadata or Object, got ${JSON.stringify(v)}`);
  return v;
}

function parseResourceVersion(rv: string): number {
  const n = Number(rv);
  if (!/^\d+$/.test(rv) || !Number.isSafeInteger(n)) throw ApiError.badRequest(`resourceVersion ${JSON.stringify(rv)} is not one this server issued (a decimal integer)`);
  return n;
}

function withoutTypeMeta(o: KubeObject): KubeObject {
  const { apiVersion: _a, kind: _k, ...rest } = o;
  return rest as KubeObject;
}

function asObject(body: unknown, r: ResourceType): KubeObject {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw ApiError.badRequest(`${r.kind}: the body must be a JSON object`);
  const obj = body as KubeObject;
  if (typeof obj.metadata !== 'object' || obj.metadata === null) obj.metadata = {};
  return obj;
}

/** The URL's namespace on a namespaced object; a different one in the body is the caller's error. */
function inNamespace(obj: KubeObject, r: ResourceType, namespace: string | undefined): KubeObject {
  if (!r.namespaced) return obj;
  if (obj.metadata.namespace !== undefined && obj.metadata.namespace !== namespace) {
    throw ApiError.badRequest('the namespace of the provided object does not match the namespace sent on the request');
  }
  obj.metadata.namespace = namespace;
  return obj;
}

function methodNotAllowed(method: string, path: string): ApiError {
  return new ApiError(failure(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource (${method} ${path})`));
}

async function readJson(req: IncomingMessage, optional = false): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new ApiError(failure(413, 'RequestEntityTooLarge', `request body larger than ${MAX_BODY} bytes`));
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') {
    if (optional) return undefined;
    throw ApiError.badRequest('the request has no body; a JSON object was expected');
  }
  const type = (req.headers['content-type'] ?? 'application/json').split(';')[0]!.trim();
  if (!type.endsWith('json')) throw new ApiError(failure(415, 'UnsupportedMediaType', `this test server reads JSON bodies only, got content-type ${type} (kubectl's generator subcommands such as \`create namespace\` send protobuf: use \`kubectl create -f\`)`));
  try {
    return JSON.parse(text);
  } catch (e) {
    throw ApiError.badRequest(`couldn't get version/kind; json parse error: ${(e as Error).message}`);
  }
}

function send(res: ServerResponse, code: number, body: object): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-cache, private' });
  res.end(text);
}
