// PATCH bodies: JSON merge patch (RFC 7386) and JSON patch (RFC 6902) for every resource, and strategic merge
// patch for the built-in kinds, which is what `kubectl apply` sends for them (lists with a merge key are merged
// element by element).
import { isDeepStrictEqual } from 'node:util';
import { ApiError, failure } from './status.js';
import type { ResourceType } from './resources.js';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonMap = { [key: string]: Json };

function isMap(v: unknown): v is JsonMap {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function mergePatch(target: unknown, patch: unknown): Json {
  if (!isMap(patch)) return patch as Json;
  const out: JsonMap = isMap(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

export interface JsonPatchOp {
  op: 'add' | 'remove' | 'replace' | 'move' | 'copy' | 'test';
  path: string;
  from?: string;
  value?: unknown;
}

/** RFC 6902. Any failing operation fails the whole patch (422), so nothing is half-applied. */
export function jsonPatch(target: unknown, ops: unknown): Json {
  if (!Array.isArray(ops)) throw ApiError.badRequest('json patch: the body must be a list of operations');
  let doc = structuredClone(target) as Json;
  ops.forEach((raw, i) => {
    const op = raw as JsonPatchOp;
    const fail = (why: string): ApiError => new ApiError(failure(422, 'Invalid', `json patch operation ${i} (${JSON.stringify(raw)}): ${why}`));
    if (typeof op !== 'object' || op === null || typeof op.path !== 'string') throw fail('needs "op" and a string "path"');
    const path = pointer(op.path, fail);
    switch (op.op) {
      case 'add': doc = put(doc, path, structuredClone(op.value) as Json, 'add', fail); break;
      case 'replace': doc = put(doc, path, structuredClone(op.value) as Json, 'replace', fail); break;
      case 'remove': doc = remove(doc, path, fail); break;
      case 'test': if (!isDeepStrictEqual(get(doc, path, fail), op.value)) throw fail('the value differs'); break;
      case 'copy':
      case 'move': {
        if (typeof op.from !== 'string') throw fail('needs a string "from"');
        const from = pointer(op.from, fail);
        const value = structuredClone(get(doc, from, fail));
        if (op.op === 'move') doc = remove(doc, from, fail);
        doc = put(doc, path, value, 'add', fail);
        break;
      }
      default: throw fail(`unknown op ${JSON.stringify(op.op)}`);
    }
  });
  return doc;
}

type Fail = (why: string) => ApiError;

function pointer(p: string, fail: Fail): string[] {
  if (p === '') return [];
  if (!p.startsWith('/')) throw fail(`path ${JSON.stringify(p)} is not a JSON pointer`);
  return p.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function index(list: Json[], key: string, fail: Fail, forAdd: boolean): number {
  if (forAdd && key === '-') return list.length;
  if (!/^(0|[1-9]\d*)$/.test(key)) throw fail(`${JSON.stringify(key)} is not a list index`);
  const i = Number(key);
  if (i > list.length || (!forAdd && i === list.length)) throw fail(`index ${i} is out of range`);
  return i;
}

function get(doc: Json, path: string[], fail: Fail): Json {
  let at = doc;
  for (const key of path) {
    if (Array.isArray(at)) at = at[index(at, key, fail, false)]!;
    else if (isMap(at) && Object.hasOwn(at, key)) at = at[key]!;
    else throw fail(`no value at ${JSON.stringify(key)}`);
  }
  return at;
}

function put(doc: Json, path: string[], value: Json, how: 'add' | 'replace', fail: Fail): Json {
  if (path.length === 0) return value;
  const parent = get(doc, path.slice(0, -1), fail);
  const key = path.at(-1)!;
  if (Array.isArray(parent)) {
    const i = index(parent, key, fail, how === 'add');
    parent.splice(i, how === 'add' ? 0 : 1, value);
  } else if (isMap(parent)) {
    if (how === 'replace' && !Object.hasOwn(parent, key)) throw fail(`no value at ${JSON.stringify(key)} to replace`);
    parent[key] = value;
  } else throw fail('the parent is not an object or a list');
  return doc;
}

function remove(doc: Json, path: string[], fail: Fail): Json {
  if (path.length === 0) throw fail('cannot remove the whole document');
  const parent = get(doc, path.slice(0, -1), fail);
  const key = path.at(-1)!;
  if (Array.isArray(parent)) parent.splice(index(parent, key, fail, false), 1);
  else if (isMap(parent) && Object.hasOwn(parent, key)) delete parent[key];
  else throw fail(`no value at ${JSON.stringify(key)} to remove`);
  return doc;
}

/**
 * Strategic merge patch with the directives kubectl's three-way patches use: `$patch` (replace/delete/merge),
 * `$retainKeys`, `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`. Lists named in the
 * resource's merge keys merge by that key, listed scalar lists merge as sets, all others are replaced.
 */
export function strategicMergePatch(target: unknown, patch: unknown, resource: ResourceType): Json {
  if (!isMap(patch)) throw ApiError.badRequest('strategic merge patch: the patch must be a JSON object');
  return mergeMap(isMap(target) ? target : {}, patch, '', resource) ?? {};
}

const join = (path: string, key: string): string => (path === '' ? key : `${path}.${key}`);

function mergeMap(original: JsonMap, patch: JsonMap, path: string, r: ResourceType): JsonMap | undefined {
  const directive = patch.$patch;
  if (directive === 'delete') return undefined;
  if (directive === 'replace') return withoutDirectives(patch);
  if (directive !== undefined && directive !== 'merge') throw ApiError.badRequest(`strategic merge patch: unknown $patch ${JSON.stringify(directive)} at ${path || '.'}`);
  const out: JsonMap = { ...original };
  const orders: [string, Json[]][] = [];
  for (const [key, value] of Object.entries(patch)) {
    if (key === '$patch' || key === '$retainKeys') continue;
    if (key.startsWith('$setElementOrder/')) {
      orders.push([key.slice('$setElementOrder/'.length), asList(value, key)]);
      continue;
    }
    if (key.startsWith('$deleteFromPrimitiveList/')) {
      const field = key.slice('$deleteFromPrimitiveList/'.length);
      const drop = asList(value, key);
      if (Array.isArray(out[field])) out[field] = (out[field] as Json[]).filter((v) => !drop.includes(v));
      continue;
    }
    const here = join(path, key);
    if (value === null) delete out[key];
    else if (isMap(value)) {
      const merged = mergeMap(isMap(out[key]) ? out[key] as JsonMap : {}, value, here, r);
      if (merged === undefined) delete out[key];
      else out[key] = merged;
    } else if (Array.isArray(value)) out[key] = mergeList(Array.isArray(out[key]) ? out[key] as Json[] : [], value, here, r);
    else out[key] = value;
  }
  for (const [field, order] of orders) {
    const list = out[field];
    const mergeKey = r.mergeKeys?.[join(path, field)];
    if (!Array.isArray(list)) continue;
    const id = (v: Json): Json => (mergeKey !== undefined && isMap(v) ? v[mergeKey] ?? null : v);
    const rank = (v: Json): number => {
      const i = order.findIndex((o) => JSON.stringify(id(o)) === JSON.stringify(id(v)));
      return i < 0 ? order.length : i;
    };
    out[field] = [...list].sort((a, b) => rank(a) - rank(b));
  }
  if (Array.isArray(patch.$retainKeys)) {
    const keep = new Set(patch.$retainKeys as Json[]);
    for (const key of Object.keys(out)) if (!keep.has(key)) delete out[key];
  }
  return out;
}

function mergeList(original: Json[], patch: Json[], path: string, r: ResourceType): Json[] {
  if (patch.some((e) => isMap(e) && e.$patch === 'replace')) return patch.filter((e) => !(isMap(e) && e.$patch === 'replace'));
  const mergeKey = r.mergeKeys?.[path];
  if (mergeKey !== undefined) {
    const out = [...original];
    for (const elem of patch) {
      if (!isMap(elem) || elem[mergeKey] === undefined) {
        throw ApiError.badRequest(`strategic merge patch: every element of ${path} needs its merge key ${JSON.stringify(mergeKey)}`);
      }
      const at = out.findIndex((o) => isMap(o) && JSON.stringify(o[mergeKey]) === JSON.stringify(elem[mergeKey]));
      if (elem.$patch === 'delete') {
        if (at >= 0) out.splice(at, 1);
        continue;
      }
      const merged = mergeMap(at >= 0 ? out[at] as JsonMap : {}, elem, path, r);
      if (merged === undefined) continue;
      if (at >= 0) out[at] = merged;
      else out.push(merged);
    }
    return out;
  }
  if (r.mergeScalarLists?.includes(path)) return [...original, ...patch.filter((v) => !original.includes(v))];
  return patch;
}

function asList(value: Json, key: string): Json[] {
  if (!Array.isArray(value)) throw ApiError.badRequest(`strategic merge patch: ${key} must be a list`);
  return value;
}

function withoutDirectives(m: JsonMap): JsonMap {
  return Object.fromEntries(Object.entries(m).filter(([k]) => !k.startsWith('$')));
}
