// SPIFFE IDs per the SPIFFE ID specification (spiffe/standards SPIFFE-ID.md, §2): `spiffe://<trust-domain><path>`.

/** A parsed SPIFFE ID. `path` is empty or starts with `/`. */
export interface SpiffeId {
  readonly trustDomain: string;
  readonly path: string;
}

/** A SPIFFE ID or trust domain that breaks the specification; the message says which rule. */
export class SpiffeIdError extends Error {
  constructor(readonly input: string, reason: string) {
    super(`invalid SPIFFE ID ${JSON.stringify(input.length > 80 ? `${input.slice(0, 80)}…` : input)}: ${reason}`);
    this.name = 'SpiffeIdError';
  }
}

const SCHEME = 'spiffe://';
/** Both limits are the specification's: a URI SAN is at most 2048 bytes, a trust domain at most 255 characters. */
export const MAX_ID_BYTES = 2048;
export const MAX_TRUST_DOMAIN_LENGTH = 255;
const TRUST_DOMAIN_CHAR = /^[a-z0-9._-]$/;
const PATH_CHAR = /^[a-zA-Z0-9._-]$/;

/** Why a trust domain name is invalid, or undefined when it is valid. */
export function trustDomainProblem(td: string): string | undefined {
  if (td.length === 0) return 'the trust domain is empty';
  if (td.length > MAX_TRUST_DOMAIN_LENGTH) return `the trust domain is longer than ${MAX_TRUST_DOMAIN_LENGTH} characters`;
  for (const ch of td) {
    if (TRUST_DOMAIN_CHAR.test(ch)) continue;
    if (ch === ':') return 'a port is not allowed in the trust domain';
    if (ch === '@') return 'userinfo is not allowed in the trust domain';
    if (/[A-Z]/.test(ch)) return 'the trust domain must be lowercase';
    return `the trust domain has the character ${JSON.stringify(ch)} (allowed: a-z 0-9 . - _)`;
  }
  return undefined;
}

/** Throws a SpiffeIdError unless `td` is a valid trust domain name; returns it. */
export function checkTrustDomain(td: string): string {
  const p = trustDomainProblem(td);
  if (p) throw new SpiffeIdError(td, p);
  return td;
}

function pathProblem(path: string): string | undefined {
  if (path === '') return undefined;
  if (path === '/') return 'the path must not end with "/"';
  const segments = path.slice(1).split('/');
  for (const s of segments) {
    if (s === '') return path.endsWith('/') && s === segments[segments.length - 1] ? 'the path must not end with "/"' : 'the path has an empty segment';
    if (s === '.' || s === '..') return `the path has a "${s}" segment`;
    for (const ch of s) {
      if (PATH_CHAR.test(ch)) continue;
      if (ch === '%') return 'percent-encoding is not allowed in the path';
      return `the path has the character ${JSON.stringify(ch)} (allowed: a-z A-Z 0-9 . - _)`;
    }
  }
  return undefined;
}

/** Parses a SPIFFE ID; throws SpiffeIdError naming the broken rule. */
export function parseSpiffeId(input: string): SpiffeId {
  if (typeof input !== 'string') throw new TypeError('a SPIFFE ID must be a string');
  const fail = (reason: string): never => {
    throw new SpiffeIdError(input, reason);
  };
  if (input === '') fail('empty');
  if (Buffer.byteLength(input) > MAX_ID_BYTES) fail(`longer than ${MAX_ID_BYTES} bytes`);
  if (!input.startsWith(SCHEME)) {
    fail(/^spiffe:\/\//i.test(input) ? 'the scheme must be lowercase "spiffe"' : 'the scheme must be "spiffe://"');
  }
  const rest = input.slice(SCHEME.length);
  if (rest.includes('?')) fail('a query is not allowed');
  if (rest.includes('#')) fail('a fragment is not allowed');
  const slash = rest.indexOf('/');
  const td = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? '' : rest.slice(slash);
  const tdp = trustDomainProblem(td);
  if (tdp) fail(tdp);
  const pp = pathProblem(path);
  if (pp) fail(pp);
  return { trustDomain: td, path };
}

/** Like parseSpiffeId, but returns the problem instead of throwing. */
export function trySpiffeId(input: string): { id: SpiffeId } | { error: string } {
  try {
    return { id: parseSpiffeId(input) };
  } catch (e) {
    if (e instanceof SpiffeIdError) return { error: e.message };
    throw e;
  }
}

export function formatSpiffeId(id: SpiffeId): string {
  const s = `${SCHEME}${id.trustDomain}${id.path}`;
  parseSpiffeId(s);
  return s;
}

/** The identity of a Kubernetes-style service account: `spiffe://<td>/ns/<namespace>/sa/<account>`. */
export function workloadSpiffeId(trustDomain: string, namespace: string, serviceAccount: string): SpiffeId {
  for (const [what, v] of [['namespace', namespace], ['service account', serviceAccount]] as const) {
    if (typeof v !== 'string' || v === '') throw new TypeError(`${what} must be a non-empty string`);
    if (v.includes('/')) throw new RangeError(`${what} ${JSON.stringify(v)} must be one path segment (no "/")`);
  }
  const id = parseSpiffeId(`${SCHEME}${trustDomain}/ns/${namespace}/sa/${serviceAccount}`);
  return id;
}

/** The namespace and service account of an `/ns/<namespace>/sa/<account>` ID, or undefined for another shape. */
export function serviceAccountOf(id: SpiffeId): { namespace: string; serviceAccount: string } | undefined {
  const m = /^\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id.path);
  return m ? { namespace: m[1]!, serviceAccount: m[2]! } : undefined;
}
