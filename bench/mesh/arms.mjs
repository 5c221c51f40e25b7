// bench:mesh's arms: how each one starts, checks that its path carries the load, and stops (direct, the mesh
// with its agent, the HAProxy pair in HTTP and in mutual TLS), and the agent's config for the mesh arm.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { Program } from '@mesh/bpf';

import { AGENT_BIN, agentArgs, agentGet, exitReason, MESHCTL_BIN, waitReady } from '../../scripts/lib/agent.mjs';
import { agentApi, round } from '../lib.mjs';
import {
  ADDR, apiSocket, assertNoMesh, curlFromClient, DP, effectivePrograms, MESH_PROGRAM, meshCg, NS, params, pinRoot, plainCg, podCommand, PORT, Proc, run, state, tmp,
  uninstallMesh, untilOk, workloadCg,
} from './topology.mjs';

let port;
let configPath;
let pki;
let agent;
/** What the arms need from the run's set-up: the agent's /metrics port, its config file, the TLS arm's PKI. */
export function configureArms(opts) {
  ({ port, configPath, pki } = opts);
}
export const haproxyVersion = run('haproxy', ['-v']).stdout.split('\n')[0];

/** The agent's config; with `mtls`, the bench's three workloads enrolled (their own service accounts, the
 *  servers' port declared) and STRICT namespace-wide, as the mesh_mtls arm runs it. */
export function meshConfig({ mtls = false } = {}) {
  const wl = (name, labels, addr, sa) => `apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata:
  name: ${name}
  labels: { ${Object.entries({ ...labels, ...(sa ? { 'mesh.dev/mtls': 'enabled' } : {}) }).map(([k, v]) => `${k}: ${v}`).join(', ')} }
spec:
  addresses: [${addr}]
${sa ? `  serviceAccount: ${sa}\n  ports: [{ name: http, port: ${PORT.app} }]\n` : ''}`;
  const svc = (name, ip, selector) => `apiVersion: v1
kind: Service
metadata:
  name: ${name}
spec:
  clusterIP: ${ip}
  selector: { ${Object.entries(selector).map(([k, v]) => `${k}: ${v}`).join(', ')} }
  ports: [{ port: ${PORT.app} }]
`;
  const docs = [
    wl('client', { app: 'client' }, ADDR.client, mtls && 'client'),
    wl('v1', { app: 'server', version: 'v1' }, ADDR.v1, mtls && 'server'),
    wl('v2', { app: 'server', version: 'v2' }, ADDR.v2, mtls && 'server'),
    svc('server', ADDR.vip, { app: 'server' }),
    svc('server-v1', ADDR.vipV1, { app: 'server', version: 'v1' }),
    svc('server-v2', ADDR.vipV2, { app: 'server', version: 'v2' }),
    `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: server-split
spec:
  parentRefs: [{ kind: Service, name: server, port: ${PORT.app} }]
  rules:
    - backendRefs:
        - { name: server-v1, port: ${PORT.app}, weight: ${params.split.v1} }
        - { name: server-v2, port: ${PORT.app}, weight: ${params.split.v2} }
`,
  ];
  if (mtls) {
    docs.push(`apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: strict, namespace: default }
spec: { mtls: { mode: STRICT } }
`);
  }
  // More pod pairs, for the memory comparison at 10 pairs: config only (no namespaces, no traffic).
  for (let i = 1; i <= params.extraPodPairs; i++) {
    const n = String(i).padStart(2, '0');
    docs.push(wl(`pair${n}-client`, { app: `pair${n}-client` }, `198.18.200.${2 * i}`));
    docs.push(wl(`pair${n}-server`, { app: `pair${n}-server` }, `198.18.200.${2 * i + 1}`));
    docs.push(svc(`pair${n}`, `198.18.101.${i}`, { app: `pair${n}-server` }));
  }
  return docs.join('---\n');
}

/** /metrics from the agent's TCP address; the control API (/v1/…) from its socket. */
async function agentJson(path) {
  if (path.startsWith('/v1/')) return agentApi(apiSocket, path);
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  if (r.status !== 200) throw new Error(`agent ${path} answered ${r.status}`);
  return r.text();
}
/** Sum of a Prometheus counter's samples whose labels include all of `match`. */
function promSum(text, name, match) {
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}\\{([^}]*)\\} ([0-9.e+]+)$`, 'gm'))) {
    const labels = Object.fromEntries([...m[1].matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(match).every(([k, v]) => labels[k] === v)) sum += Number(m[2]);
  }
  return sum;
}

export const arms = {
  direct: {
    // 2 of the 16 connections to v2: the nearest to the 90/10 split the other arms make.
    targets: () => Array.from({ length: 8 }, (_, i) => `${i === 7 ? ADDR.v2 : ADDR.v1}:${PORT.plain}`),
    closedTargets: () => [`${ADDR.v1}:${PORT.plain}`],
    servers: 'plain',
    async start() {
      assertNoMesh('direct');
      curlFromClient(`http://${ADDR.v1}:${PORT.plain}/`);
      curlFromClient(`http://${ADDR.v2}:${PORT.plain}/`);
      return { procs: {}, async stop() {} };
    },
  },
  mesh: {
    targets: () => [`${ADDR.vip}:${PORT.app}`],
    closedTargets: () => [`${ADDR.vipV1}:${PORT.app}`],
    servers: 'app',
    cgroup: () => workloadCg('client'),
    async start() {
      // Without the mesh the VIP goes nowhere (no route for it anywhere): a 200 below proves the rewrite.
      curlFromClient(`http://${ADDR.vip}/`, { expectFail: true, extra: ['--connect-timeout', '1'] });
      // The agent's file itself, as users run it: its shebang carries the node flags it is meant to run with.
      const agentArgv = [AGENT_BIN, ...agentArgs({ config: configPath, listen: `127.0.0.1:${port}`, apiSocket, pinRoot, cgroupRoot: meshCg, stateDir: join(tmp, 'state') })];
      const [cmd, ...args] = [...params.agentPrefix, ...agentArgv];
      agent = new Proc('mesh-agent', cmd, args);
      await waitReady(apiSocket, { timeoutMs: 30_000, exited: () => exitReason(agent.child), describe: () => agent.describe() });
      const status = await agentJson('/v1/status');
      const attached = effectivePrograms(meshCg).filter((n) => MESH_PROGRAM.test(n));
      if (attached.length < 3) throw new Error(`the agent is ready but only ${attached.join(', ')} is attached to ${meshCg}`);
      state.openProgs = status.programs.map((p) => ({ name: p.program, prog: Program.openById(p.programId) }));
      const rewritesBefore = Number(status.counters.split.connect_rewrite);
      const meshctlRun = [process.execPath, MESHCTL_BIN, '--api-socket', apiSocket, 'run', '--workload', 'client', '--'];
      curlFromClient(`http://${ADDR.vip}/`, { wrap: meshctlRun });
      curlFromClient(`http://${ADDR.vipV1}/`, { wrap: meshctlRun });
      const after = Number((await agentJson('/v1/status')).counters.split.connect_rewrite);
      if (!(after > rewritesBefore)) throw new Error(`a request to the VIP answered, but split's connect_rewrite did not grow (${rewritesBefore} → ${after})`);
      const maps = mapsMemory();
      await sleep(params.agentSettleS * 1000);
      return {
        procs: { agent: agent.pid },
        progs: state.openProgs,
        /** After the fixed-rate run: the kernel counted the requests (client and server side) and rewrote the connects. */
        async check(res) {
          await sleep(1100); // the last connections' closes settle; /metrics reads the kernel's maps when scraped
          const text = await agentJson('/metrics');
          const client = promSum(text, 'http_client_request_duration_seconds_count', { source_workload: 'client', destination_service: 'server' });
          const server = promSum(text, 'http_server_request_duration_seconds_count', { source_workload: 'client' });
          const rewrites = Number((await agentJson('/v1/status')).counters.split.connect_rewrite) - after;
          if (client < res.requests || server < res.requests) throw new Error(`the mesh counted ${client} client-side and ${server} server-side requests to the VIP, the load generator made ${res.requests}`);
          if (rewrites < params.connections) throw new Error(`split rewrote ${rewrites} connects to the VIP, the load generator opened ${params.connections}`);
          const perDest = Object.fromEntries(['v1', 'v2'].map((w) => [w, promSum(text, 'http_client_request_duration_seconds_count', { source_workload: 'client', destination_workload: w })]));
          return { counted_client_side: client, counted_server_side: server, connect_rewrites: rewrites, by_destination: perDest, bpf_maps_mb: maps };
        },
        async stop() {
          for (const p of state.openProgs) p.prog.close();
          state.openProgs = [];
          const { code, signal } = await agent.stop();
          if (code !== 0) throw new Error(`the agent exited ${code ?? signal} on SIGTERM: ${agent.describe()}`);
          agent = undefined;
          uninstallMesh(true);
          assertNoMesh('after the mesh arm');
        },
      };
    },
  },
  mesh_mtls: {
    targets: () => [`${ADDR.vip}:${PORT.app}`],
    closedTargets: () => [`${ADDR.vipV1}:${PORT.app}`],
    servers: 'app',
    cgroup: () => workloadCg('client'),
    start: () => startMeshMtls({ local: false }),
  },
  // The same agent with the same-node shortcut on (its default): every pod is on this node, so the client's
  // connections to v1 and v2 are direct, STRICT letting them in; the data plane runs but sees none.
  mesh_mtls_local: {
    targets: () => [`${ADDR.vip}:${PORT.app}`],
    closedTargets: () => [`${ADDR.vipV1}:${PORT.app}`],
    servers: 'app',
    cgroup: () => workloadCg('client'),
    start: () => startMeshMtls({ local: true }),
  },
  haproxy_http: haproxyArm(false),
  haproxy_tls: haproxyArm(true),
};

/** The metrics text of the data plane (its stats listener is in the node's namespace). */
function dataplaneMetrics() {
  return run('ip', ['netns', 'exec', NS.node, 'curl', '-sS', '--max-time', '3', `http://${DP.addr}:${DP.stats}/metrics`]).stdout;
}

/**
 * The agent with --mtls, run in the node's network namespace (its data plane listens on the node's dummy
 * address, which every pod reaches through its route to the node): the client, v1 and v2 enrolled, STRICT in
 * namespace default; client → VIP → split → captured → data plane → mutual TLS 1.3 to the data plane's tunnel
 * (the same node) → v1/v2 from the inbound source address.
 */
async function startMeshMtls({ local }) {
  const arm = local ? 'mesh_mtls_local' : 'mesh_mtls';
  curlFromClient(`http://${ADDR.vip}/`, { expectFail: true, extra: ['--connect-timeout', '1'] });
  const cfg = join(tmp, 'mesh-mtls.yaml');
  const runDir = join(tmp, 'dataplane-run');
  writeFileSync(cfg, meshConfig({ mtls: true }));
  const extra = ['--mtls', '--mtls-outbound', `${DP.addr}:${DP.outbound}`, '--mtls-tunnel', `${DP.addr}:${DP.tunnel}`, '--mtls-inbound-source', DP.inboundSource,
    '--mtls-stats', `${DP.addr}:${DP.stats}`, '--run-dir', runDir, `--mtls-tunnel-mode=${params.mtlsTunnel}`,
    ...(params.dataplane ? ['--dataplane', params.dataplane] : []),
    // mesh_mtls measures the tunnel: with every pod on one node, the shortcut would take all of its connections.
    ...(local ? [] : ['--no-mtls-local-shortcut'])];
  const agentArgv = [AGENT_BIN, ...agentArgs({ config: cfg, listen: `127.0.0.1:${port}`, apiSocket, pinRoot, cgroupRoot: meshCg, stateDir: join(tmp, 'state-mtls') }, extra)];
  const [cmd, ...args] = [...params.agentPrefix, 'nsenter', `--net=/run/netns/${NS.node}`, ...agentArgv];
  agent = new Proc('mesh-agent (mtls)', cmd, args);
  const metrics = async () => {
    const r = await agentGet({ socketPath: apiSocket }, '/metrics');
    if (r.status !== 200) throw new Error(`agent /metrics answered ${r.status}`);
    return r.body;
  };
  let dpPid;
  const stopAll = async () => {
    for (const p of state.openProgs) p.prog.close();
    state.openProgs = [];
    const { code, signal } = agent ? await agent.stop() : { code: 0 };
    agent = undefined;
    // The pid file names the data plane the agent ran last (also when it failed before we asked it).
    try {
      dpPid = JSON.parse(readFileSync(join(runDir, 'dataplane.pid'), 'utf8')).pid ?? dpPid;
    } catch {
      /* none started */
    }
    // The data plane is a session of its own that outlives the agent (by design): stopped here.
    if (dpPid) {
      try {
        process.kill(dpPid, 'SIGKILL');
      } catch {
        /* gone */
      }
      state.dataplanePid = undefined;
    }
    uninstallMesh(true);
    assertNoMesh(`after the ${arm} arm`);
    return { code, signal };
  };
  try {
    await waitReady(apiSocket, { timeoutMs: 60_000, exited: () => exitReason(agent.child), describe: () => agent.describe() });
    for (let deadline = Date.now() + 60_000; ; ) {
      const n = Number(/^mesh_mtls_enrolled_workloads ([0-9.]+)$/m.exec(await metrics())?.[1] ?? 0);
      if (n >= 3) break;
      if (Date.now() > deadline) throw new Error(`the agent enrolled ${n} of the 3 workloads within 60 s: ${agent.describe()}`);
      await sleep(200);
    }
    const status = await agentApi(apiSocket, '/v1/status');
    dpPid = status.dataplane?.pid;
    if (!dpPid) throw new Error(`the agent runs no data plane: ${JSON.stringify(status.dataplane)}`);
    state.dataplanePid = dpPid;
    state.openProgs = status.programs.map((p) => ({ name: p.program, prog: Program.openById(p.programId) }));
    const meshctlRun = [process.execPath, MESHCTL_BIN, '--api-socket', apiSocket, 'run', '--workload', 'client', '--'];
    await untilOk(() => curlFromClient(`http://${ADDR.vip}/`, { wrap: meshctlRun }), 'the VIP did not answer through the data plane', 20_000);
    curlFromClient(`http://${ADDR.vipV1}/`, { wrap: meshctlRun });
    // STRICT: plaintext from outside the mesh never reaches the server.
    curlFromClient(`http://${ADDR.v1}:${PORT.app}/`, { expectFail: true, extra: ['--connect-timeout', '1'] });
    const dpText = dataplaneMetrics();
    const authorized = promSum(dpText, 'mesh_dataplane_inbound_authorized_total', { source_principal: 'spiffe://cluster.local/ns/default/sa/client' });
    // The tunnel the data plane took (with auto, its own choice): what the run measured, and where it is recorded.
    const tunnel = /^mesh_dataplane_outbound_tunnel_info\{tunnel="(\w+)",choice="((?:[^"\\]|\\.)*)"\} 1$/m.exec(dpText);
    if (!tunnel) throw new Error('the data plane does not say which tunnel it takes (mesh_dataplane_outbound_tunnel_info)');
    params.mtlsTunnelTaken = { tunnel: tunnel[1], choice: tunnel[2].replace(/\\(.)/g, '$1') };
    const direct = promSum(await metrics(), 'mesh_mtls_captures_total', { result: 'local_direct' });
    if (local ? !(direct >= 2 && authorized === 0) : !(authorized >= 2))
      throw new Error(`the data plane authorized ${authorized} tunnelled connections from the client and the kernel left ${direct} direct, expected the 2 requests' ${local ? 'direct' : 'tunnelled'}`);
  } catch (err) {
    await stopAll().catch(() => undefined);
    throw err;
  }
  await sleep(params.agentSettleS * 1000);
  let authorizedBefore = promSum(dataplaneMetrics(), 'mesh_dataplane_inbound_authorized_total', {});
  let directBefore = promSum(await metrics(), 'mesh_mtls_captures_total', { result: 'local_direct' });
  return {
    procs: { agent: agent.pid, dataplane: dpPid },
    progs: state.openProgs,
    async check(res) {
      const text = dataplaneMetrics();
      const authorized = promSum(text, 'mesh_dataplane_inbound_authorized_total', {});
      const tunnelled = authorized - authorizedBefore;
      authorizedBefore = authorized;
      const directNow = promSum(await metrics(), 'mesh_mtls_captures_total', { result: 'local_direct' });
      const direct = directNow - directBefore;
      directBefore = directNow;
      // Keep-alive load: at least its connections; new-connection load: one per request.
      const want = res.connectionPerRequest ? res.requests : params.connections;
      if (local) {
        if (tunnelled > 0 || direct < want) throw new Error(`the kernel left ${direct} connections direct and the data plane authorized ${tunnelled} during the run, expected at least ${want} direct and none tunnelled`);
        return { direct_connections: direct };
      }
      if (tunnelled < want) throw new Error(`the data plane authorized ${tunnelled} connections from the client during the run, expected at least ${want}`);
      return { tunnelled_connections: tunnelled };
    },
    async stop() {
      const { code, signal } = await stopAll();
      if (code !== 0) throw new Error(`the agent (${arm}) exited ${code ?? signal} on SIGTERM`);
    },
  };
}

function mapsMemory() {
  let bytes = 0;
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else bytes += Number(JSON.parse(run('bpftool', ['-j', 'map', 'show', 'pinned', join(d, e.name)]).stdout).bytes_memlock ?? 0);
    }
  };
  walk(join(pinRoot, 'maps'));
  return round(bytes / 2 ** 20, 2);
}

function haproxyArm(tls) {
  // The TLS pair listens 100 ports above the HTTP pair: in the latency phase both run at once.
  const P = { outbound: PORT.outbound + (tls ? 100 : 0), outboundV1: PORT.outboundV1 + (tls ? 100 : 0), inbound: PORT.inbound + (tls ? 100 : 0) };
  const common = `global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  http-reuse always
`;
  const upstream = (pod, weight) =>
    `  server ${pod} ${ADDR[pod]}:${P.inbound} weight ${weight}` +
    (tls ? ` ssl verify required ca-file ${pki}/ca.pem crt ${pki}/client.pem sni str(${pod}.bench.mesh) verifyhost ${pod}.bench.mesh` : '') +
    '\n';
  // outbound: the Service, split 90/10 per request; outbound_v1: v1 alone (the closed-loop load).
  const clientCfg = () => `${common}frontend outbound
  bind 127.0.0.1:${P.outbound}
  default_backend server
frontend outbound_v1
  bind 127.0.0.1:${P.outboundV1}
  default_backend server_v1
backend server
  balance roundrobin
${upstream('v1', params.split.v1)}${upstream('v2', params.split.v2)}backend server_v1
${upstream('v1', 1)}`;
  const serverCfg = (pod) => `${common}frontend inbound
  bind ${ADDR[pod]}:${P.inbound}${tls ? ` ssl crt ${pki}/${pod}.pem ca-file ${pki}/ca.pem verify required` : ''}
  default_backend app
backend app
  server app 127.0.0.1:${PORT.plain}
`;
  return {
    targets: () => [`127.0.0.1:${P.outbound}`],
    closedTargets: () => [`127.0.0.1:${P.outboundV1}`],
    servers: 'plain',
    async start() {
      assertNoMesh(tls ? 'haproxy_tls' : 'haproxy_http');
      const procs = [];
      const start = (role, pod, cfg, cpu) => {
        const f = join(tmp, `haproxy-${tls ? 'tls' : 'http'}-${role}.cfg`);
        writeFileSync(f, cfg);
        const [cmd, args] = podCommand(NS[pod], cpu, ['haproxy', '-f', f]);
        const p = new Proc(`haproxy ${role}`, cmd, args);
        procs.push([role, p]);
        return p;
      };
      start('haproxy_v1', 'v1', serverCfg('v1'), params.serverCpu);
      start('haproxy_v2', 'v2', serverCfg('v2'), params.serverCpu);
      start('haproxy_client', 'client', clientCfg(), params.clientCpu);
      const stop = async () => {
        for (const [, p] of procs) await p.stop();
      };
      try {
        await untilOk(() => {
          for (const [, p] of procs) if (!p.alive()) throw new Error(`exited: ${p.describe()}`);
          curlFromClient(`http://127.0.0.1:${P.outbound}/`);
          curlFromClient(`http://127.0.0.1:${P.outboundV1}/`);
        }, 'the HAProxy pair did not answer');
        if (tls) {
          // The server-side proxies speak only mutual TLS: plain HTTP and TLS without a client certificate fail.
          curlFromClient(`http://${ADDR.v1}:${P.inbound}/`, { expectFail: true });
          curlFromClient(`https://v1.bench.mesh:${P.inbound}/`, { expectFail: true, extra: ['--cacert', `${pki}/ca.pem`, '--resolve', `v1.bench.mesh:${P.inbound}:${ADDR.v1}`] });
          curlFromClient(`https://v1.bench.mesh:${P.inbound}/`, { extra: ['--cacert', `${pki}/ca.pem`, '--cert', `${pki}/client.pem`, '--resolve', `v1.bench.mesh:${P.inbound}:${ADDR.v1}`] });
        } else {
          curlFromClient(`http://${ADDR.v2}:${P.inbound}/`);
        }
      } catch (err) {
        await stop();
        throw err;
      }
      const pids = Object.fromEntries(procs.map(([role, p]) => [role, p.pid]));
      return {
        procs: pids,
        async check(res) {
          // Every proxy carried requests (the client-side one all of them; the v2 side about a tenth).
          const cpu = Object.fromEntries(procs.map(([role]) => [role, res.cpu_ms[role]]));
          for (const [role, ms] of Object.entries(cpu)) if (!(ms > 0)) throw new Error(`${role} used no CPU during the run: did traffic go through it?`);
          for (const [, p] of procs) if (!p.alive()) throw new Error(`exited during the run: ${p.describe()}`);
          return {};
        },
        stop,
      };
    },
  };
}
/** Where an arm's load-generator sockets go: the arm's own cgroup, or the client pod's outside the mesh. */
export const clientCgroup = (arm) => arms[arm].cgroup?.() ?? join(plainCg, 'client');

