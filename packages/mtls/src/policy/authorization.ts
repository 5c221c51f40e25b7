// Istio's AuthorizationPolicy (security.istio.io/v1, v1beta1), read as it is, for what a mesh that sees
// connections (not requests) can enforce: the peer's verified SPIFFE ID and the destination port. A policy
// using anything else is rejected whole: an ignored restriction in an ALLOW rule would let traffic in, and one
// in a DENY rule would widen what it denies.
import { trySpiffeId } from '../spiffe-id.js';
import { isRecord, onlyFields, readEnvelope, readSelector, type Fail, type ObjectMeta } from './object.js';

export type AuthorizationAction = 'ALLOW' | 'DENY';

/**
 * One `from.source`, compiled for the data plane. Principals are full SPIFFE IDs (Istio writes them without
 * `spiffe://`); `*` alone matches any peer, a leading `*` a suffix, a trailing `*` a prefix. Namespaces match
 * the `<ns>` of the peer's `/ns/<ns>/…` path, with the same wildcards.
 */
export interface SourceMatch {
  readonly principals?: readonly string[];
  readonly notPrincipals?: readonly string[];
  readonly namespaces?: readonly string[];
  readonly notNamespaces?: readonly string[];
}

/** One `to.operation`: the destination (workload) port. */
export interface OperationMatch {
  readonly ports?: readonly number[];
  readonly notPorts?: readonly number[];
}

/**
 * A rule matches when one of `from` matches (or `from` is absent) and one of `to` matches (or `to` is absent).
 * Within one source or operation every field given must match.
 */
export interface Rule {
  readonly from?: readonly SourceMatch[];
  readonly to?: readonly OperationMatch[];
}

export interface AuthorizationPolicy extends ObjectMeta {
  readonly selector?: Readonly<Record<string, string>>;
  readonly action: AuthorizationAction;
  /** Empty: matches nothing (an ALLOW policy without rules therefore denies every connection it selects). */
  readonly rules: readonly Rule[];
}

const L7 = 'L7 field, cannot be enforced by the mesh (it sees connections, not requests)';
const SOURCE_L7 = ['requestPrincipals', 'notRequestPrincipals'];
const SOURCE_UNSUPPORTED = ['ipBlocks', 'notIpBlocks', 'remoteIpBlocks', 'notRemoteIpBlocks', 'serviceAccounts', 'notServiceAccounts'];
const OPERATION_L7 = ['hosts', 'notHosts', 'methods', 'notMethods', 'paths', 'notPaths'];

function strings(v: unknown, where: string, fail: Fail): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) fail(where, 'expected a list of strings');
  const out: string[] = [];
  (v as unknown[]).forEach((s, i) => {
    if (typeof s !== 'string' || s === '') fail(`${where}[${i}]`, 'expected a non-empty string');
    out.push(s as string);
  });
  return out.length === 0 ? undefined : out;
}

// Istio allows `*` alone, as a prefix or as a suffix; anywhere else it is an error.
function checkWildcard(s: string, where: string, fail: Fail): void {
  const stars = s.split('*').length - 1;
  if (stars === 0 || s === '*') return;
  if (stars > 1 || !(s.startsWith('*') || s.endsWith('*'))) fail(where, `${JSON.stringify(s)}: "*" only alone, at the start or at the end`);
}

function principals(v: unknown, where: string, fail: Fail): string[] | undefined {
  const list = strings(v, where, fail);
  return list?.map((p, i) => {
    checkWildcard(p, `${where}[${i}]`, fail);
    if (p.startsWith('spiffe://'))
      fail(`${where}[${i}]`, `${JSON.stringify(p)}: Istio principals are written without "spiffe://" (e.g. "cluster.local/ns/default/sa/client")`);
    if (p === '*' || p.startsWith('*')) return p;
    if (p.endsWith('*')) return `spiffe://${p}`;
    // An exact principal names one workload: it must be a SPIFFE ID with a path, or it could never match.
    const id = trySpiffeId(`spiffe://${p}`);
    if ('error' in id) fail(`${where}[${i}]`, `${JSON.stringify(p)}: ${id.error}`);
    if ('id' in id && id.id.path === '') fail(`${where}[${i}]`, `${JSON.stringify(p)}: names a trust domain, not a workload`);
    return `spiffe://${p}`;
  });
}

function namespaces(v: unknown, where: string, fail: Fail): string[] | undefined {
  const list = strings(v, where, fail);
  list?.forEach((n, i) => {
    checkWildcard(n, `${where}[${i}]`, fail);
    if (n.includes('/')) fail(`${where}[${i}]`, `${JSON.stringify(n)}: a namespace has no "/"`);
  });
  return list;
}

function ports(v: unknown, where: string, fail: Fail): number[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) fail(where, 'expected a list of ports');
  const out = (v as unknown[]).map((p, i) => {
    const s = typeof p === 'number' ? String(p) : p;
    if (typeof s !== 'string' || !/^[0-9]+$/.test(s) || Number(s) < 1 || Number(s) > 65535)
      fail(`${where}[${i}]`, `expected a port from 1 to 65535, got ${JSON.stringify(p)}`);
    return Number(s);
  });
  return out.length === 0 ? undefined : out;
}

function readSource(v: unknown, where: string, fail: Fail): SourceMatch {
  if (!isRecord(v)) fail(where, 'expected an object');
  const o = v as Record<string, unknown>;
  onlyFields(o, ['source'], where, fail);
  if (!isRecord(o.source)) fail(`${where}.source`, 'expected an object');
  const s = o.source as Record<string, unknown>;
  const at = `${where}.source`;
  for (const k of Object.keys(s)) {
    if (SOURCE_L7.includes(k)) fail(`${at}.${k}`, L7);
    if (SOURCE_UNSUPPORTED.includes(k)) fail(`${at}.${k}`, 'not supported by the mesh yet (only principals, notPrincipals, namespaces, notNamespaces)');
  }
  onlyFields(s, ['principals', 'notPrincipals', 'namespaces', 'notNamespaces'], at, fail);
  const m: SourceMatch = {
    ...opt('principals', principals(s.principals, `${at}.principals`, fail)),
    ...opt('notPrincipals', principals(s.notPrincipals, `${at}.notPrincipals`, fail)),
    ...opt('namespaces', namespaces(s.namespaces, `${at}.namespaces`, fail)),
    ...opt('notNamespaces', namespaces(s.notNamespaces, `${at}.notNamespaces`, fail)),
  };
  // Istio's validation: an empty source is an error, not "any source".
  if (Object.keys(m).length === 0) fail(at, 'must not be empty');
  return m;
}

function readOperation(v: unknown, where: string, fail: Fail): OperationMatch {
  if (!isRecord(v)) fail(where, 'expected an object');
  const o = v as Record<string, unknown>;
  onlyFields(o, ['operation'], where, fail);
  if (!isRecord(o.operation)) fail(`${where}.operation`, 'expected an object');
  const op = o.operation as Record<string, unknown>;
  const at = `${where}.operation`;
  for (const k of Object.keys(op)) if (OPERATION_L7.includes(k)) fail(`${at}.${k}`, L7);
  onlyFields(op, ['ports', 'notPorts'], at, fail);
  const m: OperationMatch = { ...opt('ports', ports(op.ports, `${at}.ports`, fail)), ...opt('notPorts', ports(op.notPorts, `${at}.notPorts`, fail)) };
  if (Object.keys(m).length === 0) fail(at, 'must not be empty');
  return m;
}

function opt<K extends string, V>(key: K, v: V | undefined): { [P in K]?: V } {
  return (v === undefined ? {} : { [key]: v }) as { [P in K]?: V };
}

function list(v: unknown, where: string, fail: Fail): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) fail(where, 'expected a list');
  return v as unknown[];
}

function readRule(v: unknown, where: string, fail: Fail): Rule {
  if (!isRecord(v)) fail(where, 'expected an object');
  const r = v as Record<string, unknown>;
  const when = list(r.when, `${where}.when`, fail);
  when.forEach((c, i) => {
    const key = isRecord(c) && typeof c.key === 'string' ? c.key : '';
    if (key.startsWith('request.') || key.startsWith('experimental.envoy.filters.'))
      fail(`${where}.when[${i}]`, `condition on ${JSON.stringify(key)}: ${L7}`);
    fail(`${where}.when[${i}]`, `condition on ${JSON.stringify(key)}: conditions are not supported by the mesh yet (use from and to)`);
  });
  onlyFields(r, ['from', 'to', 'when'], where, fail);
  const from = list(r.from, `${where}.from`, fail).map((s, i) => readSource(s, `${where}.from[${i}]`, fail));
  const to = list(r.to, `${where}.to`, fail).map((o, i) => readOperation(o, `${where}.to[${i}]`, fail));
  return { ...(from.length ? { from } : {}), ...(to.length ? { to } : {}) };
}

/** Parses one AuthorizationPolicy object; throws PolicyError naming the first field the mesh cannot enforce. */
export function parseAuthorizationPolicy(obj: unknown): AuthorizationPolicy {
  const { meta, spec, fail } = readEnvelope(obj, 'AuthorizationPolicy');
  if (spec.targetRef !== undefined || spec.targetRefs !== undefined)
    fail(spec.targetRef !== undefined ? 'spec.targetRef' : 'spec.targetRefs', 'targets a gateway, waypoint or Service; the mesh applies policies to workloads (use spec.selector)');
  const action = spec.action ?? 'ALLOW';
  if (action === 'AUDIT' || action === 'CUSTOM')
    fail('spec.action', `${action} is not supported by the mesh (only ALLOW and DENY): it would need ${action === 'AUDIT' ? 'an audit sink' : 'an external authorizer'} per request`);
  if (action !== 'ALLOW' && action !== 'DENY') fail('spec.action', `expected ALLOW or DENY, got ${JSON.stringify(action)}`);
  onlyFields(spec, ['selector', 'action', 'rules'], 'spec', fail);
  const selector = readSelector(spec, fail);
  const rules = list(spec.rules, 'spec.rules', fail).map((r, i) => readRule(r, `spec.rules[${i}]`, fail));
  return { ...meta, ...(selector ? { selector } : {}), action: action as AuthorizationAction, rules };
}
