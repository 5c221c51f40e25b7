// Label and field selectors as the apiserver parses them (apimachinery's labels.Parse and fields.ParseSelector).
// A selector that does not parse is the caller's error: it throws ApiError 400 naming the offending part.
import { ApiError } from './status.js';
import type { KubeObject, ResourceType } from './resources.js';

export type Matcher = (obj: KubeObject) => boolean;

type Requirement =
  | { key: string; op: 'in' | 'notin'; values: string[] }
  | { key: string; op: 'exists' | '!exists' };

const KEY = /^(?:[a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/** Split on commas outside parentheses: `a in (x,y),b` → ['a in (x,y)', 'b']. */
function splitTerms(selector: string): string[] {
  const terms: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < selector.length; i++) {
    const c = selector[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ',' && depth === 0) {
      terms.push(selector.slice(start, i));
      start = i + 1;
    }
  }
  terms.push(selector.slice(start));
  return terms.map((t) => t.trim()).filter((t) => t !== '');
}

function parseRequirement(term: string, selector: string): Requirement {
  const bad = (why: string): ApiError => ApiError.badRequest(`unable to parse requirement: ${why} in labelSelector ${JSON.stringify(selector)}`);
  const checkKey = (key: string): string => {
    if (!KEY.test(key)) throw bad(`invalid label key ${JSON.stringify(key)}`);
    return key;
  };
  let m = /^!\s*(\S+)$/.exec(term);
  if (m) return { key: checkKey(m[1]!), op: '!exists' };
  m = /^(\S+?)\s+(in|notin)\s*\(([^)]*)\)$/.exec(term);
  if (m) {
    const values = m[3]!.split(',').map((v) => v.trim());
    return { key: checkKey(m[1]!), op: m[2] as 'in' | 'notin', values };
  }
  m = /^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(term);
  if (m) return { key: checkKey(m[1]!), op: m[2] === '!=' ? 'notin' : 'in', values: [m[3]!] };
  if (/^[^\s=!<>()]+$/.test(term)) return { key: checkKey(term), op: 'exists' };
  throw bad(`unsupported requirement ${JSON.stringify(term)} (this server knows =, ==, !=, in, notin, exists, !exists)`);
}

export function parseLabelSelector(selector: string): Matcher {
  const reqs = splitTerms(selector).map((t) => parseRequirement(t, selector));
  return (obj) => {
    const labels = obj.metadata.labels ?? {};
    return reqs.every((r) => {
      const has = Object.hasOwn(labels, r.key);
      switch (r.op) {
        case 'exists': return has;
        case '!exists': return !has;
        case 'in': return has && r.values.includes(labels[r.key]!);
        case 'notin': return !has || !r.values.includes(labels[r.key]!);
      }
    });
  };
}

const META_FIELDS: Record<string, (obj: KubeObject) => string | undefined> = {
  'metadata.name': (o) => o.metadata.name,
  'metadata.namespace': (o) => o.metadata.namespace ?? '',
};

/** `spec.nodeName=n1,metadata.namespace!=x`; labels the resource does not index are refused, as the apiserver does. */
export function parseFieldSelector(selector: string, resource: ResourceType): Matcher {
  const reqs = splitTerms(selector).map((term) => {
    const m = /^([^=!]+?)\s*(==|=|!=)\s*(.*)$/.exec(term);
    if (!m) throw ApiError.badRequest(`invalid field selector: ${JSON.stringify(term)} is not <field>=<value> or <field>!=<value>`);
    const field = m[1]!;
    const get = META_FIELDS[field] ?? resource.fields?.[field];
    if (get === undefined) {
      throw ApiError.badRequest(`field label not supported: ${field} (for ${resource.plural}: ${[...Object.keys(META_FIELDS), ...Object.keys(resource.fields ?? {})].join(', ')})`);
    }
    return { get, negate: m[2] === '!=', value: m[3]! };
  });
  return (obj) => reqs.every((r) => (r.get(obj) === r.value) !== r.negate);
}
