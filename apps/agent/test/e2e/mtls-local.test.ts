// The same-node shortcut of transparent mTLS (docs/mtls.md, "Same-node connections"), with real processes: a
// client workload and a STRICT server workload on one node. A pair the server's policies allow connects directly
// (the data plane sees nothing, the kernel counts it, the metrics family measures it); a pair they refuse goes to
// the tunnel, which refuses it as it refuses it with the shortcut off; STRICT still drops plaintext from outside
// the mesh, even from the client's own address; a policy change holds for the next connection; a config whose
// pairs do not fit is rejected whole; --no-mtls-local-shortcut sends everything through the tunnel.
import { join } from 'node:path';

import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged, stopProcess, waitForLine } from '@mesh/testkit';

import { scrapeDataplane } from '../../src/dataplane.js';
import { type Agent, FIXTURES, freePort, MeshEnv, sample, sum, testNet } from './harness.js';
import { type LoadResult, stopNode, until } from './mtls-node.js';

const NET = testNet();
const ip = (h: number) => `${NET}.0.${h}`;
const SERVER = ip(1);
const CLIENT = ip(3);
const DATAPLANE = ip(100);
const INBOUND_SOURCE = ip(6);
const OUTSIDER = ip(7);
const MARKER = 'LOCAL-MARKER-7c2e';
const CLIENT_ID = 'spiffe://cluster.local/ns/default/sa/client';

const config = (policy = '', serverPorts = '[{ name: http, port: 8080 }]') => `apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: client, labels: { app: client, mesh.dev/mtls: enabled } }
spec: { serviceAccount: client, addresses: [${CLIENT}] }
---
apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: server, labels: { app: server, mesh.dev/mtls: enabled } }
spec: { serviceAccount: server, addresses: [${SERVER}], ports: ${serverPorts} }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: server-mtls }
spec: { selector: { matchLabels: { app: server } }, mtls: { mode: STRICT } }
${policy}`;

const allowOnly = (principal: string) => `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-only }
spec: { action: ALLOW, selector: { matchLabels: { app: server } }, rules: [{ from: [{ source: { principals: ["${principal}"] } }] }] }
`;
const DENY_CLIENT = `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-client }
spec: { action: DENY, selector: { matchLabels: { app: server } }, rules: [{ from: [{ source: { principals: ["cluster.local/ns/default/sa/client"] } }], to: [{ operation: { ports: ["8080"] } }] }] }
`;

describePrivileged('the same-node shortcut of mTLS (one node, real processes)', () => {
  let env: MeshEnv;
  let agent: Agent;
  let statsAddr: string;
  let runDir: string;
  let agentArgs: string[];
  /** What the client saw, per request, when the tunnel refused it with the shortcut on. */
  let refusedWithShortcut: string[] = [];

  const metrics = () => env.metrics();
  const dpStats = async () => (await scrapeDataplane(statsAddr)).text;
  const generation = async () => (await env.api<{ config?: { generation: number } }>('/v1/status')).config?.generation ?? 0;
  const kernel = (t: string) => ({
    direct: sum(sample(t, 'mesh_mtls_captures_total', { result: 'local_direct' })),
    captured: sum(sample(t, 'mesh_mtls_captures_total', { result: 'captured' })),
    localPasses: sum(sample(t, 'mesh_mtls_strict_local_passes_total')),
    drops: sum(sample(t, 'mesh_mtls_strict_drops_total', { reason: 'plaintext' })),
    pairs: sum(sample(t, 'mesh_mtls_local_pairs')),
    opened: sum(sample(t, 'mesh_tcp_connections_opened_total', { source_workload: 'client', destination_workload: 'server' })),
  });
  // Every connection the data plane took, outbound (from a workload) and inbound (from a tunnel).
  const dpConnections = (t: string) => ({
    authorized: sum(sample(t, 'mesh_dataplane_inbound_authorized_total', { source_principal: CLIENT_ID })),
    denied: sum(sample(t, 'mesh_dataplane_authz_denied_total')),
  });

  async function apply(yaml: string): Promise<void> {
    const g = await generation();
    env.writeConfig(yaml);
    await until(`config generation ${g + 1}`, async () => (await generation()) > g);
  }

  async function load(rate: number, seconds: number): Promise<LoadResult> {
    const child = env.meshRun('client', [process.execPath, join(FIXTURES, 'load.mjs')], { URL: `http://${SERVER}:8080/`, RATE: String(rate), SECONDS: String(seconds) });
    const line = (await waitForLine(child, /^\{.*"sent".*$/, seconds * 1000 + 60_000))[0];
    return JSON.parse(line) as LoadResult;
  }

  const curl = (from: string) => env.procs.run('curl', ['-sS', '--max-time', '3', '--interface', from, `http://${SERVER}:8080/`], { timeoutMs: 30_000 });

  async function startAgent(extra: string[] = []): Promise<void> {
    agent = await env.startAgent([...agentArgs, ...extra]);
    await until('both workloads enrolled', async () => sum(sample(await metrics(), 'mesh_mtls_enrolled_workloads')) === 2);
  }

  beforeAll(async () => {
    env = await MeshEnv.create();
    runDir = env.tempDir('run');
    statsAddr = `127.0.0.1:${await freePort()}`;
    // Two pairs fit (client → server:8080, server → server:8080): a second server port makes four.
    agentArgs = ['--mtls', '--mtls-outbound', `${DATAPLANE}:15001`, '--mtls-tunnel', `${DATAPLANE}:15008`, '--mtls-inbound-source', INBOUND_SOURCE, '--mtls-stats', statsAddr, '--run-dir', runDir, '--mtls-max-local-pairs', '2'];
    env.writeConfig(config());
    await startAgent();
    const server = env.meshRun('server', [process.execPath, join(FIXTURES, 'backend.mjs')], { NAME: MARKER, PORT: '8080' });
    await waitForLine(server, /^listening/, 30_000);
  }, 120_000);

  afterAll(() => stopNode(env, runDir), 60_000);

  it('an allowed local pair connects directly: the data plane sees no connection, STRICT lets it in, the metrics family measures it, meshctl status shows it', async () => {
    const before = { dp: dpConnections(await dpStats()), k: kernel(await metrics()) };
    expect(before.k.pairs).toBe(2);
    const r = await load(20, 2);
    expect(r, JSON.stringify(r.errors)).toMatchObject({ sent: 40, ok: 40, failed: 0 });
    const after = { dp: dpConnections(await dpStats()), k: kernel(await metrics()) };
    expect(after.dp).toEqual(before.dp);
    expect(after.k.direct - before.k.direct).toBe(40);
    expect(after.k.captured - before.k.captured).toBe(0);
    // The SYN and the handshake's last ACK of each connection reach the STRICT listener.
    expect(after.k.localPasses - before.k.localPasses).toBeGreaterThanOrEqual(80);
    expect(after.k.drops - before.k.drops).toBe(0);
    await until('the metrics family to count the 40 connections', async () => kernel(await metrics()).opened - before.k.opened >= 40, 10_000);
    const st = await env.meshctl(['status']);
    expect(st.stdout).toMatch(/^same node +shortcut on: 2 allowed local pairs; \d+ connections direct, \d+ packets let in by STRICT$/m);
    const json = JSON.parse((await env.meshctl(['status', '--json'])).stdout) as { mtlsLocal: { enabled: boolean; pairs: number; direct: number } };
    expect(json.mtlsLocal).toMatchObject({ enabled: true, pairs: 2 });
    expect(json.mtlsLocal.direct).toBeGreaterThanOrEqual(40);
  }, 120_000);

  it('STRICT still drops plaintext from outside the mesh, even sent from the client workload\'s own address', async () => {
    const d0 = kernel(await metrics()).drops;
    for (const from of [OUTSIDER, CLIENT]) {
      const r = await curl(from);
      expect(r.code, from).not.toBe(0);
      expect(r.stdout).toBe('');
    }
    expect(kernel(await metrics()).drops - d0).toBeGreaterThanOrEqual(2);
  }, 120_000);

  it('a DENY, or an ALLOW naming another principal, sends the pair to the tunnel, which refuses it; a policy change holds for the next connection', async () => {
    await apply(config(DENY_CLIENT));
    let k0 = kernel(await metrics());
    expect(k0.pairs).toBe(1); // server → server:8080 only
    let dp0 = dpConnections(await dpStats());
    const denied = await load(10, 1);
    expect(denied).toMatchObject({ sent: 10, ok: 0, failed: 10 });
    refusedWithShortcut = denied.errors;
    console.log(`a refused local pair, as the client sees it: ${JSON.stringify([...new Set(denied.errors)])}`);
    let k1 = kernel(await metrics());
    expect(k1.direct - k0.direct).toBe(0);
    expect(k1.captured - k0.captured).toBe(10);
    expect(dpConnections(await dpStats()).denied - dp0.denied).toBe(10);

    await apply(config(allowOnly('cluster.local/ns/default/sa/other')));
    k0 = kernel(await metrics());
    expect(k0.pairs).toBe(0);
    dp0 = dpConnections(await dpStats());
    expect(await load(10, 1)).toMatchObject({ sent: 10, ok: 0, failed: 10 });
    k1 = kernel(await metrics());
    expect(k1.direct - k0.direct).toBe(0);
    expect(dpConnections(await dpStats()).denied - dp0.denied).toBe(10);

    // Allowed again: the next connections are direct.
    await apply(config(allowOnly('cluster.local/ns/default/sa/client')));
    k0 = kernel(await metrics());
    expect(k0.pairs).toBe(1); // client → server:8080 only
    expect(await load(10, 1)).toMatchObject({ sent: 10, ok: 10, failed: 0 });
    expect(kernel(await metrics()).direct - k0.direct).toBe(10);
    await apply(config());
  }, 180_000);

  it('a config whose pairs do not fit mtls_pairs is rejected whole, naming the flag; the previous pairs stay', async () => {
    const g = await generation();
    env.writeConfig(config('', '[{ name: http, port: 8080 }, { name: admin, port: 8081 }]'));
    let problems: string[] = [];
    await until('the config rejected', async () => {
      problems = (await env.api<{ lastError?: { problems: string[] } }>('/v1/status')).lastError?.problems ?? [];
      return problems.length > 0;
    });
    expect(problems.join('\n')).toMatch(/^4 allowed local pairs .* do not fit mtls_pairs \(2 entries\): raise maxLocalPairs \(mesh-agent: --mtls-max-local-pairs/);
    expect(await generation()).toBe(g);
    const k0 = kernel(await metrics());
    expect(k0.pairs).toBe(2);
    expect(await load(10, 1)).toMatchObject({ sent: 10, ok: 10, failed: 0 });
    expect(kernel(await metrics()).direct - k0.direct).toBe(10);
    await apply(config());
  }, 120_000);

  it('--no-mtls-local-shortcut: the same pair goes through the tunnel, and a refused pair fails as it did with the shortcut on', async () => {
    await stopProcess(agent.child);
    await startAgent(['--no-mtls-local-shortcut']);
    const st = await env.meshctl(['status']);
    expect(st.stdout).toMatch(/^same node +shortcut off \(--no-mtls-local-shortcut\): same-node connections go through the tunnel$/m);
    let k0 = kernel(await metrics());
    expect(k0.pairs).toBe(0);
    let dp0 = dpConnections(await dpStats());
    expect(await load(10, 1)).toMatchObject({ sent: 10, ok: 10, failed: 0 });
    let k1 = kernel(await metrics());
    expect(k1.direct - k0.direct).toBe(0);
    expect(k1.captured - k0.captured).toBe(10);
    expect(dpConnections(await dpStats()).authorized - dp0.authorized).toBe(10);

    await apply(config(DENY_CLIENT));
    k0 = kernel(await metrics());
    dp0 = dpConnections(await dpStats());
    const denied = await load(10, 1);
    expect(denied).toMatchObject({ sent: 10, ok: 0, failed: 10 });
    k1 = kernel(await metrics());
    expect(k1.captured - k0.captured).toBe(10);
    expect(dpConnections(await dpStats()).denied - dp0.denied).toBe(10);
    // What the application sees of a refusal is the tunnel's either way: a reset (at connect, read or write, as the
    // timing falls).
    const kinds = (errors: string[]) => new Set(errors.map((e) => /\bE[A-Z]+\b/.exec(e)?.[0] ?? e));
    expect(kinds(refusedWithShortcut)).toEqual(new Set(['ECONNRESET']));
    expect(kinds(denied.errors)).toEqual(kinds(refusedWithShortcut));
  }, 180_000);
}, { tools: ['curl'] });
