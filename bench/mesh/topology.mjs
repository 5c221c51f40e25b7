// bench:mesh's world: its parameters, the names of everything it makes (unique per run), the processes it starts
// and their cleanup, the network namespaces of the pods, the certificates of the TLS arm, the servers, and the
// checks that each arm's path works and that nothing of the mesh is attached outside the mesh arm.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

import { cgroup2Mount } from '@mesh/bpf';

import { MESHCTL_BIN } from '../../scripts/lib/agent.mjs';
import { onCleanup, root } from '../lib.mjs';

export const t0 = performance.now();
export const loadBefore = loadavg()[0];
const env = (k, d) => (process.env[k] === undefined || process.env[k] === '' ? d : Number(process.env[k]));
const DEFAULTS = { reps: 6, rate: 1000, fixedS: 10, closedS: 3, closedRounds: 8, latencyRuns: 4, latencyS: 20 };
/** BENCH_MESH_ONLY=memory: only what memory_vs_haproxy_10_pairs needs (the mesh and haproxy_http arms' turns, no
 *  latency or throughput phase); its figures are merged into bench/results/mesh.json, the rest of it kept. */
export const memoryOnly = process.env.BENCH_MESH_ONLY === 'memory';
if (process.env.BENCH_MESH_ONLY && !memoryOnly) throw new Error(`BENCH_MESH_ONLY=${process.env.BENCH_MESH_ONLY}: the only part that runs alone is "memory"`);
export const params = {
  reps: env('BENCH_MESH_REPS', memoryOnly ? 3 : DEFAULTS.reps),
  /** Fixed-rate load: requests per second over all connections. */
  rate: env('BENCH_MESH_RATE', DEFAULTS.rate),
  fixedS: env('BENCH_MESH_FIXED_S', DEFAULTS.fixedS),
  closedS: env('BENCH_MESH_CLOSED_S', DEFAULTS.closedS),
  /** Closed-loop rounds (throughput) while every arm is up: each round runs every arm once, the order rotated. */
  closedRounds: env('BENCH_MESH_CLOSED_ROUNDS', DEFAULTS.closedRounds),
  /** The latency phase: the arms loaded at once, `rate` requests per second in all, their requests interleaved. */
  latencyRuns: env('BENCH_MESH_LATENCY_RUNS', DEFAULTS.latencyRuns),
  latencyS: env('BENCH_MESH_LATENCY_S', DEFAULTS.latencyS),
  fixedWarmupS: 2,
  closedWarmupS: 0.5,
  /** Seconds the agent runs after it is ready before the load: its start-up work (JIT, GC) is not its steady cost.
   *  V8 keeps collecting for a while after start-up (its memory reducer): with the load 3 s after ready, this
   *  bench measured the agent at ~10 ms of CPU per second of the fixed-rate run; 25 s after, at 0.8–2 ms. */
  agentSettleS: 25,
  connections: 16,
  bodyBytes: 1024,
  /** The client pod's processes (load generator, client-side proxy) run on clientCpu, the server pods' (nginx,
   *  server-side proxies) on serverCpu: two "nodes" on a 2-core machine. The agent is not pinned. */
  clientCpu: 0,
  serverCpu: 1,
  split: { v1: 90, v2: 10 },
  /** Extra pod pairs (a client and a server Workload, a Service) in the agent's config, besides the bench's own. */
  extraPodPairs: 10,
  /** BENCH_MESH_ARMS=direct,mesh_mtls,haproxy_tls picks arms (mesh and mesh_mtls, one agent each on the same
   *  cgroups and pins, never in one run). */
  arms: process.env.BENCH_MESH_ARMS ? process.env.BENCH_MESH_ARMS.split(',') : memoryOnly ? ['mesh', 'haproxy_http'] : ['direct', 'mesh', 'haproxy_http', 'haproxy_tls'],
  /** Closed-loop rounds with one connection per request (Connection: close, a new connect for each request). */
  newConnRounds: env('BENCH_MESH_NEWCONN_ROUNDS', 4),
  /** BENCH_MESH_MTLS_TUNNEL=auto|pooled|dedicated: the mesh_mtls arm's agent's --mtls-tunnel-mode (auto, the
   *  agent's default: pooled unless the kernel has kTLS); BENCH_MESH_MTLS_POOL=1 is pooled. */
  mtlsTunnel: process.env.BENCH_MESH_MTLS_TUNNEL ?? (process.env.BENCH_MESH_MTLS_POOL === '1' ? 'pooled' : 'auto'),
  /** BENCH_MESH_DATAPLANE=PATH: the mesh_mtls arm's data plane executable (the agent's --dataplane; default: this
   *  tree's build), for before/after runs of the data plane alone. */
  dataplane: process.env.BENCH_MESH_DATAPLANE || undefined,
  /** What-if: a command the agent runs under, e.g. "chrt --idle 0" (none: the agent as shipped). */
  agentPrefix: (process.env.BENCH_MESH_AGENT_PREFIX ?? '').split(' ').filter(Boolean),
};
{
  const known = ['direct', 'mesh', 'mesh_mtls', 'mesh_mtls_local', 'haproxy_http', 'haproxy_tls'];
  const bad = params.arms.filter((a) => !known.includes(a));
  if (bad.length || !params.arms.length) throw new Error(`BENCH_MESH_ARMS: unknown arm ${bad.join(', ') || '(none given)'}; the arms are ${known.join(', ')}`);
  if (!['auto', 'pooled', 'dedicated'].includes(params.mtlsTunnel)) throw new Error(`BENCH_MESH_MTLS_TUNNEL: expected auto, pooled or dedicated, got ${JSON.stringify(params.mtlsTunnel)}`);
  if (params.arms.filter((a) => a.startsWith('mesh')).length > 1) throw new Error('BENCH_MESH_ARMS: mesh, mesh_mtls and mesh_mtls_local cannot run in one run (one agent each, on the same cgroups and pins)');
}
export const quick = memoryOnly
  ? process.env.BENCH_MESH_ARMS !== undefined || params.rate !== DEFAULTS.rate || params.fixedS !== DEFAULTS.fixedS || params.agentPrefix.length > 0
  : Object.entries(DEFAULTS).some(([k, v]) => params[k] !== v) || params.arms.join() !== 'direct,mesh,haproxy_http,haproxy_tls' || params.agentPrefix.length > 0;
export const ARMS = params.arms;

// --- names: unique per run (prefix + pid), so a leftover never collides -------------------------------------
const id = `mb${process.pid}`;
export const NS = { node: `${id}-node`, client: `${id}-client`, v1: `${id}-v1`, v2: `${id}-v2` };
export const ADDR = { client: '198.18.1.2', v1: '198.18.2.2', v2: '198.18.3.2', vip: '198.18.100.1', vipV1: '198.18.100.2', vipV2: '198.18.100.3' };
/** app: nginx inside the pod's workload cgroup (the mesh arm's server); plain: a second nginx in the same pod
 *  outside the mesh's cgroups (the direct and proxy arms' server), so that the latency phase can run every arm at
 *  once without the mesh's programs seeing the other arms' connections. The proxy ports: HTTP pair; TLS pair +100. */
export const PORT = { app: 80, plain: 8080, outbound: 15001, outboundV1: 15002, inbound: 15006 };
/** The mesh_mtls arm's data plane: its listeners on an address of the node's namespace (every pod routes
 *  198.18.0.0/15 through the node), and the source of its connections to the server pods (what STRICT admits). */
export const DP = { addr: '198.18.250.1', inboundSource: '198.18.250.6', outbound: 15401, tunnel: 15408, stats: 15420 };
export const cgroup2 = cgroup2Mount();
export const meshCg = join(cgroup2, `meshbench-${process.pid}`);
/** Outside the mesh's cgroup tree: the plain nginx and, in the latency phase, the other arms' client sockets. */
export const plainCg = join(cgroup2, `meshbench-${process.pid}-plain`);
export const pinRoot = `/sys/fs/bpf/meshbench-${process.pid}`;
export const apiSocket = `/run/mesh/meshbench-${process.pid}.sock`;
export const workloadCg = (w) => join(meshCg, 'default', w);
export const log = (msg) => console.error(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${msg}`);

export function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000, ...opts });
  if (r.status !== 0 && !opts.allowFail) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal ?? r.error}:\n${r.stdout ?? ''}${r.stderr ?? ''}`);
  return r;
}
const pidAlive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
};

for (const tool of ['ip', 'nginx', 'haproxy', 'openssl', 'curl', 'bpftool', 'taskset', 'setpriv', 'nsenter']) {
  if (run('sh', ['-c', `command -v ${tool}`], { allowFail: true }).status !== 0) throw new Error(`${tool} is missing: run scripts/setup.sh first`);
}
if (!existsSync(join(root, 'apps/agent/dist/cli/agent.js'))) throw new Error('apps/agent is not built: run scripts/build.sh first');

// --- leftovers of a run that was killed hard (its pid is gone) ----------------------------------------------
function sweepStale() {
  for (const ns of run('ip', ['netns', 'list']).stdout.split('\n').map((l) => l.split(' ')[0]).filter(Boolean)) {
    const m = /^mb(\d+)-(node|client|v1|v2)$/.exec(ns);
    if (!m || pidAlive(Number(m[1]))) continue;
    for (const p of run('ip', ['netns', 'pids', ns], { allowFail: true }).stdout.split('\n').filter(Boolean)) run('kill', ['-9', p], { allowFail: true });
    run('ip', ['netns', 'del', ns], { allowFail: true });
    log(`removed network namespace ${ns} left by a killed run`);
  }
  for (const [dir, re] of [
    ['/sys/fs/bpf', /^meshbench-(\d+)$/],
    [cgroup2, /^meshbench-(\d+)$/],
    [cgroup2, /^meshbench-(\d+)-plain$/],
  ]) {
    for (const name of readdirSync(dir)) {
      const m = re.exec(name);
      if (!m || pidAlive(Number(m[1]))) continue;
      if (name.endsWith('-plain')) {
        killCgroupTree(join(dir, name));
        spawnSync('sleep', ['0.3']);
        removeCgroupTree(join(dir, name));
        log(`removed ${join(dir, name)} left by a killed run`);
        continue;
      }
      const pins = dir === '/sys/fs/bpf' ? join(dir, name) : `/sys/fs/bpf/${name}`;
      const cg = join(cgroup2, name);
      if (existsSync(cg)) killCgroupTree(cg);
      spawnSync('sleep', ['0.3']);
      run(process.execPath, [MESHCTL_BIN, 'uninstall', '--force', '--pin-root', pins, '--cgroup-root', cg], { allowFail: true });
      log(`removed ${pins} / ${cg} left by a killed run`);
    }
  }
  for (const name of readdirSync(tmpdir())) {
    const m = /^mesh-bench-mesh-(\d+)-/.exec(name);
    if (m && !pidAlive(Number(m[1]))) rmSync(join(tmpdir(), name), { recursive: true, force: true });
  }
}
function removeCgroupTree(dir) {
  for (let i = 0; i < 20 && existsSync(dir); i++) {
    try {
      const rm = (d) => {
        for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) rm(join(d, e.name));
        rmdirSync(d);
      };
      rm(dir);
    } catch {
      spawnSync('sleep', ['0.1']);
    }
  }
  if (existsSync(dir)) throw new Error(`could not remove ${dir}`);
}
function killCgroupTree(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) killCgroupTree(join(dir, e.name));
  for (const p of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) run('kill', ['-9', p], { allowFail: true });
}
sweepStale();

// --- processes ----------------------------------------------------------------------------------------------
const live = new Set();
export class Proc {
  constructor(name, cmd, args, { stdout = 'ignore', stdin = 'ignore' } = {}) {
    this.name = name;
    // SIGKILL when the bench dies, even by SIGKILL (the signal survives the execs; pid stays the program's).
    this.child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', cmd, ...args], { stdio: [stdin, stdout, 'pipe'] });
    this.tail = [];
    createInterface({ input: this.child.stderr }).on('line', (l) => (this.tail = [...this.tail.slice(-30), l]));
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
    this.child.on('error', (err) => this.tail.push(`spawn error: ${err.message}`));
    live.add(this);
    this.exited.then(() => live.delete(this));
  }
  get pid() {
    return this.child.pid;
  }
  alive() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }
  async stop(signal = 'SIGTERM', timeoutMs = 5000) {
    if (this.alive()) {
      this.child.kill(signal);
      const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
      await this.exited;
      clearTimeout(timer);
    }
    return this.exited;
  }
  describe() {
    return `${this.name} (pid ${this.pid}); its last lines:\n${this.tail.join('\n')}`;
  }
}

// Everything the run made, undone in this order (at exit, on SIGINT/SIGTERM, or when the bench throws):
// processes, BPF handles and stats, the datapath (links, pins), cgroups, network namespaces, the temp dir.
export const tmp = mkdtempSync(join(tmpdir(), `mesh-bench-mesh-${process.pid}-`));
const made = { namespaces: [] };
/** What cleanup must close that the arms and the run open: the mesh arm's program handles, BPF run-time stats. */
export const state = { stats: undefined, openProgs: [], dataplanePid: undefined };
onCleanup(() => {
  const step = (what, fn) => {
    try {
      fn();
    } catch (err) {
      console.error(`cleanup: ${what}: ${err.message}`);
    }
  };
  step('processes', () => {
    let killed = false;
    for (const p of live) {
      if (p.alive()) {
        p.child.kill('SIGKILL');
        killed = true;
      }
    }
    // The mesh_mtls arm's data plane: a session of its own, not a child of ours.
    if (state.dataplanePid) {
      try {
        process.kill(state.dataplanePid, 'SIGKILL');
      } catch {
        /* gone */
      }
      killed = true;
    }
    if (killed) spawnSync('sleep', ['0.3']); // let the kernel take them out of their cgroups
  });
  step('BPF handles', () => {
    for (const p of state.openProgs) p.prog.close();
    state.openProgs = [];
    state.stats?.close();
    state.stats = undefined;
  });
  step('datapath', () => {
    if (existsSync(pinRoot) || existsSync(meshCg)) uninstallMesh(true);
  });
  step('cgroups', () => {
    removeCgroupTree(meshCg);
    removeCgroupTree(plainCg);
  });
  for (const ns of made.namespaces.splice(0)) step(`netns ${ns}`, () => run('ip', ['netns', 'del', ns]));
  step('temp dir', () => rmSync(tmp, { recursive: true, force: true }));
});

// --- topology -----------------------------------------------------------------------------------------------
export function topology() {
  for (const ns of Object.values(NS)) {
    run('ip', ['netns', 'add', ns]);
    made.namespaces.push(ns);
    run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }
  run('ip', ['netns', 'exec', NS.node, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  const pods = [
    ['client', 1],
    ['v1', 2],
    ['v2', 3],
  ];
  for (const [pod, n] of pods) {
    const host = `h-${pod}`;
    run('ip', ['-n', NS.node, 'link', 'add', host, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS[pod]]);
    run('ip', ['-n', NS.node, 'addr', 'add', `198.18.${n}.1/24`, 'dev', host]);
    run('ip', ['-n', NS.node, 'link', 'set', host, 'up']);
    run('ip', ['-n', NS[pod], 'addr', 'add', `198.18.${n}.2/24`, 'dev', 'eth0']);
    run('ip', ['-n', NS[pod], 'link', 'set', 'eth0', 'up']);
    // Only the bench's range, through the node: no default route, nothing leaves the machine.
    run('ip', ['-n', NS[pod], 'route', 'add', '198.18.0.0/15', 'via', `198.18.${n}.1`]);
  }
  // The mesh_mtls arm's data plane addresses: local to the node (on its lo; this kernel has no dummy links).
  for (const a of [DP.addr, DP.inboundSource]) run('ip', ['-n', NS.node, 'addr', 'add', `${a}/32`, 'dev', 'lo']);
}

// --- certificates for the TLS arm (a throwaway CA; a server cert per server pod, a client cert) ------------
export function certificates() {
  const d = join(tmp, 'pki');
  mkdirSync(d);
  const ossl = (...args) => run('openssl', args, { cwd: d });
  ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=mesh-bench throwaway CA');
  for (const name of ['client', 'v1', 'v2']) {
    ossl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}.bench.mesh`);
    writeFileSync(join(d, `${name}.ext`), `subjectAltName=DNS:${name}.bench.mesh,URI:spiffe://bench.mesh/ns/default/sa/${name}\nextendedKeyUsage=serverAuth,clientAuth\n`);
    ossl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', `${name}.crt`, '-extfile', `${name}.ext`);
    writeFileSync(join(d, `${name}.pem`), readFileSync(join(d, `${name}.crt`), 'utf8') + readFileSync(join(d, `${name}.key`), 'utf8'));
  }
  return d;
}

// --- servers: two nginx per server pod: inside the pod's workload cgroup (port 80), outside the mesh (8080) ---
export const BODY = 'x'.repeat(params.bodyBytes);
/** [cmd, args]: argv run in network namespace `ns`, pinned to `cpu`, after moving itself into cgroup `cg`
 *  (never this process). Every exec keeps the pid: the child's pid is the program's. */
export function podCommand(ns, cpu, argv, cg) {
  // nsenter, not `ip netns exec`: that one remounts /sys, hiding the cgroup2 mount the load generator's -g needs.
  const inNs = ['nsenter', `--net=/run/netns/${ns}`, 'taskset', '-c', String(cpu), ...argv];
  return cg ? ['/bin/sh', ['-c', 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', 'in-cgroup', cg, ...inNs]] : [inNs[0], inNs.slice(1)];
}
export function startNginx(pod, { port, cg, name }) {
  const dir = join(tmp, `nginx-${name}-${pod}`);
  mkdirSync(dir);
  writeFileSync(
    join(dir, 'nginx.conf'),
    `daemon off; master_process off; worker_processes 1; pid ${dir}/pid; error_log ${dir}/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_temp_path ${dir}/b; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f; uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s;
  server { listen ${port}; location / { return 200 "${BODY}"; } } }
`,
  );
  mkdirSync(cg, { recursive: true });
  const [cmd, args] = podCommand(NS[pod], params.serverCpu, ['nginx', '-p', dir, '-c', join(dir, 'nginx.conf')], cg);
  return new Proc(`nginx ${name} ${pod}`, cmd, args);
}

// --- checks -------------------------------------------------------------------------------------------------
/** GET url from inside the client pod (optionally through a wrapper, e.g. meshctl run); throws unless 200 + body. */
export function curlFromClient(url, { wrap = [], extra = [], expectFail = false } = {}) {
  const out = join(tmp, 'curl.body');
  rmSync(out, { force: true });
  const r = spawnSync(wrap[0] ?? 'ip', [...wrap.slice(1), ...(wrap.length ? ['ip'] : []), 'netns', 'exec', NS.client, 'curl', '-sS', '--max-time', '3', '-o', out, '-w', '%{http_code}', ...extra, url], { encoding: 'utf8', timeout: 20_000 });
  const ok = r.status === 0 && r.stdout.trim() === '200' && existsSync(out) && readFileSync(out, 'utf8') === BODY;
  if (expectFail) {
    if (ok) throw new Error(`GET ${url} from the client pod answered 200, expected a failure`);
    return;
  }
  if (!ok) throw new Error(`GET ${url} from the client pod: exit ${r.status}, status ${r.stdout.trim()}, body ${existsSync(out) ? readFileSync(out).length : 'none'} bytes (expected 200 and ${params.bodyBytes} bytes of x)\n${r.stderr}`);
}
export async function untilOk(fn, what, timeoutMs = 10_000) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      return fn();
    } catch (err) {
      if (performance.now() > deadline) throw new Error(`${what}: ${err.message}`);
      await sleep(100);
    }
  }
}

export const MESH_PROGRAM = /^(split_|http_|mtls_)/;
/** Programs effective on cgroup `cg` (attached there or inherited), by name. */
export function effectivePrograms(cg) {
  if (!existsSync(cg)) return [];
  const r = run('bpftool', ['-j', 'cgroup', 'show', cg, 'effective']);
  return r.stdout.trim() ? JSON.parse(r.stdout).map((p) => p.name) : [];
}
export const plainCgroups = () => ['client', 'v1', 'v2'].map((w) => join(plainCg, w));
/** The mesh's programs effective on any of `cgs`, as "name on cgroup". */
export const meshProgramsOn = (cgs) => cgs.flatMap((cg) => effectivePrograms(cg).filter((n) => MESH_PROGRAM.test(n)).map((n) => `${n} on ${cg}`));
/** Outside the mesh arm nothing of the mesh may be attached: no pins, no mesh program on any cgroup our
 *  processes use (the load generator's, the servers'). */
export function assertNoMesh(where) {
  if (existsSync(pinRoot)) throw new Error(`${where}: the mesh's pins (${pinRoot}) exist outside the mesh arm`);
  const ownCg = join(cgroup2, readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'))?.slice(3) ?? '/');
  const seen = meshProgramsOn([meshCg, workloadCg('v1'), workloadCg('v2'), ownCg, ...plainCgroups()]);
  if (seen.length) throw new Error(`${where}: mesh programs attached outside the mesh arm: ${seen.join(', ')}`);
}
export function uninstallMesh(allowBusy) {
  const r = run(process.execPath, [MESHCTL_BIN, 'uninstall', '--force', '--pin-root', pinRoot, '--cgroup-root', meshCg], { allowFail: true });
  // 1: cgroups that still hold processes (the servers') are left, as documented.
  if (r.status !== 0 && !(allowBusy && r.status === 1)) throw new Error(`meshctl uninstall exited ${r.status}:\n${r.stdout}${r.stderr}`);
}

