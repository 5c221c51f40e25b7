// PATCH bodies: JSON merge patch (RFC 7386) for every resource, and strategic merge patch for the built-in
// kinds, which is what `kubectl apply` sends for them (lists with a merge key are merged element by element).
import { ApiError } from './status.js';
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
