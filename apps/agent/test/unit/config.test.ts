// Config parsing and validation, without a kernel: each problem names the file, the document, the object and
// the field; a config is accepted or rejected whole.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { loadConfig, parseConfig, splitDocuments } from '../../src/config/file.js';
import { ConfigError, resolveConfig } from '../../src/config/objects.js';

const file = (text: string) => [{ path: 'mesh.yaml', text }];
const problemsOf = (text: string): string[] => {
  try {
    resolveConfig(parseConfig(file(text)));
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error('config was accepted');
};

const SVC = (name: string, ip: string, extra = '') => `apiVersion: v1
kind: Service
metadata: { name: ${name} }
spec: { clusterIP: ${ip}, ports: [{ port: 80 }]${extra} }
`;
const WL = (name: string, spec: string, labels = '{ app: web }') => `apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: ${name}, labels: ${labels} }
spec: ${spec}
`;

describe('config', () => {
  it('resolves the example: endpoints computed from workloads, route accepted', () => {
    const cfg = resolveConfig(loadConfig(join(import.meta.dirname, '../../../../examples/single-host/mesh.yaml')));
    expect(cfg.workloads.map((w) => `${w.namespace}/${w.name}@${w.cgroup}`)).toEqual([
      'default/reviews-v1@default/reviews-v1',
      'default/reviews-v2@default/reviews-v2',
      'default/productpage@default/productpage',
    ]);
    const slices = cfg.routing.endpointSlices.map((s) => `${s.metadata.name}:${s.endpoints.map((e) => e.addresses[0]).join(',')}`);
    expect(slices).toEqual(['reviews-v4:127.0.1.1,127.0.1.2', 'reviews-v1-v4:127.0.1.1', 'reviews-v2-v4:127.0.1.2']);
    expect(cfg.routes[0]!.parents[0]!.conditions.map((c) => `${c.type}=${c.status}`)).toEqual(['Accepted=True', 'ResolvedRefs=True']);
  });

  const PWL = (name: string, labels: string, port = 8080) => `apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: ${name}, labels: ${labels} }
spec: { serviceAccount: ${name}, addresses: [127.9.0.${port - 8070}], ports: [{ name: http, port: ${port} }] }
`;
  const PA = (name: string, mode: string, selector = '') => `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: ${name} }
spec: { ${selector}mtls: { mode: ${mode} } }
`;
  const AP = (name: string, to: string) => `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ${name} }
spec: { action: ALLOW, selector: { matchLabels: { app: server } }, rules: [{ from: [{ source: { principals: ["cluster.local/ns/default/sa/client"] } }], to: [{ operation: ${to} }] }] }
`;

  it('compiles PeerAuthentication and AuthorizationPolicy into per-workload modes and policies', () => {
    const text = [PWL('server', '{ app: server }', 8080), PWL('other', '{ app: other }', 8081), PA('strict', 'STRICT', 'selector: { matchLabels: { app: server } }, '), AP('allow-client', '{ ports: ["8080"] }')].join('---\n');
    const cfg = resolveConfig(parseConfig(file(text)));
    const server = cfg.policies.get('default/server')!;
    expect(server.mtls).toEqual({ mode: 'STRICT', ports: { 8080: 'STRICT' }, from: ['default/strict'] });
    expect(server.policies.allow.map((p) => p.name)).toEqual(['default/allow-client']);
    expect(cfg.policies.get('default/other')!.mtls.mode).toBe('PERMISSIVE');
    expect(cfg.policies.get('default/other')!.policies.allow).toEqual([]);
  });

  it('an AuthorizationPolicy with an L7 field rejects the whole config, naming document, policy and field', () => {
    const problems = problemsOf([PWL('server', '{ app: server }'), AP('allow-get', '{ ports: ["8080"], methods: [GET] }')].join('---\n'));
    expect(problems).toEqual([
      'mesh.yaml: document 2 (line 6): AuthorizationPolicy default/allow-get: spec.rules[0].to[0].operation.methods: L7 field, cannot be enforced by the mesh (it sees connections, not requests)',
    ]);
  });

  const cases: [string, string, RegExp][] = [
    ['YAML syntax', SVC('a', '127.9.0.1') + '---\nkind: [\n', /^mesh\.yaml: document 2 \(line 7, column 1\): YAML syntax: /],
    ['duplicate keys', 'kind: Service\nkind: Service\n', /^mesh\.yaml: document 1 \(line 2, column 1\): YAML syntax: duplicated mapping key/],
    ['unknown kind', SVC('a', '127.9.0.1') + '---\napiVersion: v1\nkind: Pod\nmetadata: { name: p }\n', /^mesh\.yaml: document 2 \(line 6\): Pod default\/p: kind: "Pod" is not one of Service, EndpointSlice, HTTPRoute, Workload, PeerAuthentication, AuthorizationPolicy$/],
    ['no kind', 'apiVersion: v1\nmetadata: { name: a }\n', /^mesh\.yaml: document 1 \(line 1\): kind: is required/],
    ['wrong apiVersion', 'apiVersion: gateway.networking.k8s.io/v1beta1\nkind: Service\nmetadata: { name: a }\n', /^mesh\.yaml: document 1 \(line 1\): Service default\/a: apiVersion: must be v1, got "gateway\.networking\.k8s\.io\/v1beta1"$/],
    ['not a mapping', '- a\n- b\n', /^mesh\.yaml: document 1 \(line 1\): must be a mapping/],
    ['missing name', 'apiVersion: v1\nkind: Service\nmetadata: {}\n', /^mesh\.yaml: document 1 \(line 1\): Service \(unnamed\): metadata\.name: is required$/],
    ['defined twice', SVC('a', '127.9.0.1') + '---\n' + SVC('a', '127.9.0.2'), /^mesh\.yaml: document 2 \(line 6\): Service default\/a: metadata\.name: already defined at mesh\.yaml: document 1 \(line 1\)$/],
    ['missing ports', 'apiVersion: v1\nkind: Service\nmetadata: { name: a }\nspec: { clusterIP: 127.9.0.1 }\n', /^mesh\.yaml: document 1 \(line 1\): Service default\/a: spec\.ports: must list at least one port$/],
    ['bad address', SVC('a', '127.9.0.300'), /^mesh\.yaml: document 1 \(line 1\): Service default\/a: spec\.clusterIP: must be an IPv4 or IPv6 address, got "127\.9\.0\.300"$/],
    ['duplicate VIP', SVC('a', '127.9.0.1') + '---\n' + SVC('b', '127.9.0.1'), /^mesh\.yaml: document 2 \(line 6\): Service default\/b: spec\.ports\[0\]: 127\.9\.0\.1:80\/TCP is already the address of Service default\/a$/],
    [
      'fractional weight',
      SVC('a', '127.9.0.1') + '---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: r }\nspec:\n  parentRefs: [{ kind: Service, name: a, port: 80 }]\n  rules: [{ backendRefs: [{ name: a, port: 80, weight: 0.5 }] }]\n',
      /^mesh\.yaml: document 2 \(line 6\): HTTPRoute default\/r: spec\.rules\[0\]\.backendRefs\[0\]\.weight: must be an integer in \[0, 1000000\], got 0\.5$/,
    ],
    ['workload without addresses', WL('w', '{ serviceAccount: web }'), /^mesh\.yaml: document 1 \(line 1\): Workload default\/w: spec\.addresses: must list/],
    ['workload bad address', WL('w', '{ addresses: [localhost] }'), /Workload default\/w: spec\.addresses\[0\]: must be an IPv4 or IPv6 address, got "localhost"$/],
    ['workload cgroup escaping the root', WL('w', '{ addresses: [], cgroup: ../etc }'), /Workload default\/w: spec\.cgroup: must be a relative path under the mesh's cgroup root/],
    ['workload absolute cgroup', WL('w', '{ addresses: [], cgroup: /sys/fs/cgroup }'), /Workload default\/w: spec\.cgroup: must be a relative path/],
    ['address of two workloads', WL('w1', '{ addresses: [127.9.1.1] }') + '---\n' + WL('w2', '{ addresses: [127.9.1.1] }'), /^mesh\.yaml: document 2 \(line 6\): Workload default\/w2: spec\.addresses\[0\]: 127\.9\.1\.1 is already an address of Workload default\/w1$/],
    ['nested cgroups', WL('w1', '{ addresses: [], cgroup: team/a }') + '---\n' + WL('w2', '{ addresses: [], cgroup: team/a/b }'), /Workload default\/w2: spec\.cgroup: "team\/a\/b" nests with "team\/a" of Workload default\/w1$/],
    ['bad service account', WL('w', '{ addresses: [], serviceAccount: Web_1 }'), /Workload default\/w: spec\.serviceAccount: must be a DNS label, got "Web_1"$/],
  ];
  it.each(cases)('%s: names document, object and field', (_name, text, re) => {
    const problems = problemsOf(text);
    expect(problems.some((p) => re.test(p)), problems.join('\n')).toBe(true);
  });

  it('finds nested cgroups among many workloads, each reported once on the later workload, and only those', () => {
    const cgroups = ['team/a/b', 'team/a-b', 'team/ab', 'team/a', 'team.x/a', 'other', 'team/a/b/c', 'team/ab/c', ...Array.from({ length: 500 }, (_, i) => `bulk/w${i}`)];
    const text = cgroups.map((cg, i) => WL(`w${i}`, `{ addresses: [], cgroup: ${cg} }`)).join('---\n');
    const nested = problemsOf(text).map((p) => p.replace(/^mesh\.yaml: document \d+ \(line \d+\): /, ''));
    expect(nested).toEqual([
      'Workload default/w3: spec.cgroup: "team/a" nests with "team/a/b" of Workload default/w0',
      'Workload default/w6: spec.cgroup: "team/a/b/c" nests with "team/a/b" of Workload default/w0',
      'Workload default/w7: spec.cgroup: "team/ab/c" nests with "team/ab" of Workload default/w2',
    ]);
  });

  it('reports every problem of a config at once', () => {
    const problems = problemsOf(SVC('a', '127.9.0.300') + '---\n' + WL('w', '{ addresses: [nope] }'));
    expect(problems).toHaveLength(2);
  });

  it('an unresolved backend is route status (ResolvedRefs=False), not a rejection', () => {
    const cfg = resolveConfig(
      parseConfig(file(SVC('a', '127.9.0.1') + '---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: r }\nspec:\n  parentRefs: [{ kind: Service, name: a, port: 80 }]\n  rules: [{ backendRefs: [{ name: ghost, port: 80 }] }]\n')),
    );
    const cond = cfg.routes[0]!.parents[0]!.conditions.find((c) => c.type === 'ResolvedRefs')!;
    expect(cond.status).toBe('False');
    expect(cond.reason).toBe('BackendNotFound');
  });

  it('reads PeerAuthentication and AuthorizationPolicy (security.istio.io/v1) into securityPolicies, as written', () => {
    const pa = 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: strict, namespace: shop }\nspec: { mtls: { mode: STRICT } }\n';
    const ap = 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: deny-all, namespace: shop }\nspec: { action: DENY, rules: [{}] }\n';
    const cfg = parseConfig(file(`${SVC('a', '127.9.0.1')}---\n${pa}---\n${ap}`));
    expect(cfg.securityPolicies).toEqual([
      { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'strict', namespace: 'shop' }, spec: { mtls: { mode: 'STRICT' } } },
      { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'deny-all', namespace: 'shop' }, spec: { action: 'DENY', rules: [{}] } },
    ]);
    expect(cfg.origins!.get('AuthorizationPolicy shop/deny-all')).toEqual({ file: 'mesh.yaml', document: 3, line: expect.any(Number) });
    // Parsed, not compiled here: the routing config resolves as without them.
    expect(resolveConfig(cfg).compiled.services.length).toBe(1);
    expect(() => parseConfig(file(pa.replace('security.istio.io/v1', 'security.istio.io/v1beta1')))).toThrow(
      /PeerAuthentication shop\/strict: apiVersion: must be security\.istio\.io\/v1, got "security\.istio\.io\/v1beta1"/,
    );
  });

  describe('directories', () => {
    let dir: string | undefined;
    afterEach(() => {
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('reads every *.yaml, *.yml and *.json file in name order, and nothing else', () => {
      dir = mkdtempSync(join(tmpdir(), 'mesh-cfg-'));
      writeFileSync(join(dir, '20-b.yml'), SVC('b', '127.9.0.2'));
      writeFileSync(join(dir, '10-a.yaml'), SVC('a', '127.9.0.1'));
      writeFileSync(join(dir, '30-c.json'), JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'c' }, spec: { clusterIP: '127.9.0.3', ports: [{ port: 80 }] } }));
      writeFileSync(join(dir, 'notes.txt'), 'kind: [');
      writeFileSync(join(dir, '.hidden.yaml'), 'kind: [');
      const cfg = loadConfig(dir);
      expect(cfg.services.map((s) => s.metadata.name)).toEqual(['a', 'b', 'c']);
      expect(cfg.origins!.get('Service default/b')).toEqual({ file: join(dir, '20-b.yml'), document: 1, line: 1 });
    });

    it('an empty directory or a missing path is an error naming it', () => {
      dir = mkdtempSync(join(tmpdir(), 'mesh-cfg-'));
      expect(() => loadConfig(dir!)).toThrow(/holds no \*\.yaml, \*\.yml or \*\.json file/);
      expect(() => loadConfig(join(dir!, 'missing.yaml'))).toThrow(/missing\.yaml: cannot read the config/);
    });
  });
});

describe('splitDocuments', () => {
  const split = (t: string) => splitDocuments(t).map((c) => [c.index, c.startLine, c.contentLine, c.text]);
  it('splits at --- and ..., keeps positions, skips what holds only comments', () => {
    expect(split('# header\n\na: 1\n---\nb: 2\n...\n# trailing\n')).toEqual([
      [1, 1, 3, '# header\n\na: 1'],
      [2, 4, 5, '---\nb: 2'],
    ]);
  });
  it('an explicit empty document counts; content on the marker line is content', () => {
    expect(split('---\n---\n--- {a: 1}\n')).toEqual([
      [1, 1, 1, '---'],
      [2, 2, 2, '---'],
      [3, 3, 3, '--- {a: 1}\n'],
    ]);
  });
  it('---- or ---x is no marker; directives go with the document after them', () => {
    expect(split('a: |\n  ---\nb: ----x\n')).toHaveLength(1);
    expect(split('%YAML 1.2\n---\na: 1\n')).toEqual([[1, 1, 3, '%YAML 1.2\n---\na: 1\n']]);
  });
});
