// Istio's PeerAuthentication and AuthorizationPolicy as the mesh reads them: parsing, the rejection messages
// (naming the field), mode precedence (workload > namespace > mesh, UNSET inherits) and the ALLOW/DENY verdict.
import { describe, expect, it } from 'vitest';
import { authorize, compilePolicies, type PolicyInput, type WorkloadPolicy, type WorkloadRef } from '../../src/index.js';

const TD = 'spiffe://cluster.local';
const pa = (ns: string, name: string, spec: object, extra: object = {}): object => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'PeerAuthentication',
  metadata: { namespace: ns, name, ...extra },
  spec,
});
const ap = (ns: string, name: string, spec: object, apiVersion = 'security.istio.io/v1'): object => ({
  apiVersion,
  kind: 'AuthorizationPolicy',
  metadata: { namespace: ns, name },
  spec,
});
const web: WorkloadRef = { namespace: 'foo', name: 'web', labels: { app: 'web' }, ports: [8080, 9090] };
const db: WorkloadRef = { namespace: 'foo', name: 'db', labels: { app: 'db' }, ports: [5432] };
const other: WorkloadRef = { namespace: 'bar', name: 'web', labels: { app: 'web' }, ports: [8080] };

function compile(objects: object[], workloads: WorkloadRef[] = [web, db, other], rootNamespace?: string): Map<string, WorkloadPolicy> {
  const r = compilePolicies({ objects, workloads, ...(rootNamespace ? { rootNamespace } : {}) } as PolicyInput);
  if (!r.ok) throw new Error(r.errors.join('\n'));
  return r.workloads as Map<string, WorkloadPolicy>;
}
function errors(objects: object[]): readonly string[] {
  const r = compilePolicies({ objects, workloads: [web] });
  if (r.ok) throw new Error('expected the policies to be rejected');
  return r.errors;
}

describe('PeerAuthentication precedence', () => {
  const meshStrict = pa('istio-system', 'default', { mtls: { mode: 'STRICT' } });
  const nsPermissive = pa('foo', 'default', { mtls: { mode: 'PERMISSIVE' } });
  const webStrict = pa('foo', 'web', { selector: { matchLabels: { app: 'web' } }, mtls: { mode: 'STRICT' } });
  it.each<[string, object[], string, string, Record<number, string>]>([
    ['no policy: PERMISSIVE', [], 'foo/web', 'PERMISSIVE', { 8080: 'PERMISSIVE', 9090: 'PERMISSIVE' }],
    ['mesh STRICT', [meshStrict], 'bar/web', 'STRICT', { 8080: 'STRICT' }],
    ['namespace over mesh', [meshStrict, nsPermissive], 'foo/db', 'PERMISSIVE', { 5432: 'PERMISSIVE' }],
    ['namespace policy stays in its namespace', [meshStrict, nsPermissive], 'bar/web', 'STRICT', { 8080: 'STRICT' }],
    ['workload over namespace', [meshStrict, nsPermissive, webStrict], 'foo/web', 'STRICT', { 8080: 'STRICT', 9090: 'STRICT' }],
    ['selector picks its workloads only', [nsPermissive, webStrict], 'foo/db', 'PERMISSIVE', { 5432: 'PERMISSIVE' }],
    ['namespace UNSET inherits the mesh', [meshStrict, pa('foo', 'default', { mtls: { mode: 'UNSET' } })], 'foo/db', 'STRICT', { 5432: 'STRICT' }],
    ['no mtls at all inherits', [meshStrict, pa('foo', 'default', {})], 'foo/db', 'STRICT', { 5432: 'STRICT' }],
    ['DISABLE reads as PERMISSIVE', [pa('foo', 'default', { mtls: { mode: 'DISABLE' } })], 'foo/db', 'PERMISSIVE', { 5432: 'PERMISSIVE' }],
    [
      'port level overrides the workload; UNSET port inherits',
      [meshStrict, pa('foo', 'web', { selector: { matchLabels: { app: 'web' } }, mtls: { mode: 'UNSET' }, portLevelMtls: { 9090: { mode: 'PERMISSIVE' }, 8080: { mode: 'UNSET' }, 7000: { mode: 'DISABLE' } } })],
      'foo/web', 'STRICT', { 8080: 'STRICT', 9090: 'PERMISSIVE', 7000: 'PERMISSIVE' },
    ],
    [
      'the oldest of two workload policies wins',
      [
        pa('foo', 'a-new', { selector: { matchLabels: { app: 'web' } }, mtls: { mode: 'PERMISSIVE' } }, { creationTimestamp: '2026-02-01T00:00:00Z' }),
        pa('foo', 'z-old', { selector: { matchLabels: { app: 'web' } }, mtls: { mode: 'STRICT' } }, { creationTimestamp: '2026-01-01T00:00:00Z' }),
      ],
      'foo/web', 'STRICT', { 8080: 'STRICT', 9090: 'STRICT' },
    ],
  ])('%s', (_name, objects, workload, mode, ports) => {
    const w = compile(objects).get(workload)!;
    expect(w.mtls.mode).toBe(mode);
    expect(w.mtls.ports).toEqual(ports);
  });

  it('names the policies that decided, most specific first', () => {
    expect(compile([meshStrict, nsPermissive, webStrict]).get('foo/web')!.mtls.from).toEqual(['foo/web', 'foo/default', 'istio-system/default']);
  });

  it('takes the root namespace from the caller, and ignores a selector there with a warning (as Istio does)', () => {
    expect(compile([pa('mesh-root', 'default', { mtls: { mode: 'STRICT' } })], [db], 'mesh-root').get('foo/db')!.mtls.mode).toBe('STRICT');
    expect(compile([pa('istio-system', 'default', { mtls: { mode: 'STRICT' } })], [db], 'mesh-root').get('foo/db')!.mtls.mode).toBe('PERMISSIVE');
    const r = compilePolicies({ objects: [pa('istio-system', 'web', { selector: { matchLabels: { app: 'web' } }, mtls: { mode: 'STRICT' } })], workloads: [web] });
    expect(r.ok && r.workloads.get('foo/web')!.mtls.mode).toBe('PERMISSIVE');
    expect(r.ok && r.warnings).toEqual(['PeerAuthentication istio-system/web: spec.selector in the root namespace istio-system: ignored, as Istio does']);
  });
});

describe('rejected objects name the field', () => {
  it.each<[string, object, string]>([
    ['L7 method', ap('default', 'deny-get', { action: 'DENY', rules: [{ to: [{ operation: { methods: ['GET'] } }] }] }),
      'AuthorizationPolicy default/deny-get: spec.rules[0].to[0].operation.methods: L7 field, cannot be enforced by the mesh (it sees connections, not requests)'],
    ['L7 path in an ALLOW rule', ap('foo', 'p', { rules: [{ from: [{ source: { principals: ['cluster.local/ns/a/sa/b'] } }], to: [{ operation: { ports: ['8080'] } }, { operation: { paths: ['/admin'] } }] }] }),
      'AuthorizationPolicy foo/p: spec.rules[0].to[1].operation.paths: L7 field'],
    ['hosts', ap('foo', 'p', { rules: [{ to: [{ operation: { notHosts: ['x'] } }] }] }), 'spec.rules[0].to[0].operation.notHosts: L7 field'],
    ['requestPrincipals', ap('foo', 'p', { rules: [{ from: [{ source: { requestPrincipals: ['*'] } }] }] }), 'spec.rules[0].from[0].source.requestPrincipals: L7 field'],
    ['when on a request header', ap('foo', 'p', { rules: [{ when: [{ key: 'request.headers[x]', values: ['1'] }] }] }), 'spec.rules[0].when[0]: condition on "request.headers[x]": L7 field'],
    ['when on an L4 key', ap('foo', 'p', { rules: [{ when: [{ key: 'source.ip', values: ['10.0.0.1'] }] }] }), 'spec.rules[0].when[0]: condition on "source.ip": conditions are not supported'],
    ['ipBlocks', ap('foo', 'p', { rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/8'] } }] }] }), 'spec.rules[0].from[0].source.ipBlocks: not supported by the mesh yet'],
    ['AUDIT', ap('foo', 'p', { action: 'AUDIT', rules: [{}] }), 'AuthorizationPolicy foo/p: spec.action: AUDIT is not supported by the mesh (only ALLOW and DENY)'],
    ['CUSTOM', ap('foo', 'p', { action: 'CUSTOM', provider: { name: 'x' }, rules: [{}] }), 'spec.action: CUSTOM is not supported'],
    ['unknown action', ap('foo', 'p', { action: 'LOG' }), 'spec.action: expected ALLOW or DENY, got "LOG"'],
    ['targetRefs', ap('foo', 'p', { targetRefs: [{ kind: 'Gateway', name: 'g' }] }), 'spec.targetRefs: targets a gateway'],
    ['an unknown field', ap('foo', 'p', { rules: [{ from: [{ source: { principals: ['a/b'], futureField: ['x'] } }] }] }), 'spec.rules[0].from[0].source.futureField: unknown field, not understood by the mesh'],
    ['an empty source', ap('foo', 'p', { rules: [{ from: [{ source: {} }] }] }), 'spec.rules[0].from[0].source: must not be empty'],
    ['a wildcard in the middle', ap('foo', 'p', { rules: [{ from: [{ source: { principals: ['cluster.local/*/sa/x'] } }] }] }), 'spec.rules[0].from[0].source.principals[0]: "cluster.local/*/sa/x": "*" only alone, at the start or at the end'],
    ['spiffe:// in a principal', ap('foo', 'p', { rules: [{ from: [{ source: { notPrincipals: ['spiffe://cluster.local/ns/a/sa/b'] } }] }] }), 'spec.rules[0].from[0].source.notPrincipals[0]: "spiffe://cluster.local/ns/a/sa/b": Istio principals are written without "spiffe://"'],
    ['a principal that is no SPIFFE ID', ap('foo', 'p', { rules: [{ from: [{ source: { principals: ['cluster.local/ns/a b/sa/x'] } }] }] }), 'spec.rules[0].from[0].source.principals[0]: "cluster.local/ns/a b/sa/x": invalid SPIFFE ID'],
    ['a principal naming only a trust domain', ap('foo', 'p', { rules: [{ from: [{ source: { principals: ['cluster.local'] } }] }] }), 'spec.rules[0].from[0].source.principals[0]: "cluster.local": names a trust domain, not a workload'],
    ['a bad port', ap('foo', 'p', { rules: [{ to: [{ operation: { ports: ['80-90'] } }] }] }), 'spec.rules[0].to[0].operation.ports[0]: expected a port from 1 to 65535, got "80-90"'],
    ['a bad apiVersion', { ...ap('foo', 'p', {}), apiVersion: 'security.istio.io/v2' }, 'AuthorizationPolicy foo/p: apiVersion: expected one of security.istio.io/v1, security.istio.io/v1beta1'],
    ['a bad mode', pa('foo', 'p', { mtls: { mode: 'strict' } }), 'PeerAuthentication foo/p: spec.mtls.mode: expected one of UNSET, DISABLE, PERMISSIVE, STRICT, got "strict"'],
    ['port level without selector', pa('foo', 'p', { portLevelMtls: { 8080: { mode: 'STRICT' } } }), 'PeerAuthentication foo/p: spec.portLevelMtls: needs spec.selector'],
    ['a bad port key', pa('foo', 'p', { selector: { matchLabels: { app: 'web' } }, portLevelMtls: { http: { mode: 'STRICT' } } }), 'spec.portLevelMtls.http: expected a port from 1 to 65535'],
    ['another kind', { apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { namespace: 'foo', name: 'r' } }, 'objects[0]: kind "RequestAuthentication" is not PeerAuthentication or AuthorizationPolicy'],
  ])('%s', (_name, obj, message) => {
    const errs = errors([obj]);
    expect(errs).toHaveLength(1);
    expect(errs[0]).toContain(message);
  });

  it('rejects the whole set when one object is bad, listing every problem', () => {
    const good = ap('foo', 'ok', { rules: [{}] });
    const r = compilePolicies({
      objects: [good, ap('foo', 'a', { rules: [{ to: [{ operation: { methods: ['GET'] } }] }] }), pa('foo', 'b', { mtls: { mode: 'X' } }), good],
      workloads: [web],
    });
    expect(r.ok).toBe(false);
    expect(!r.ok && r.errors.map((e) => e.split(':')[0])).toEqual(['AuthorizationPolicy foo/a', 'PeerAuthentication foo/b', 'AuthorizationPolicy foo/ok']);
    expect(!r.ok && r.errors[2]).toBe('AuthorizationPolicy foo/ok: appears twice');
  });
});

describe('AuthorizationPolicy selection and verdicts', () => {
  const client = `${TD}/ns/default/sa/client`;
  const intruder = `${TD}/ns/default/sa/intruder`;
  const fromTest = `${TD}/ns/test/sa/sleep`;
  const policiesOf = (objects: object[], w = 'foo/web'): WorkloadPolicy['policies'] => compile(objects).get(w)!.policies;

  it('applies root-namespace policies everywhere, namespace ones in their namespace, selectors to their labels', () => {
    const objects = [
      ap('istio-system', 'mesh-deny', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['evil'] } }] }] }),
      ap('foo', 'ns-allow', { rules: [{}] }),
      ap('foo', 'db-only', { selector: { matchLabels: { app: 'db' } }, rules: [{}] }),
      ap('istio-system', 'all-web', { selector: { matchLabels: { app: 'web' } }, rules: [{}] }),
    ];
    const names = (w: string) => {
      const p = policiesOf(objects, w);
      return { deny: p.deny.map((x) => x.name), allow: p.allow.map((x) => x.name) };
    };
    expect(names('foo/web')).toEqual({ deny: ['istio-system/mesh-deny'], allow: ['foo/ns-allow', 'istio-system/all-web'] });
    expect(names('foo/db')).toEqual({ deny: ['istio-system/mesh-deny'], allow: ['foo/db-only', 'foo/ns-allow'] });
    expect(names('bar/web')).toEqual({ deny: ['istio-system/mesh-deny'], allow: ['istio-system/all-web'] });
  });

  it('compiles principals to SPIFFE IDs and ports to numbers', () => {
    const p = policiesOf([ap('foo', 'p', { rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/client', 'cluster.local/ns/x/*', '*/sa/y', '*'] } }], to: [{ operation: { ports: ['8080'], notPorts: [9090] } }] }] }, 'security.istio.io/v1beta1')]);
    expect(p.allow[0]!.rules).toEqual([
      { from: [{ principals: [client, `${TD}/ns/x/*`, '*/sa/y', '*'] }], to: [{ ports: [8080], notPorts: [9090] }] },
    ]);
  });

  it.each<[string, { trustDomain?: string; trustDomainAliases?: string[] }, string[], string[]]>([
    ['cluster.local is the mesh trust domain', { trustDomain: 'example.org' }, ['cluster.local/ns/a/sa/b', 'cluster.local/ns/x/*'], ['spiffe://example.org/ns/a/sa/b', 'spiffe://example.org/ns/x/*']],
    ['the default trust domain', {}, ['cluster.local/ns/a/sa/b'], ['spiffe://cluster.local/ns/a/sa/b']],
    ['aliases: either trust domain matches both', { trustDomain: 'new-td', trustDomainAliases: ['old-td'] }, ['old-td/ns/a/sa/b', 'cluster.local/ns/c/sa/d'],
      ['spiffe://new-td/ns/a/sa/b', 'spiffe://old-td/ns/a/sa/b', 'spiffe://new-td/ns/c/sa/d', 'spiffe://old-td/ns/c/sa/d']],
    ['another trust domain stays as written', { trustDomain: 'example.org' }, ['other.org/ns/a/sa/b', '*/sa/b', '*'], ['spiffe://other.org/ns/a/sa/b', '*/sa/b', '*']],
  ])('trust domains, as Istio reads them: %s', (_name, td, principals, want) => {
    const r = compilePolicies({ objects: [ap('foo', 'p', { rules: [{ from: [{ source: { principals, notPrincipals: principals } }] }] })], workloads: [web], ...td });
    if (!r.ok) throw new Error(r.errors.join('\n'));
    expect(r.workloads.get('foo/web')!.policies.allow[0]!.rules[0]!.from).toEqual([{ principals: want, notPrincipals: want }]);
  });

  const allowClient = ap('foo', 'allow-client', { rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/client'] } }] }] });
  it.each<[string, object[], string, number, ReturnType<typeof authorize>]>([
    ['no policy: allowed', [], intruder, 8080, { allowed: true }],
    ['ALLOW naming the client', [allowClient], client, 8080, { allowed: true }],
    ['ALLOW naming another principal', [allowClient], intruder, 8080, { allowed: false, reason: 'no_allow_match', policy: 'foo/allow-client' }],
    ['ALLOW without rules denies all', [ap('foo', 'nothing', {})], client, 8080, { allowed: false, reason: 'no_allow_match', policy: 'foo/nothing' }],
    ['ALLOW with one empty rule allows all', [ap('foo', 'all', { rules: [{}] })], intruder, 8080, { allowed: true }],
    ['DENY without rules denies nothing', [ap('foo', 'none', { action: 'DENY' })], intruder, 8080, { allowed: true }],
    ['DENY before ALLOW', [allowClient, ap('foo', 'deny-default', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['default'] } }] }] })], client, 8080,
      { allowed: false, reason: 'deny_match', policy: 'foo/deny-default' }],
    ['DENY by namespace spares others', [ap('foo', 'deny-default', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['default'] } }] }] })], fromTest, 8080, { allowed: true }],
    ['notNamespaces', [ap('foo', 'only-test', { action: 'DENY', rules: [{ from: [{ source: { notNamespaces: ['test'] } }] }] })], client, 8080,
      { allowed: false, reason: 'deny_match', policy: 'foo/only-test' }],
    ['notPrincipals', [ap('foo', 'not-client', { rules: [{ from: [{ source: { notPrincipals: ['cluster.local/ns/default/sa/client'] } }] }] })], client, 8080,
      { allowed: false, reason: 'no_allow_match', policy: 'foo/not-client' }],
    ['notPrincipals lets others in', [ap('foo', 'not-client', { rules: [{ from: [{ source: { notPrincipals: ['cluster.local/ns/default/sa/client'] } }] }] })], intruder, 8080, { allowed: true }],
    ['prefix principal', [ap('foo', 'p', { rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/*'] } }] }] })], intruder, 8080, { allowed: true }],
    ['prefix principal, other namespace', [ap('foo', 'p', { rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/*'] } }] }] })], fromTest, 8080,
      { allowed: false, reason: 'no_allow_match', policy: 'foo/p' }],
    ['suffix principal', [ap('foo', 'p', { rules: [{ from: [{ source: { principals: ['*/sa/sleep'] } }] }] })], fromTest, 8080, { allowed: true }],
    ['namespace wildcard', [ap('foo', 'p', { rules: [{ from: [{ source: { namespaces: ['te*'] } }] }] })], fromTest, 8080, { allowed: true }],
    ['ports: another port', [ap('foo', 'p', { rules: [{ from: [{ source: { principals: ['*'] } }], to: [{ operation: { ports: ['9090'] } }] }] })], client, 8080,
      { allowed: false, reason: 'no_allow_match', policy: 'foo/p' }],
    ['notPorts in a DENY', [ap('foo', 'p', { action: 'DENY', rules: [{ to: [{ operation: { notPorts: ['9090'] } }] }] })], client, 8080,
      { allowed: false, reason: 'deny_match', policy: 'foo/p' }],
    ['from and to both must match', [ap('foo', 'p', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['default'] } }], to: [{ operation: { ports: ['9090'] } }] }] })], client, 8080, { allowed: true }],
    ['two ALLOW policies: either', [allowClient, ap('foo', 'allow-test', { rules: [{ from: [{ source: { namespaces: ['test'] } }] }] })], fromTest, 8080, { allowed: true }],
    ['two ALLOW policies: neither, both named', [allowClient, ap('foo', 'allow-test', { rules: [{ from: [{ source: { namespaces: ['test'] } }] }] })], intruder, 8080,
      { allowed: false, reason: 'no_allow_match', policy: 'foo/allow-client,foo/allow-test' }],
  ])('%s', (_name, objects, principal, port, verdict) => {
    expect(authorize(policiesOf(objects), principal, port)).toEqual(verdict);
  });
});
