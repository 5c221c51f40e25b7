// From Istio objects to a per-workload view: the mTLS mode of each port and the ALLOW and DENY policies that
// select the workload, in the form the data plane's config takes (`workloads[].policies`).
import { parseAuthorizationPolicy, type AuthorizationPolicy, type Rule, type SourceMatch } from './authorization.js';
import { oldestFirst, PolicyError, refOf, selects, type WorkloadRef } from './object.js';
import { parsePeerAuthentication, type MtlsMode, type PeerAuthentication } from './peer-authentication.js';

/** Istio's default root namespace: policies there without a selector apply to the whole mesh. */
export const DEFAULT_ROOT_NAMESPACE = 'istio-system';

/** What the mesh enforces per port. DISABLE reads as PERMISSIVE: plaintext is served, mesh peers still tunnel. */
export type EffectiveMode = 'STRICT' | 'PERMISSIVE';

/** One policy as the data plane takes it: `<namespace>/<name>` (the label of its denials) and its rules. */
export interface CompiledPolicy {
  readonly name: string;
  readonly rules: readonly Rule[];
}

export interface WorkloadPolicy {
  readonly workload: WorkloadRef;
  readonly mtls: {
    /** The mode of ports without a port-level setting. */
    readonly mode: EffectiveMode;
    /** Every port of the workload and every port a port-level setting names. */
    readonly ports: Readonly<Record<number, EffectiveMode>>;
    /** The PeerAuthentications that decided it, most specific first (`<namespace>/<name>`). */
    readonly from: readonly string[];
  };
  /**
   * DENY first: a matching DENY policy refuses. Then, if `allow` is not empty, the connection must match one of
   * its policies (an ALLOW policy without rules matches nothing). The data plane's `policies` field.
   */
  readonly policies: { readonly deny: readonly CompiledPolicy[]; readonly allow: readonly CompiledPolicy[] };
}

export type PolicyResult =
  | { readonly ok: true; readonly workloads: ReadonlyMap<string, WorkloadPolicy>; readonly warnings: readonly string[] }
  | { readonly ok: false; readonly errors: readonly string[] };

export interface PolicyInput {
  /** PeerAuthentication and AuthorizationPolicy objects, as read from the API server or YAML. */
  readonly objects: readonly unknown[];
  readonly workloads: readonly WorkloadRef[];
  readonly rootNamespace?: string;
  /** The mesh's trust domain (default `cluster.local`) and the ones it answers for during a migration. */
  readonly trustDomain?: string;
  readonly trustDomainAliases?: readonly string[];
}

/**
 * Istio's reading of a principal's trust domain: `cluster.local` stands for the mesh's trust domain, and a
 * principal in the trust domain or one of its aliases matches the same workload in all of them.
 */
function trustDomainExpander(trustDomain: string, aliases: readonly string[]): (patterns: readonly string[]) => string[] {
  const bundle = [trustDomain, ...aliases.filter((a) => a !== trustDomain)];
  return (patterns) => {
    const out: string[] = [];
    for (const p of patterns) {
      const m = /^spiffe:\/\/([^/*]+)(\/.*)$/.exec(p);
      const expand = m && (m[1] === 'cluster.local' || bundle.includes(m[1]!));
      for (const q of expand ? bundle.map((td) => `spiffe://${td}${m![2]}`) : [p]) if (!out.includes(q)) out.push(q);
    }
    return out;
  };
}

function mapPrincipals(rules: readonly Rule[], f: (patterns: readonly string[]) => string[]): Rule[] {
  const source = (s: SourceMatch): SourceMatch => ({
    ...s,
    ...(s.principals ? { principals: f(s.principals) } : {}),
    ...(s.notPrincipals ? { notPrincipals: f(s.notPrincipals) } : {}),
  });
  return rules.map((r) => (r.from ? { ...r, from: r.from.map(source) } : r));
}

// A problem with the list of objects rather than inside one (another kind, a duplicate).
class ObjectError extends Error {}

function effective(m: MtlsMode, inherited: EffectiveMode): EffectiveMode {
  return m === 'UNSET' ? inherited : m === 'STRICT' ? 'STRICT' : 'PERMISSIVE';
}

/** The policies of a workload no policy selects: one object for all of them (a node's 20,000 workloads). */
const NO_POLICIES: WorkloadPolicy['policies'] = Object.freeze({ deny: Object.freeze([]), allow: Object.freeze([]) });
const NO_PEER_AUTHENTICATIONS: readonly string[] = Object.freeze([]);

/**
 * Parses every object and compiles the view of every workload. Any rejected object makes the whole result an
 * error (listing every problem): applying the others without it could let in what it was meant to keep out.
 */
export function compilePolicies(input: PolicyInput): PolicyResult {
  const steps = compilePolicySteps(input);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/** compilePolicies as a generator that yields every few hundred workloads, so that a caller can let its event
 *  loop turn between them (the agent compiles 20,000 workloads' views in one apply). */
export function* compilePolicySteps(input: PolicyInput): Generator<void, PolicyResult, void> {
  const root = input.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
  const expand = trustDomainExpander(input.trustDomain ?? 'cluster.local', input.trustDomainAliases ?? []);
  const errors: string[] = [];
  const warnings: string[] = [];
  const peers: PeerAuthentication[] = [];
  const authz: AuthorizationPolicy[] = [];
  const seen = new Set<string>();
  input.objects.forEach((obj, i) => {
    const kind = (obj as { kind?: unknown } | null)?.kind;
    try {
      if (kind === 'PeerAuthentication') peers.push(parsePeerAuthentication(obj));
      else if (kind === 'AuthorizationPolicy') authz.push(parseAuthorizationPolicy(obj));
      else throw new ObjectError(`objects[${i}]: kind ${JSON.stringify(kind)} is not PeerAuthentication or AuthorizationPolicy`);
      const last = kind === 'PeerAuthentication' ? peers[peers.length - 1]! : authz[authz.length - 1]!;
      const key = `${kind} ${refOf(last)}`;
      if (seen.has(key)) throw new ObjectError(`${key}: appears twice`);
      seen.add(key);
    } catch (e) {
      if (!(e instanceof PolicyError) && !(e instanceof ObjectError)) throw e;
      errors.push(e.message);
    }
  });
  if (errors.length > 0) return { ok: false, errors };

  for (const p of peers)
    if (p.namespace === root && p.selector)
      warnings.push(`PeerAuthentication ${refOf(p)}: spec.selector in the root namespace ${root}: ignored, as Istio does`);
  const usable = peers.filter((p) => !(p.namespace === root && p.selector)).sort(oldestFirst);
  const mesh = usable.find((p) => p.namespace === root);
  const sortedAuthz = [...authz].sort((a, b) => (refOf(a) < refOf(b) ? -1 : refOf(a) > refOf(b) ? 1 : 0));

  const out = new Map<string, WorkloadPolicy>();
  let i = 0;
  for (const w of input.workloads) {
    if (++i % 256 === 0) yield;
    const ns = usable.length ? usable.find((p) => p.namespace === w.namespace && p.namespace !== root && !p.selector) : undefined;
    const wl = usable.length ? usable.find((p) => p.namespace === w.namespace && p.selector && selects(p.selector, w)) : undefined;
    let mode: EffectiveMode = 'PERMISSIVE';
    let from = NO_PEER_AUTHENTICATIONS;
    if (mesh || ns || wl) {
      for (const p of [mesh, ns, wl]) {
        if (!p) continue;
        mode = effective(p.mode, mode);
        from = [refOf(p), ...from];
      }
    }
    const ports: Record<number, EffectiveMode> = {};
    for (const port of w.ports ?? []) ports[port] = mode;
    for (const [port, m] of wl?.portLevel ?? []) ports[port] = effective(m, mode);
    out.set(`${w.namespace}/${w.name}`, { workload: w, mtls: { mode, ports, from }, policies: sortedAuthz.length ? authorizationsOf(w) : NO_POLICIES });
  }
  return { ok: true, workloads: out, warnings };

  function authorizationsOf(w: WorkloadRef): WorkloadPolicy['policies'] {
    const applies = (a: AuthorizationPolicy): boolean => (a.namespace === root || a.namespace === w.namespace) && selects(a.selector, w);
    const compiled = (a: AuthorizationPolicy): CompiledPolicy => ({ name: refOf(a), rules: mapPrincipals(a.rules, expand) });
    return {
      deny: sortedAuthz.filter((a) => a.action === 'DENY' && applies(a)).map(compiled),
      allow: sortedAuthz.filter((a) => a.action === 'ALLOW' && applies(a)).map(compiled),
    };
  }
}
