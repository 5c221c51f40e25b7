// The decision the data plane takes for one connection (native/dataplane/src/policy.cc does the same in C++):
// here for tests, `meshctl`-style explanations and anything that needs to predict a verdict.
import type { OperationMatch, Rule, SourceMatch } from './authorization.js';
import type { WorkloadPolicy } from './compile.js';

export type Verdict =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly reason: 'deny_match' | 'no_allow_match'; readonly policy: string };

/** `*` alone: anything; `*x`: ends with x; `x*`: starts with x; otherwise equal. */
export function matchesPattern(pattern: string, value: string): boolean {
  if (pattern === '*') return true;
  if (pattern.startsWith('*')) return value.endsWith(pattern.slice(1));
  if (pattern.endsWith('*')) return value.startsWith(pattern.slice(0, -1));
  return pattern === value;
}

/** The `<ns>` of a `spiffe://<td>/ns/<ns>/…` ID, or undefined. */
export function namespaceOfId(spiffeId: string): string | undefined {
  const m = /^spiffe:\/\/[^/]+\/ns\/([^/]+)(\/|$)/.exec(spiffeId);
  return m?.[1];
}

const any = (patterns: readonly string[], value: string | undefined): boolean =>
  value !== undefined && patterns.some((p) => matchesPattern(p, value));

function sourceMatches(s: SourceMatch, principal: string): boolean {
  const ns = namespaceOfId(principal);
  if (s.principals && !any(s.principals, principal)) return false;
  if (s.notPrincipals && any(s.notPrincipals, principal)) return false;
  if (s.namespaces && !any(s.namespaces, ns)) return false;
  if (s.notNamespaces && any(s.notNamespaces, ns)) return false;
  return true;
}

function operationMatches(o: OperationMatch, port: number): boolean {
  if (o.ports && !o.ports.includes(port)) return false;
  if (o.notPorts && o.notPorts.includes(port)) return false;
  return true;
}

export function ruleMatches(r: Rule, principal: string, port: number): boolean {
  return (!r.from || r.from.some((s) => sourceMatches(s, principal))) && (!r.to || r.to.some((o) => operationMatches(o, port)));
}

/** Istio's order: a matching DENY policy refuses; then, if any ALLOW policy applies, one must match. */
export function authorize(policies: WorkloadPolicy['policies'], principal: string, port: number): Verdict {
  for (const p of policies.deny) if (p.rules.some((r) => ruleMatches(r, principal, port))) return { allowed: false, reason: 'deny_match', policy: p.name };
  if (policies.allow.length === 0) return { allowed: true };
  if (policies.allow.some((p) => p.rules.some((r) => ruleMatches(r, principal, port)))) return { allowed: true };
  return { allowed: false, reason: 'no_allow_match', policy: policies.allow.map((p) => p.name).join(',') };
}
