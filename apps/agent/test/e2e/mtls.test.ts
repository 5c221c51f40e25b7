// Transparent mTLS on one node, with real processes: the agent (--mtls) runs the data plane; a client workload
// calls a server workload by its address in plaintext and the request crosses the node's tunnel in TLS; STRICT
// refuses a plaintext client outside the mesh, PERMISSIVE serves it; an ALLOW policy naming another principal
// refuses the client (counted with its name); an L7 policy is rejected naming the field, the previous policy
// staying in force; `kill -9` of the agent under load fails no request, and the restarted agent adopts the data
// plane. Addresses: a block of 127/8 claimed by testNet().
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { afterAll, beforeAll, expect, it } from 'vitest';
import { BpfMap, codec, pinLayout } from '@mesh/bpf';
import { describePrivileged, stopProcess, waitForLine } from '@mesh/testkit';

import { scrapeDataplane } from '../../src/dataplane.js';
import { type Agent, AGENT_BIN, FIXTURES, freePort, MeshEnv, sample, socketGet, sum, testNet } from './harness.js';
import { dataplanePidIn, type LoadResult, stopNode, until } from './mtls-node.js';

const NET = testNet();
const ip = (h: number) => `${NET}.0.${h}`;
const SERVER = ip(1);
const CLIENT = ip(3);
const DATAPLANE = ip(100);
const INBOUND_SOURCE = ip(6);
const OUTSIDER = ip(7);
const MARKER = 'BODY-MARKER-5d1f';
const PATH = '/secret-path-93ab';
const CLIENT_ID = 'spiffe://cluster.local/ns/default/sa/client';
const SERVER_ID = 'spiffe://cluster.local/ns/default/sa/server';

const config = (mode: 'STRICT' | 'PERMISSIVE', policy = '') => `apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: client, labels: { app: client, mesh.dev/mtls: enabled } }
spec: { serviceAccount: client, addresses: [${CLIENT}] }
---
apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: server, labels: { app: server, mesh.dev/mtls: enabled } }
spec: { serviceAccount: server, addresses: [${SERVER}], ports: [{ name: http, port: 8080 }] }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: server-mtls }
spec: { selector: { matchLabels: { app: server } }, mtls: { mode: ${mode} } }
${policy}`;

const allowOnly = (name: string, principal: string, extra = '') => `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ${name} }
spec: { action: ALLOW, selector: { matchLabels: { app: server } }, rules: [{ from: [{ source: { principals: ["${principal}"] } }], to: [{ operation: { ports: ["8080"]${extra} } }] }] }
`;

describePrivileged('transparent mTLS through the agent (one node)', () => {
  let env: MeshEnv;
  let agent: Agent;
  let statsAddr: string;
  let runDir: string;
  let agentArgs: string[];

  const metrics = () => env.metrics();
  const dpStats = async () => (await scrapeDataplane(statsAddr)).text;
  const generation = async () => (await env.api<{ config?: { generation: number } }>('/v1/status')).config?.generation ?? 0;

  /** Writes a config and waits until it is applied (a new generation, and the data plane reloaded). */
  async function apply(yaml: string): Promise<void> {
    const g = await generation();
    env.writeConfig(yaml);
    await until(`config generation ${g + 1}`, async () => (await generation()) > g);
  }

  /** The client workload's load fixture: RATE new connections per second for SECONDS. */
  async function load(rate: number, seconds: number, path = PATH): Promise<LoadResult> {
    const child = env.meshRun('client', [process.execPath, join(FIXTURES, 'load.mjs')], { URL: `http://${SERVER}:8080${path}`, RATE: String(rate), SECONDS: String(seconds) });
    const line = (await waitForLine(child, /^\{.*"sent".*$/, seconds * 1000 + 60_000))[0];
    return JSON.parse(line) as LoadResult;
  }

  /** A plaintext request from outside the mesh (the test's own cgroup, an address of no workload). */
  const outsider = () => env.procs.run('curl', ['-sS', '--max-time', '3', '--interface', OUTSIDER, `http://${SERVER}:8080${PATH}`], { timeoutMs: 30_000 });

  beforeAll(async () => {
    env = await MeshEnv.create();
    runDir = env.tempDir('run');
    statsAddr = `127.0.0.1:${await freePort()}`;
    // Both workloads are on this node: the tunnel between them is what is tested, so the same-node shortcut
    // (mtls-local.test.ts) is off.
    agentArgs = ['--mtls', '--mtls-outbound', `${DATAPLANE}:15001`, '--mtls-tunnel', `${DATAPLANE}:15008`, '--mtls-inbound-source', INBOUND_SOURCE, '--mtls-stats', statsAddr, '--run-dir', runDir, '--no-mtls-local-shortcut'];
    env.writeConfig(config('STRICT'));
    agent = await env.startAgent(agentArgs);
    const server = env.meshRun('server', [process.execPath, join(FIXTURES, 'backend.mjs')], { NAME: MARKER, PORT: '8080' });
    await waitForLine(server, /^listening/, 30_000);
    // Both workloads enrolled once their SVID files are written and the data plane has read them.
    await until('both workloads enrolled', async () => sum(sample(await metrics(), 'mesh_mtls_enrolled_workloads')) === 2);
  }, 120_000);

  afterAll(() => stopNode(env, runDir), 60_000);

  it('requests go through the tunnel in TLS: the capture holds neither path nor body; the server side names the client', async () => {
    const capFile = join(env.tempDir('pcap'), 'tunnel.pcap');
    const cap = env.procs.spawn('dumpcap', ['-q', '-i', 'lo', '-f', `tcp and host ${DATAPLANE} and port 15008`, '-w', capFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    await until('dumpcap started', async () => existsSync(capFile), 20_000);
    await sleep(500);
    const before = { dp: await dpStats(), kernel: await metrics() };

    const r = await load(20, 5);
    expect(r, JSON.stringify(r.errors)).toMatchObject({ sent: 100, ok: 100, failed: 0 });

    await sleep(500);
    cap.kill('SIGINT');
    await until('dumpcap stopped', async () => cap.exitCode !== null || cap.signalCode !== null, 20_000);
    const pcap = readFileSync(capFile);
    expect(pcap.length).toBeGreaterThan(100 * 300); // 100 requests and responses crossed it
    expect(pcap.indexOf(PATH)).toBe(-1);
    expect(pcap.indexOf(MARKER)).toBe(-1);

    const after = { dp: await dpStats(), kernel: await metrics() };
    const authorized = (t: string) => sum(sample(t, 'mesh_dataplane_inbound_authorized_total', { source_principal: CLIENT_ID, destination_principal: SERVER_ID }));
    expect(authorized(after.dp) - authorized(before.dp)).toBe(100);
    const captured = (t: string) => sum(sample(t, 'mesh_mtls_captures_total', { result: 'captured' }));
    expect(captured(after.kernel) - captured(before.kernel)).toBe(100);
    // The server's STRICT port let in only the data plane's source address: every connection came from it.
    const passes = (t: string) => sum(sample(t, 'mesh_mtls_strict_passes_total'));
    expect(passes(after.kernel) - passes(before.kernel)).toBeGreaterThanOrEqual(100);

    // Which tunnel and record layer the connections took, and why, read from the data plane's stats by the
    // agent's probe (once a second): this host has no tls ULP, so the default (no --mtls-tunnel-mode) is the
    // pooled tunnel — the 100 connections as streams over a few TLS connections —, every one on the user path.
    type RecordLayer = { ktlsAvailable: boolean; reason: string; connections: Record<'outbound' | 'inbound', { ktls: number; user: number }> };
    type Tunnel = { tunnel: string; choice: string; outbound: { dedicated: number; pooledNew: number; pooledReused: number } };
    const dp = async () => (await env.api<{ dataplane?: { recordLayer?: RecordLayer; tunnel?: Tunnel } }>('/v1/status')).dataplane;
    const streams = (t: Tunnel | undefined) => (t ? t.outbound.dedicated + t.outbound.pooledNew + t.outbound.pooledReused : 0);
    await until('the probe to see the 100 connections', async () => streams((await dp())?.tunnel) >= 100, 10_000);
    const { recordLayer: rl, tunnel } = (await dp())!;
    const hostHasTls = readFileSync('/proc/sys/net/ipv4/tcp_available_ulp', 'utf8').split(/\s+/).includes('tls');
    if (!hostHasTls) {
      expect(tunnel).toMatchObject({ tunnel: 'pooled', choice: 'auto: kTLS unavailable', outbound: { dedicated: 0 } });
      // Handshakes only for the connections the load's concurrency needed; the rest reused one.
      expect(tunnel!.outbound.pooledReused).toBeGreaterThan(tunnel!.outbound.pooledNew);
      expect(rl!.ktlsAvailable).toBe(false);
      expect(rl!.reason).toMatch(/TCP_ULP/);
      expect(rl!.connections.outbound.ktls + rl!.connections.inbound.ktls).toBe(0);
      expect(rl!.connections.inbound.user).toBeGreaterThanOrEqual(1);
      const st = await env.meshctl(['status']);
      expect(st.stdout).toMatch(/^tunnel {7}pooled \(auto: kTLS unavailable\); outbound connections: \d+ pooled \(\d+ without a handshake\), 0 dedicated$/m);
      expect(st.stdout).toMatch(/^record layer kTLS unavailable \(setsockopt TCP_ULP .*\); connections: outbound 0 ktls, \d+ user; inbound 0 ktls, \d+ user$/m);
      const json = JSON.parse((await env.meshctl(['status', '--json'])).stdout) as { dataplane: { recordLayer: RecordLayer; tunnel: Tunnel } };
      expect(json.dataplane.recordLayer).toMatchObject({ ktlsAvailable: false, reason: rl!.reason });
      expect(json.dataplane.tunnel).toMatchObject({ tunnel: 'pooled', choice: 'auto: kTLS unavailable' });
    }
  }, 180_000);

  it('STRICT refuses a plaintext client outside the mesh and counts it; PERMISSIVE serves it', async () => {
    const drops = async () => sum(sample(await metrics(), 'mesh_mtls_strict_drops_total', { reason: 'plaintext' }));
    const d0 = await drops();
    const r = await outsider();
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(await drops()).toBeGreaterThan(d0);

    await apply(config('PERMISSIVE'));
    const ok = await outsider();
    expect(ok.stdout).toBe(MARKER);
    await apply(config('STRICT'));
  }, 120_000);

  it('STRICT covers a port the workload serves without declaring it: a plaintext client is dropped and counted', async () => {
    const drops = async () => sum(sample(await metrics(), 'mesh_mtls_strict_drops_total', { reason: 'plaintext' }));
    const undeclared = env.meshRun('server', [process.execPath, join(FIXTURES, 'backend.mjs')], { NAME: MARKER, PORT: '8090' });
    await waitForLine(undeclared, /^listening/, 30_000);
    const d0 = await drops();
    const r = await env.procs.run('curl', ['-sS', '--max-time', '3', '--interface', OUTSIDER, `http://${SERVER}:8090${PATH}`], { timeoutMs: 30_000 });
    expect(r.stdout).toBe('');
    expect(r.code).not.toBe(0);
    expect(await drops()).toBeGreaterThan(d0);
    await stopProcess(undeclared);
  }, 120_000);

  it('the mtls tables are sized from the config (floors for two workloads) and mtls_orig from --max-connections', () => {
    const dir = pinLayout(env.pinRoot).maps('mtls');
    // Key and value sizes as bpf/include/mtls.h has them.
    const size = (name: string, key: number, value: number) => {
      using m = BpfMap.openPinned(join(dir, name), { key: codec.bytes(key), value: codec.bytes(value) });
      return m.maxEntries;
    };
    expect({ enrolled: size('mtls_enrolled', 8, 4), ports: size('mtls_ports', 16, 4), dests: size('mtls_dests', 20, 4), orig: size('mtls_orig', 20, 40) }).toEqual({
      enrolled: 1024,
      ports: 4096,
      dests: 4096,
      orig: 16384,
    });
  });

  it('an ALLOW policy naming another principal refuses the client, counted with its name; an L7 policy is rejected and the previous one stays; DENY by namespace refuses', async () => {
    const denied = async () => sum(sample(await dpStats(), 'mesh_dataplane_authz_denied_total', { policy: 'default/allow-other' }));
    await apply(config('STRICT', allowOnly('allow-other', 'cluster.local/ns/default/sa/other')));
    const d0 = await denied();
    const r = await load(10, 1);
    expect(r).toMatchObject({ sent: 10, ok: 0, failed: 10 });
    expect((await denied()) - d0).toBe(10);

    const g = await generation();
    env.writeConfig(config('STRICT', allowOnly('allow-get', 'cluster.local/ns/default/sa/client', ', methods: [GET]')));
    await until('the L7 policy rejected', async () => {
      const s = await env.api<{ lastError?: { problems: string[] } }>('/v1/status');
      return (s.lastError?.problems ?? []).some((p) => p.includes('AuthorizationPolicy default/allow-get: spec.rules[0].to[0].operation.methods: L7 field'));
    });
    expect(await generation()).toBe(g);
    const again = await load(10, 1);
    expect(again).toMatchObject({ sent: 10, ok: 0, failed: 10 });
    expect((await denied()) - d0).toBe(20);

    await apply(config('STRICT', allowOnly('allow-client', 'cluster.local/ns/default/sa/client')));
    expect(await load(10, 1)).toMatchObject({ sent: 10, ok: 10, failed: 0 });

    // DENY by namespace wins over a matching ALLOW.
    const denyNs = `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-default }
spec: { action: DENY, selector: { matchLabels: { app: server } }, rules: [{ from: [{ source: { namespaces: [default] } }] }] }
`;
    const denials = async () => sum(sample(await dpStats(), 'mesh_dataplane_authz_denied_total', { policy: 'default/deny-default', reason: 'deny_match' }));
    await apply(config('STRICT', allowOnly('allow-client', 'cluster.local/ns/default/sa/client') + denyNs));
    const n0 = await denials();
    expect(await load(10, 1)).toMatchObject({ sent: 10, ok: 0, failed: 10 });
    expect((await denials()) - n0).toBe(10);
    await apply(config('STRICT', allowOnly('allow-client', 'cluster.local/ns/default/sa/client')));
    expect(await load(10, 1)).toMatchObject({ sent: 10, ok: 10, failed: 0 });
  }, 180_000);

  it('kill -9 of the agent under load: no request fails; the restarted agent adopts the data plane', async () => {
    const status = () => env.api<{ dataplane?: { pid: number; state: string; adopted: boolean } }>('/v1/status');
    const dp0 = (await status()).dataplane!;
    expect(dp0.state).toBe('serving');
    const running = load(50, 6);
    await sleep(1500);
    agent.child.kill('SIGKILL');
    await until('agent gone', async () => agent.child.exitCode !== null || agent.child.signalCode !== null, 10_000);
    agent = await env.startAgent(agentArgs);
    const r = await running;
    expect(r, JSON.stringify(r.errors)).toMatchObject({ sent: 300, ok: 300, failed: 0 });
    const dp1 = (await status()).dataplane!;
    expect(dp1).toMatchObject({ pid: dp0.pid, state: 'serving', adopted: true });
    const st = await env.meshctl(['status']);
    expect(st.stdout).toMatch(new RegExp(`^data plane +serving \\(pid ${dp0.pid}, adopted, config generation \\d+, 0 restarts\\), stats http://${statsAddr.replaceAll('.', '\\.')}/metrics$`, 'm'));
  }, 180_000);

  it('the data plane killed: started again and serving new connections within a second', async () => {
    const status = () => env.api<{ dataplane?: { pid: number; state: string; restarts: number } }>('/v1/status');
    const dp0 = (await status()).dataplane!;
    process.kill(dp0.pid, 'SIGKILL');
    const t0 = performance.now();
    // A new process answering on the stats endpoint (it answers once its listeners are bound).
    await until('a new data plane', async () => {
      const pid = dataplanePidIn(runDir);
      return pid !== undefined && pid !== dp0.pid && (await scrapeDataplane(statsAddr, 500).then(() => true));
    }, 10_000);
    const ms = performance.now() - t0;
    console.log(`data plane back in ${Math.round(ms)} ms`);
    expect(ms).toBeLessThan(1000 * 2); // 1 s, with a margin for a loaded machine
    expect(await load(10, 1)).toMatchObject({ sent: 10, ok: 10, failed: 0 });
    const dp1 = (await status()).dataplane!;
    expect(dp1.state).toBe('serving');
    expect(dp1.restarts).toBe(1);
  }, 120_000);

  it('an agent started with other data plane addresses replaces the running data plane instead of adopting it', async () => {
    const status = () => env.api<{ dataplane?: { pid: number; state: string; adopted: boolean } }>('/v1/status');
    const old = (await status()).dataplane!;
    await stopProcess(agent.child);
    // Another tunnel port: a listener a reload cannot change.
    agentArgs = agentArgs.map((a, i) => (agentArgs[i - 1] === '--mtls-tunnel' ? `${DATAPLANE}:15018` : a));
    agent = await env.startAgent(agentArgs);
    const now = (await status()).dataplane!;
    expect(now).toMatchObject({ state: 'serving', adopted: false });
    expect(now.pid).not.toBe(old.pid);
    // Gone, or a zombie until whoever adopted the orphan reaps it.
    const stat = (() => {
      try {
        return readFileSync(`/proc/${old.pid}/stat`, 'utf8');
      } catch {
        return 'gone';
      }
    })();
    expect(stat === 'gone' || /\) Z /.test(stat), stat).toBe(true);
    await until('both workloads enrolled again', async () => sum(sample(await metrics(), 'mesh_mtls_enrolled_workloads')) === 2);
    expect(await load(10, 1)).toMatchObject({ sent: 10, ok: 10, failed: 0 });
    expect(sum(sample(await dpStats(), 'mesh_dataplane_inbound_authorized_total', { source_principal: CLIENT_ID }))).toBe(10);
  }, 120_000);
}, { tools: ['dumpcap', 'curl'] });

describePrivileged('mTLS with a data plane that cannot start', () => {
  it('the agent runs, not ready, saying why; meshctl status shows the data plane down', async () => {
    await using env = await MeshEnv.create();
    env.writeConfig(config('STRICT'));
    const missing = join(env.tempDir('bin'), 'mesh-dataplane');
    const child = env.procs.spawn(AGENT_BIN, env.agentArgs(['--mtls', '--mtls-outbound', `${DATAPLANE}:15001`, '--mtls-tunnel', `${DATAPLANE}:15008`, '--mtls-stats', `127.0.0.1:${await freePort()}`, '--run-dir', env.tempDir('run'), '--dataplane', missing]), { stdio: ['ignore', 'pipe', 'pipe'] });
    let ready: { status: number; body: string } | undefined;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && child.exitCode === null) {
      ready = await socketGet(env.apiSocket, '/readyz', 1000).catch(() => undefined);
      if (ready && ready.body.includes('data plane')) break;
      await sleep(100);
    }
    expect(child.exitCode).toBe(null);
    expect(ready?.status).toBe(503);
    expect(ready?.body).toContain(`the mTLS data plane is down: cannot start the data plane: ${missing} does not exist`);
    const st = await env.meshctl(['status']);
    expect(st.stdout).toMatch(/^data plane +down, stats http:\/\/127\.0\.0\.1:\d+\/metrics; last error: cannot start the data plane: .* does not exist$/m);
  }, 120_000);
});
