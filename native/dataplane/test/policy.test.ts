// Authorization on the tunnel: Istio AuthorizationPolicy objects, compiled by @mesh/mtls into node B's config,
// decide on the client's verified SPIFFE ID and the destination port before a byte reaches the workload;
// each refusal is counted with the policy's name, and a bad policy on reload leaves the old one in force.
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged, waitForLine } from '@mesh/testkit';
import { authorize, compilePolicies, type WorkloadRef } from '@mesh/mtls';
import { writeFile } from 'node:fs/promises';
import { DATAPLANE, dial, get, meshAgent, missingDataplane, outcome, type DataplaneConfig, type Endpoint } from './harness.js';
import { CLIENT_ID, eventually, startNodes, TD, type Nodes } from './fixture.js';

const missing = missingDataplane();
const INTRUDER_ID = `${TD}/ns/default/sa/intruder`;
const SLEEP_ID = `${TD}/ns/test/sa/sleep`;
const DENIED = 'mesh_dataplane_authz_denied_total';

const allowPolicy = (name: string, rules: object[], action = 'ALLOW'): object => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'AuthorizationPolicy',
  metadata: { namespace: 'default', name },
  spec: { action, selector: { matchLabels: { app: 'server' } }, rules },
});

describePrivileged('mesh-dataplane authorization policies', () => {
  let n: Nodes;
  let second: Server;
  let secondAccepts = 0;
  const sockets = new Set<Socket>();
  let port2: Endpoint;
  let server: WorkloadRef;
  // Node A: 10 client (default/client), 11 intruder (default/intruder), 14 sleep (test/sleep).
  // Node B: the server workload at ip(20) with two ports, the fixture's backend and `second`.
  beforeAll(async () => {
    if (missing) throw new Error(missing);
    n = await startNodes({
      tweak: async ({ ip, pki, root, configA, target }) => {
        const intruder = await pki.svid(root, 'intruder', INTRUDER_ID);
        const sleep = await pki.svid(root, 'sleep', SLEEP_ID);
        configA.workloads.push({ address: ip(11), ...intruder, bundle: root.cert }, { address: ip(14), ...sleep, bundle: root.cert });
        second = createServer((_req, res) => res.end('second\n'));
        second.on('connection', (s: Socket) => {
          secondAccepts++;
          sockets.add(s);
          s.once('close', () => sockets.delete(s));
        });
        await new Promise<void>((resolve, reject) => {
          second.once('error', reject);
          second.listen(0, target.host, () => resolve());
        });
        port2 = { host: target.host, port: (second.address() as AddressInfo).port };
        configA.destinations = [{ address: `${port2.host}:${port2.port}`, tunnel: 'B', spiffeId: `${TD}/ns/default/sa/server` }];
      },
    });
    server = { namespace: 'default', name: 'server', labels: { app: 'server' }, ports: [n.target.port, port2.port] };
  });
  afterAll(async () => {
    await n?.close();
    for (const s of sockets) s.destroy();
    if (second) await new Promise<void>((r) => second.close(() => r()));
  });

  /** Compile `objects` as the agent will and reload node B with the server workload's policies. */
  const apply = async (objects: object[]): Promise<void> => {
    const r = compilePolicies({ objects, workloads: [server] });
    if (!r.ok) throw new Error(r.errors.join('\n'));
    n.configB.workloads[0]!.policies = r.workloads.get('default/server')!.policies;
    await n.b.reload(n.configB);
  };
  const accepted = (): number => n.accepts() + secondAccepts;
  const served = async (from: string, to: Endpoint = n.target): Promise<void> => {
    const agent = meshAgent(n.a, from, to, 1);
    const before = accepted();
    const res = await get({ host: to.host, port: to.port, path: '/', agent });
    agent.destroy();
    expect(res.status, `GET from ${from} to port ${to.port}`).toBe(200);
    expect(accepted()).toBe(before + 1);
  };
  const refused = async (from: string, to: Endpoint = n.target): Promise<void> => {
    const before = accepted();
    const sock = dial(n.a, from, to);
    sock.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    expect((await outcome(sock)).bytes, `bytes received from ${from} at port ${to.port}`).toBe(0);
    expect(accepted(), 'connections the workload accepted').toBe(before);
  };
  const denials = async (labels: string, want: number): Promise<void> => {
    await eventually(`${DENIED}{${labels}} = ${want}`, async () => (await n.b.counter(DENIED, labels)) === want);
  };

  it('an ALLOW policy naming another principal refuses the client, counted with the policy name', async () => {
    await apply([allowPolicy('allow-client', [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/client'] } }] }])]);
    // The series exists from the reload on, at 0.
    expect(await n.b.counter(DENIED, 'policy="default/allow-client",reason="no_allow_match"')).toBe(0);
    await refused(n.ip(11));
    await denials('policy="default/allow-client",reason="no_allow_match"', 1);
    await served(n.client);
  });

  it('a DENY policy by namespace refuses every client of that namespace, and no one else', async () => {
    await apply([allowPolicy('deny-test', [{ from: [{ source: { namespaces: ['test'] } }] }], 'DENY')]);
    await refused(n.ip(14));
    await denials('policy="default/deny-test",reason="deny_match"', 1);
    await served(n.ip(11));
    await served(n.client);
  });

  it('notPrincipals: an ALLOW rule for everyone but the client', async () => {
    await apply([allowPolicy('not-client', [{ from: [{ source: { notPrincipals: ['cluster.local/ns/default/sa/client'] } }] }])]);
    await refused(n.client);
    await denials('policy="default/not-client",reason="no_allow_match"', 1);
    await served(n.ip(11));
  });

  it('ports: the client is allowed on one port of the workload and refused on the other', async () => {
    await apply([allowPolicy('client-port2', [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/client'] } }], to: [{ operation: { ports: [String(port2.port)] } }] }])]);
    await refused(n.client, n.target);
    await denials('policy="default/client-port2",reason="no_allow_match"', 1);
    await served(n.client, port2);
  });

  it('wildcards, namespaces and notPorts: the data plane decides as authorize() of @mesh/mtls does', async () => {
    const objects = [
      allowPolicy('deny-sleep-off-port2', [{ from: [{ source: { principals: ['*/sa/sleep'] } }], to: [{ operation: { notPorts: [String(port2.port)] } }] }], 'DENY'),
      allowPolicy('allow-default-or-te', [{ from: [{ source: { principals: ['cluster.local/ns/default/*'] } }, { source: { namespaces: ['te*'] } }] }]),
      allowPolicy('allow-nobody', []),
    ];
    const r = compilePolicies({ objects, workloads: [server] });
    if (!r.ok) throw new Error(r.errors.join('\n'));
    await apply(objects);
    const peers: [string, string][] = [[n.client, CLIENT_ID], [n.ip(11), INTRUDER_ID], [n.ip(14), SLEEP_ID]];
    const verdicts: string[] = [];
    for (const [from, id] of peers) {
      for (const to of [n.target, port2]) {
        const want = authorize(r.workloads.get('default/server')!.policies, id, to.port);
        if (want.allowed) await served(from, to);
        else await refused(from, to);
        verdicts.push(`${id.slice(TD.length)} :${to === port2 ? 2 : 1} ${want.allowed ? 'allowed' : `${want.reason} ${want.policy}`}`);
      }
    }
    // What the table above expected, spelled out: the DENY policy for sleep off port 2, the ALLOW prefix for default.
    expect(verdicts).toEqual([
      '/ns/default/sa/client :1 allowed', '/ns/default/sa/client :2 allowed',
      '/ns/default/sa/intruder :1 allowed', '/ns/default/sa/intruder :2 allowed',
      '/ns/test/sa/sleep :1 deny_match default/deny-sleep-off-port2', '/ns/test/sa/sleep :2 allowed',
    ]);
    await denials('policy="default/deny-sleep-off-port2",reason="deny_match"', 1);
  });

  it.each<[string, unknown, string]>([
    ['an empty list', { deny: [{ name: 'a/b', rules: [{ from: [] }] }] }, 'config.workloads[0].policies.deny[0].rules[0].from: must not be empty (omit it instead)'],
    ['an empty source', { allow: [{ name: 'a/b', rules: [{ from: [{}] }] }] }, 'config.workloads[0].policies.allow[0].rules[0].from[0]: must not be empty'],
    ['a principal that is no SPIFFE ID', { allow: [{ name: 'a/b', rules: [{ from: [{ principals: ['cluster.local/ns/a/sa/b'] }] }] }] }, 'principals[0]: "cluster.local/ns/a/sa/b" is not a valid SPIFFE ID'],
    ['a wildcard in the middle', { allow: [{ name: 'a/b', rules: [{ from: [{ namespaces: ['a*b'] }] }] }] }, 'namespaces[0]: "a*b": "*" only alone, at the start or at the end'],
    ['a bad port', { allow: [{ name: 'a/b', rules: [{ to: [{ ports: [70000] }] }] }] }, 'to[0].ports[0]: expected a port from 1 to 65535'],
    ['a bad name', { allow: [{ name: 'b', rules: [] }] }, 'config.workloads[0].policies.allow[0].name: expected "<namespace>/<name>"'],
    ['rules missing', { allow: [{ name: 'a/b' }] }, 'config.workloads[0].policies.allow[0].rules: expected a list (empty: the policy matches nothing)'],
    ['a name twice', { deny: [{ name: 'a/b', rules: [] }, { name: 'a/b', rules: [] }] }, 'config.workloads[0].policies.deny[1].name: "a/b" appears twice'],
  ])('--check refuses %s, naming the field', async (_name, policies, message) => {
    const bad = structuredClone(n.configB) as DataplaneConfig;
    (bad.workloads[0] as { policies?: unknown }).policies = policies;
    const path = `${n.dir}/bad-policy.json`;
    await writeFile(path, JSON.stringify(bad));
    const r = await n.tracker.run(DATAPLANE, ['--config', path, '--check']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(message);
  });

  it('refuses a bad policy at reload, naming the field, and keeps the previous policies in force', async () => {
    await apply([allowPolicy('kept', [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/client'] } }], to: [{ operation: { ports: [String(port2.port)] } }] }])]);
    // @mesh/mtls rejects the L7 rule whole…
    const r = compilePolicies({ objects: [allowPolicy('get-only', [{ to: [{ operation: { methods: ['GET'] } }] }])], workloads: [server] });
    expect(r.ok).toBe(false);
    expect(!r.ok && r.errors[0]).toMatch(/^AuthorizationPolicy default\/get-only: spec\.rules\[0\]\.to\[0\]\.operation\.methods: L7 field/);
    // …and so does the data plane, should such a rule reach its config.
    const broken = structuredClone(n.configB);
    broken.workloads[0]!.policies = { deny: [], allow: [{ name: 'default/get-only', rules: [{ to: [{ methods: ['GET'] } as never] }] }] };
    const errorsBefore = await n.b.counter('mesh_dataplane_config_reloads_total', 'result="error"');
    await writeFile(n.b.configPath, JSON.stringify(broken));
    n.b.child.kill('SIGHUP');
    await waitForLine(n.b.child, /reload failed, keeping generation \d+: config\.workloads\[0\]\.policies\.allow\[0\]\.rules\[0\]\.to\[0\]\.methods: unknown field/, 20_000);
    expect(await n.b.counter('mesh_dataplane_config_reloads_total', 'result="error"')).toBe(errorsBefore + 1);
    // Still the previous policy: the client on port 2 only.
    await refused(n.client, n.target);
    await denials('policy="default/kept",reason="no_allow_match"', 1);
    await served(n.client, port2);
    await writeFile(n.b.configPath, JSON.stringify(n.configB));
  });
}, { tools: ['openssl'] });
