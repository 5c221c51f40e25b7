// bench:mesh — the mesh against no mesh and against a proxy-per-pod mesh, side by side in one run, on the same
// servers and the same load. A topology of network namespaces (a client pod, two server pods v1/v2, veth pairs
// through a node namespace), nginx in each server pod, and four arms taking turns:
//   direct        client → server, nothing in the path;
//   mesh          client → service VIP, the agent's split and metrics programs attached (the agent runs only
//                 during this arm; between its runs it is stopped and the datapath uninstalled);
//   haproxy_http  client → HAProxy (client pod) → HAProxy (server pod) → server, HTTP mode, keep-alive;
//   haproxy_tls   the same with mutual TLS between the two proxies.
// Each arm runs a fixed-rate load (latency, CPU, memory) and a closed-loop load (maximum throughput), with
// bench/mesh/loadgen.c. See bench/README.md ("bench:mesh") for what is measured and the formulas.
// Writes bench/results/mesh.json, mesh.md and mesh-latency.svg (and the table in bench/README.md).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

import { cgroup2Mount, enableStats, Program } from '@mesh/bpf';

import { AGENT_BIN, agentArgs, exitReason, MESHCTL_BIN, waitReady } from '../../scripts/lib/agent.mjs';
import { agentApi, buildC, cleanup, header, median, onCleanup, root, round, taggedLatencies } from '../lib.mjs';
import { markdownTable, latencySvg, updateReadme } from './report.mjs';

const t0 = performance.now();
const loadBefore = loadavg()[0];
const env = (k, d) => (process.env[k] === undefined || process.env[k] === '' ? d : Number(process.env[k]));
const DEFAULTS = { reps: 6, rate: 1000, fixedS: 10, closedS: 3, closedRounds: 8, latencyRuns: 4, latencyS: 20 };
const params = {
  reps: env('BENCH_MESH_REPS', DEFAULTS.reps),
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
  arms: process.env.BENCH_MESH_ARMS ? process.env.BENCH_MESH_ARMS.split(',') : ['direct', 'mesh', 'haproxy_http', 'haproxy_tls'],
  /** What-if: a command the agent runs under, e.g. "chrt --idle 0" (none: the agent as shipped). */
  agentPrefix: (process.env.BENCH_MESH_AGENT_PREFIX ?? '').split(' ').filter(Boolean),
};
const quick = Object.entries(DEFAULTS).some(([k, v]) => params[k] !== v) || params.arms.length !== 4 || params.agentPrefix.length > 0;
const ARMS = params.arms;

// --- names: unique per run (prefix + pid), so a leftover never collides -------------------------------------
const id = `mb${process.pid}`;
const NS = { node: `${id}-node`, client: `${id}-client`, v1: `${id}-v1`, v2: `${id}-v2` };
const ADDR = { client: '198.18.1.2', v1: '198.18.2.2', v2: '198.18.3.2', vip: '198.18.100.1', vipV1: '198.18.100.2', vipV2: '198.18.100.3' };
/** app: nginx inside the pod's workload cgroup (the mesh arm's server); plain: a second nginx in the same pod
 *  outside the mesh's cgroups (the direct and proxy arms' server), so that the latency phase can run every arm at
 *  once without the mesh's programs seeing the other arms' connections. The proxy ports: HTTP pair; TLS pair +100. */
const PORT = { app: 80, plain: 8080, outbound: 15001, outboundV1: 15002, inbound: 15006 };
const cgroup2 = cgroup2Mount();
const meshCg = join(cgroup2, `meshbench-${process.pid}`);
/** Outside the mesh's cgroup tree: the plain nginx and, in the latency phase, the other arms' client sockets. */
const plainCg = join(cgroup2, `meshbench-${process.pid}-plain`);
const pinRoot = `/sys/fs/bpf/meshbench-${process.pid}`;
const apiSocket = `/run/mesh/meshbench-${process.pid}.sock`;
const workloadCg = (w) => join(meshCg, 'default', w);
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));
const log = (msg) => console.error(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${msg}`);

function run(cmd, args, opts = {}) {
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
class Proc {
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
const tmp = mkdtempSync(join(tmpdir(), `mesh-bench-mesh-${process.pid}-`));
const made = { namespaces: [] };
let agent;
let stats;
let openProgs = [];
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
    if (killed) spawnSync('sleep', ['0.3']); // let the kernel take them out of their cgroups
  });
  step('BPF handles', () => {
    for (const p of openProgs) p.prog.close();
    openProgs = [];
    stats?.close();
    stats = undefined;
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
function topology() {
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
}

// --- certificates for the TLS arm (a throwaway CA; a server cert per server pod, a client cert) ------------
function certificates() {
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
const BODY = 'x'.repeat(params.bodyBytes);
/** [cmd, args]: argv run in network namespace `ns`, pinned to `cpu`, after moving itself into cgroup `cg`
 *  (never this process). Every exec keeps the pid: the child's pid is the program's. */
function podCommand(ns, cpu, argv, cg) {
  // nsenter, not `ip netns exec`: that one remounts /sys, hiding the cgroup2 mount the load generator's -g needs.
  const inNs = ['nsenter', `--net=/run/netns/${ns}`, 'taskset', '-c', String(cpu), ...argv];
  return cg ? ['/bin/sh', ['-c', 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', 'in-cgroup', cg, ...inNs]] : [inNs[0], inNs.slice(1)];
}
function startNginx(pod, { port, cg, name }) {
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
function curlFromClient(url, { wrap = [], extra = [], expectFail = false } = {}) {
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
async function untilOk(fn, what, timeoutMs = 10_000) {
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

const MESH_PROGRAM = /^(split_|http_)/;
/** Programs effective on cgroup `cg` (attached there or inherited), by name. */
function effectivePrograms(cg) {
  if (!existsSync(cg)) return [];
  const r = run('bpftool', ['-j', 'cgroup', 'show', cg, 'effective']);
  return r.stdout.trim() ? JSON.parse(r.stdout).map((p) => p.name) : [];
}
const plainCgroups = () => ['client', 'v1', 'v2'].map((w) => join(plainCg, w));
/** The mesh's programs effective on any of `cgs`, as "name on cgroup". */
const meshProgramsOn = (cgs) => cgs.flatMap((cg) => effectivePrograms(cg).filter((n) => MESH_PROGRAM.test(n)).map((n) => `${n} on ${cg}`));
/** Where an arm's load-generator sockets go: the arm's own cgroup, or the client pod's outside the mesh. */
const clientCgroup = (arm) => arms[arm].cgroup?.() ?? join(plainCg, 'client');
/** Outside the mesh arm nothing of the mesh may be attached: no pins, no mesh program on any cgroup our
 *  processes use (the load generator's, the servers'). */
function assertNoMesh(where) {
  if (existsSync(pinRoot)) throw new Error(`${where}: the mesh's pins (${pinRoot}) exist outside the mesh arm`);
  const ownCg = join(cgroup2, readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'))?.slice(3) ?? '/');
  const seen = meshProgramsOn([meshCg, workloadCg('v1'), workloadCg('v2'), ownCg, ...plainCgroups()]);
  if (seen.length) throw new Error(`${where}: mesh programs attached outside the mesh arm: ${seen.join(', ')}`);
}

// --- measurement --------------------------------------------------------------------------------------------
function threadsCpuNs(pid) {
  // Every thread's run time (schedstat: ns, not tick-sampled): the agent has several threads.
  let ns = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread exited meanwhile
    }
  }
  return ns;
}
function rssMb(pid) {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? 0);
  return { rss: round(kb('VmRSS') / 1024, 2), anon: round(kb('RssAnon') / 1024, 2), file: round(kb('RssFile') / 1024, 2), hwm: round(kb('VmHWM') / 1024, 2) };
}
/** /proc/stat first line, in ms (tick-sampled at CONFIG_HZ, reported in USER_HZ). */
function procStat() {
  const [user, nice, system, idle, iowait, irq, softirq, steal] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const ms = (t) => (t * 1000) / CLK_TCK;
  return { busy: ms(user + nice + system + irq + softirq + steal), softirq: ms(softirq), system: ms(system) };
}
const ksoftirqd = readdirSync('/proc')
  .filter((p) => /^\d+$/.test(p))
  .filter((p) => {
    try {
      return /^ksoftirqd\//.test(readFileSync(`/proc/${p}/comm`, 'utf8'));
    } catch {
      return false;
    }
  })
  .map(Number);

/** One reading of everything the window is measured with. procs: { role: pid }. */
function snapshot(procs, progs) {
  const cpu = {};
  for (const [role, pid] of Object.entries(procs)) cpu[role] = threadsCpuNs(pid);
  cpu.ksoftirqd = ksoftirqd.reduce((a, p) => a + threadsCpuNs(p), 0);
  const bpf = {};
  for (const p of progs) {
    const s = p.prog.stats();
    bpf[p.name] = { runs: Number(s.runCount), ns: Number(s.runTimeNs) };
  }
  return { at: performance.now(), cpu, stat: procStat(), bpf };
}

/** Runs the load generator in the client pod; samples CPU at the start and the end of its measured window. */
async function load(arm, targets, { rate, durationS, warmupS, latFile, cgroups, connections = params.connections }, procs, progs = [], cg) {
  const argv = [loadgen, '-s', '-t', targets.join(','), '-c', String(connections), '-d', String(durationS), '-w', String(warmupS), '-r', String(rate), '-b', String(params.bodyBytes), '-H', 'server.default.svc'];
  if (latFile) argv.push('-o', latFile);
  // Each target's sockets in a cgroup of its own, each latency tagged with its target's index.
  if (cgroups) argv.push('-g', cgroups.join(','), '-T');
  const [cmd, args] = podCommand(NS.client, params.clientCpu, argv, cg);
  const p = new Proc(`loadgen (${arm})`, cmd, args, { stdout: 'pipe', stdin: 'pipe' });
  p.child.stdin.on('error', () => {}); // it may be gone already
  let before;
  let after;
  let summary;
  let memory;
  const lines = createInterface({ input: p.child.stdout });
  lines.on('line', (l) => {
    if (l.startsWith('START ')) {
      procs = { loadgen: Number(l.slice(6)), ...procs };
      before = snapshot(procs, progs);
    } else if (l === 'END') {
      after = snapshot(procs, progs);
      memory = Object.fromEntries(Object.entries(procs).map(([role, pid]) => [role, rssMb(pid)]));
      p.child.stdin.end('\n'); // the load generator waits for this before it exits
    } else if (l.startsWith('{')) {
      summary = JSON.parse(l);
    }
  });
  const timer = setTimeout(() => p.child.kill('SIGKILL'), (durationS + warmupS + 30) * 1000);
  const { code, signal } = await p.exited;
  clearTimeout(timer);
  if (code !== 0 || !summary || !before || !after) throw new Error(`loadgen (${arm}) exited ${code ?? signal}: ${JSON.stringify(summary)}\n${p.describe()}`);
  if (summary.errors) throw new Error(`loadgen (${arm}): ${summary.errors} bad responses: ${JSON.stringify(summary)}`);
  const cpuMs = {};
  for (const k of Object.keys(after.cpu)) cpuMs[k] = round((after.cpu[k] - before.cpu[k]) / 1e6, 2);
  const bpf = {};
  for (const k of Object.keys(after.bpf)) bpf[k] = { runs: after.bpf[k].runs - before.bpf[k].runs, ms: round((after.bpf[k].ns - before.bpf[k].ns) / 1e6, 3) };
  return {
    ...summary,
    window_ms: round(after.at - before.at, 1),
    cpu_ms: cpuMs,
    system_ms: { busy: round(after.stat.busy - before.stat.busy, 1), softirq: round(after.stat.softirq - before.stat.softirq, 1) },
    bpf,
    memory,
  };
}

// --- the arms -----------------------------------------------------------------------------------------------
let port;
let configPath;
let pki;
const haproxyVersion = run('haproxy', ['-v']).stdout.split('\n')[0];

function meshConfig() {
  const wl = (name, labels, addr) => `apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata:
  name: ${name}
  labels: { ${Object.entries(labels).map(([k, v]) => `${k}: ${v}`).join(', ')} }
spec:
  addresses: [${addr}]
`;
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
    wl('client', { app: 'client' }, ADDR.client),
    wl('v1', { app: 'server', version: 'v1' }, ADDR.v1),
    wl('v2', { app: 'server', version: 'v2' }, ADDR.v2),
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
function uninstallMesh(allowBusy) {
  const r = run(process.execPath, [MESHCTL_BIN, 'uninstall', '--force', '--pin-root', pinRoot, '--cgroup-root', meshCg], { allowFail: true });
  // 1: cgroups that still hold processes (the servers') are left, as documented.
  if (r.status !== 0 && !(allowBusy && r.status === 1)) throw new Error(`meshctl uninstall exited ${r.status}:\n${r.stdout}${r.stderr}`);
}

const arms = {
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
      openProgs = status.programs.map((p) => ({ name: p.program, prog: Program.openById(p.programId) }));
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
        progs: openProgs,
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
          for (const p of openProgs) p.prog.close();
          openProgs = [];
          const { code, signal } = await agent.stop();
          if (code !== 0) throw new Error(`the agent exited ${code ?? signal} on SIGTERM: ${agent.describe()}`);
          agent = undefined;
          uninstallMesh(true);
          assertNoMesh('after the mesh arm');
        },
      };
    },
  },
  haproxy_http: haproxyArm(false),
  haproxy_tls: haproxyArm(true),
};

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

// --- the run ------------------------------------------------------------------------------------------------
const loadgen = buildC('mesh/loadgen.c', 'loadgen');
log(`topology ${Object.values(NS).join(', ')}; cgroups under ${meshCg}; pins under ${pinRoot}`);
topology();
pki = certificates();
configPath = join(tmp, 'mesh.yaml');
writeFileSync(configPath, meshConfig());
{
  const check = run(process.execPath, [AGENT_BIN, '--config', configPath, '--check'], { allowFail: true });
  if (check.status !== 0) throw new Error(`the agent rejects the bench's config:\n${check.stdout}${check.stderr}`);
}
port = await new Promise((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const p = s.address().port;
    s.close(() => resolve(p));
  });
});
mkdirSync(meshCg, { recursive: true });
mkdirSync(join(plainCg, 'client'), { recursive: true });
const nginx = {
  app: { v1: startNginx('v1', { port: PORT.app, cg: workloadCg('v1'), name: 'app' }), v2: startNginx('v2', { port: PORT.app, cg: workloadCg('v2'), name: 'app' }) },
  plain: { v1: startNginx('v1', { port: PORT.plain, cg: join(plainCg, 'v1'), name: 'plain' }), v2: startNginx('v2', { port: PORT.plain, cg: join(plainCg, 'v2'), name: 'plain' }) },
};
await untilOk(() => {
  for (const set of Object.values(nginx)) for (const p of Object.values(set)) if (!p.alive()) throw new Error(`exited: ${p.describe()}`);
  for (const port of [PORT.app, PORT.plain]) {
    curlFromClient(`http://${ADDR.v1}:${port}/`);
    curlFromClient(`http://${ADDR.v2}:${port}/`);
  }
}, 'nginx did not answer');
for (const set of Object.values(nginx)) {
  for (const p of Object.values(set)) if (readFileSync(`/proc/${p.pid}/comm`, 'utf8').trim() !== 'nginx') throw new Error(`pid ${p.pid} is not nginx`);
}
/** The servers an arm's requests reach, by the roles the CPU figures use. */
const serverProcs = (set) => ({ nginx_v1: nginx[set].v1.pid, nginx_v2: nginx[set].v2.pid });

const raw = Object.fromEntries(ARMS.map((a) => [a, []]));
const latencies = Object.fromEntries(ARMS.map((a) => [a, []]));
const latencyRuns = [];
const closedRuns = [];
const order = [];

/**
 * The phase with every arm up at once: the latency runs, then the closed-loop rounds.
 *
 * Latency: every arm up at once (the proxies, the agent with its programs attached) and one load
 * generator loading all of them, params.rate requests per second in all, each arm on its own 16 connections, the
 * arms' requests interleaved one by one. Whatever the machine does meanwhile (the VM's vCPU wake-ups, a neighbour's burst)
 * touches every arm alike; with one arm after the other, a run's p99 moved by tens of µs between runs of the
 * same arm, as much as the differences measured. The mesh's programs see only its own connections: the other
 * arms' sockets are in cgroups outside the mesh's (plainCg), their servers the plain nginx.
 */
async function allArmsPhase() {
  const sessions = {};
  try {
    // The others first (each checks that nothing of the mesh is attached), then the mesh.
    for (const arm of [...ARMS.filter((x) => x !== 'mesh'), ...ARMS.filter((x) => x === 'mesh')]) sessions[arm] = await arms[arm].start();
    const leaked = meshProgramsOn(plainCgroups());
    if (leaked.length) throw new Error(`latency phase: mesh programs reach the other arms' cgroups: ${leaked.join(', ')}`);
    // One target per connection (the load generator gives connection k target k), the arms in a de Bruijn order:
    // the sends go round the connections in turn, so every arm's request follows every arm's (and every pair of
    // arms', with four) equally often, and what a slow request of one arm leaves behind lands on all alike. The
    // direct arm's 16 connections go to its 8 targets 2 each (7 × v1 + 1 × v2, as in its own runs).
    const armOf = balancedOrder(ARMS.length, params.connections * ARMS.length).map((i) => ARMS[i]);
    const seen = Object.fromEntries(ARMS.map((a) => [a, 0]));
    const targets = armOf.map((arm) => {
      const t = arms[arm].targets();
      return t[seen[arm]++ % t.length];
    });
    const cgroups = armOf.map(clientCgroup);
    // Every process, by set.role or arm.role (both proxy pairs have a haproxy_client).
    const procs = {};
    for (const set of ['app', 'plain']) for (const [role, pid] of Object.entries(serverProcs(set))) procs[`${set}.${role}`] = pid;
    for (const [arm, s] of Object.entries(sessions)) for (const [role, pid] of Object.entries(s.procs)) procs[`${arm}.${role}`] = pid;
    const cpuMs = {};
    let meshRequests = 0;
    for (let run = 0; run < params.latencyRuns; run++) {
      const latFile = join(tmp, `lat-${run}`);
      const res = await load('all arms', targets, { rate: params.rate, durationS: params.latencyS, warmupS: params.fixedWarmupS, latFile, cgroups, connections: params.connections * ARMS.length }, procs);
      for (const [k, v] of Object.entries(res.cpu_ms)) cpuMs[k] = (cpuMs[k] ?? 0) + v;
      if (res.reconnects) throw new Error(`loadgen reconnected ${res.reconnects} times: a new socket may be in another arm's cgroup`);
      const samples = taggedLatencies(latFile, armOf);
      rmSync(latFile);
      const perArm = {};
      for (const arm of ARMS) {
        for (const v of samples[arm]) latencies[arm].push(v);
        const sorted = Float64Array.from(samples[arm]).sort();
        perArm[arm] = { requests: sorted.length, p50_ms: pctMs(sorted, 0.5), p90_ms: pctMs(sorted, 0.9), p99_ms: pctMs(sorted, 0.99) };
      }
      meshRequests += samples.mesh?.length ?? 0;
      latencyRuns.push({ rps: res.rps, cpu_ms: res.cpu_ms, late_sends: res.late_sends, late_p50_us: res.late_p50_us, late_p99_us: res.late_p99_us, late_p999_us: res.late_p999_us, requests: res.requests, arms: perArm });
      log(`latency run ${run + 1}/${params.latencyRuns}, all arms at once, ${res.rps} rps: p99 ${ARMS.map((a) => `${a} ${Math.round(perArm[a].p99_ms * 1000)} µs`).join(', ')}`);
    }
    if (sessions.mesh) await sessions.mesh.check({ requests: meshRequests });
    // Throughput: a closed loop per arm in turn, the order rotated each round, a few seconds each; the other arms
    // are up but idle. One arm at a time (at saturation, arms loaded together would share the CPUs' queues and
    // each other's costs), but in short turns many times over: a slow stretch of the machine lands on a few
    // turns of every arm, not on one arm's figure. Against v1 alone in every arm: both nginx share the server
    // CPU, so with the split the throughput would depend on how many of the 16 connections the mesh's
    // per-connection choice sends to v2 (none in 18 % of runs).
    for (let round = 0; round < params.closedRounds; round++) {
      for (const arm of ARMS.map((_, i) => ARMS[(i + round) % ARMS.length])) {
        const armProcs = { ...serverProcs(arms[arm].servers), ...sessions[arm].procs };
        const res = await load(arm, arms[arm].closedTargets(), { rate: 0, durationS: params.closedS, warmupS: params.closedWarmupS }, armProcs, [], clientCgroup(arm));
        if (res.reconnects) throw new Error(`loadgen (${arm}, closed loop) reconnected ${res.reconnects} times`);
        closedRuns.push({ round, arm, rps: res.rps, p50_us: res.p50_us, p99_us: res.p99_us, requests: res.requests, cpu_ms: res.cpu_ms });
      }
      const r = Object.fromEntries(closedRuns.filter((x) => x.round === round).map((x) => [x.arm, x.rps]));
      log(`closed-loop round ${round + 1}/${params.closedRounds}: ${ARMS.map((a) => `${a} ${Math.round(r[a])} rps`).join(', ')}`);
    }
    // The proxies carried their arm's requests (each used CPU), as in their own runs.
    for (const [arm, s] of Object.entries(sessions)) if (s.check && arm !== 'mesh') await s.check({ cpu_ms: Object.fromEntries(Object.keys(s.procs).map((role) => [role, cpuMs[`${arm}.${role}`]])) });
  } finally {
    for (const s of Object.values(sessions)) await s.stop();
  }
}
/**
 * n symbols (0 … k − 1) in a cyclic order where every run of `order` symbols appears equally often: a de Bruijn
 * sequence B(k, order), repeated, for the largest order with k^order dividing n (1: plain round robin).
 */
function balancedOrder(k, n) {
  let order = 1;
  while (k > 1 && n % k ** (order + 1) === 0) order++;
  // The FKM algorithm: the Lyndon words of length dividing `order`, in lexicographic order, concatenated.
  const seq = [];
  const a = new Array(k * order + 1).fill(0);
  const db = (t, p) => {
    if (t > order) {
      if (order % p === 0) seq.push(...a.slice(1, p + 1));
      return;
    }
    a[t] = a[t - p];
    db(t + 1, p);
    for (let j = a[t - p] + 1; j < k; j++) {
      a[t] = j;
      db(t + 1, t);
    }
  };
  db(1, 1);
  return Array.from({ length: n }, (_, i) => seq[i % seq.length]);
}
/** The q-quantile of sorted ns samples, in ms (nearest rank). */
const pctMs = (sorted, q) => round(sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] / 1e6, 4);
try {
  for (let rep = 0; rep < params.reps; rep++) {
    // Rotate the order each repetition: every arm takes every position, so drift hits all alike.
    const repOrder = ARMS.map((_, i) => ARMS[(i + rep) % ARMS.length]);
    order.push(repOrder);
    for (const arm of repOrder) {
      const a = arms[arm];
      const session = await a.start();
      try {
        const procs = { ...serverProcs(a.servers), ...session.procs };
        const cg = a.cgroup?.();
        // The kernel's BPF run-time statistics only during the mesh arm's fixed-rate run (they cost a little).
        if (session.progs) stats = enableStats();
        let fixed;
        try {
          fixed = await load(arm, a.targets(), { rate: params.rate, durationS: params.fixedS, warmupS: params.fixedWarmupS }, procs, session.progs, cg);
        } finally {
          stats?.close();
          stats = undefined;
        }
        const checked = (await session.check?.(fixed)) ?? {};
        raw[arm].push({ rep, fixed, checks: checked });
        log(`rep ${rep + 1}/${params.reps} ${arm.padEnd(12)} fixed ${fixed.rps} rps p50 ${fixed.p50_us} µs p99 ${fixed.p99_us} µs (late sends ${fixed.late_sends})`);
      } finally {
        await session.stop();
      }
    }
  }
  await allArmsPhase();
} catch (err) {
  cleanup();
  throw err;
}
for (const set of Object.values(nginx)) for (const p of Object.values(set)) await p.stop();
uninstallMesh(false); // the servers are gone: the cgroups go too
cleanup();

// --- figures ------------------------------------------------------------------------------------------------
const OWN = { direct: [], mesh: ['agent'], haproxy_http: ['haproxy_client', 'haproxy_v1', 'haproxy_v2'], haproxy_tls: ['haproxy_client', 'haproxy_v1', 'haproxy_v2'] };
const APP = ['loadgen', 'nginx_v1', 'nginx_v2', 'ksoftirqd'];
const sum = (obj, keys) => keys.reduce((a, k) => a + (obj[k] ?? 0), 0);
const per1k = (ms, requests) => (ms * 1000) / requests;
const med = (xs, d = 3) => round(median(xs), d);

// CPU per repetition, each arm against the direct arm of the same repetition.
const cpuRows = {};
for (const arm of ARMS) {
  cpuRows[arm] = raw[arm].map((r) => {
    const f = r.fixed;
    const direct = raw.direct?.find((d) => d.rep === r.rep)?.fixed;
    const own = per1k(sum(f.cpu_ms, OWN[arm]), f.requests);
    const app = per1k(sum(f.cpu_ms, APP), f.requests);
    const appDirect = direct ? per1k(sum(direct.cpu_ms, APP), direct.requests) : app;
    const bpf = per1k(Object.values(f.bpf).reduce((a, b) => a + b.ms, 0), f.requests);
    return {
      own_ms_per_1k: own,
      app_ms_per_1k: app,
      app_delta_ms_per_1k: app - appDirect,
      bpf_ms_per_1k: bpf,
      softirq_ms_per_1k: per1k(f.system_ms.softirq, f.requests),
      softirq_delta_ms_per_1k: per1k(f.system_ms.softirq, f.requests) - (direct ? per1k(direct.system_ms.softirq, direct.requests) : 0),
      machine_busy_ms_per_1k: per1k(f.system_ms.busy, f.requests),
      // The mesh's programs run inside the app processes: never count less than their measured run time.
      cpu_ms_per_1k: arm === 'direct' ? 0 : own + (arm === 'mesh' ? Math.max(app - appDirect, bpf) : app - appDirect),
    };
  });
}
// The same at saturation: each closed-loop run against the direct arm's run of the same round (BPF stats off).
const saturatedRows = {};
for (const arm of ARMS) {
  saturatedRows[arm] = closedRuns
    .filter((c) => c.arm === arm)
    .map((c) => {
      const d = closedRuns.find((x) => x.arm === 'direct' && x.round === c.round);
      return arm === 'direct' ? 0 : per1k(sum(c.cpu_ms, OWN[arm]), c.requests) + per1k(sum(c.cpu_ms, APP), c.requests) - (d ? per1k(sum(d.cpu_ms, APP), d.requests) : 0);
    });
}
const closedOf = (arm) => closedRuns.filter((c) => c.arm === arm);
/** Every request of the latency phase per arm, sorted (ns). */
const sortedLatencies = Object.fromEntries(ARMS.map((a) => [a, Float64Array.from(latencies[a]).sort()]));
const rssOf = (arm, roles) => median(raw[arm].map((r) => sum(Object.fromEntries(Object.entries(r.fixed.memory).map(([k, v]) => [k, v.rss])), roles)));
const results = {};
for (const arm of ARMS) {
  const fx = raw[arm].map((r) => r.fixed);
  const c = cpuRows[arm];
  const all = sortedLatencies[arm];
  results[arm] = {
    // Latency: the latency phase (all arms at once, interleaved), every request of its runs.
    p50_ms: pctMs(all, 0.5),
    p90_ms: pctMs(all, 0.9),
    p99_ms: pctMs(all, 0.99),
    p999_ms: pctMs(all, 0.999),
    latency_requests: all.length,
    // The same from the arm's own fixed-rate runs (one arm at a time): medians over the repetitions.
    sequential: {
      p50_ms: med(fx.map((f) => f.p50_us / 1000), 4),
      p90_ms: med(fx.map((f) => f.p90_us / 1000), 4),
      p99_ms: med(fx.map((f) => f.p99_us / 1000), 4),
    },
    rps: med(closedOf(arm).map((r) => r.rps), 0),
    cpu_ms_per_1k: med(c.map((x) => x.cpu_ms_per_1k), 2),
    rss_mb: round(rssOf(arm, OWN[arm]), 1),
    fixed_rate_rps: med(fx.map((f) => f.rps), 1),
    closed_loop_p99_ms: med(closedOf(arm).map((r) => r.p99_us / 1000), 4),
    saturated_cpu_ms_per_1k: med(saturatedRows[arm], 2),
    cpu_components_ms_per_1k: {
      own: med(c.map((x) => x.own_ms_per_1k), 2),
      app_delta: med(c.map((x) => x.app_delta_ms_per_1k), 2),
      bpf: med(c.map((x) => x.bpf_ms_per_1k), 3),
      app_total: med(c.map((x) => x.app_ms_per_1k), 2),
      softirq_system: med(c.map((x) => x.softirq_ms_per_1k), 2),
      softirq_system_delta: med(c.map((x) => x.softirq_delta_ms_per_1k), 2),
      machine_busy: med(c.map((x) => x.machine_busy_ms_per_1k), 2),
    },
  };
}
for (const arm of ARMS) {
  if (arm === 'direct' || !results.direct) continue;
  const r = results[arm];
  r.added_p50_ms = round(r.p50_ms - results.direct.p50_ms, 4);
  r.added_p90_ms = round(r.p90_ms - results.direct.p90_ms, 4);
  r.added_p99_ms = round(r.p99_ms - results.direct.p99_ms, 4);
  r.sequential.added_p99_ms = round(r.sequential.p99_ms - results.direct.sequential.p99_ms, 4);
  r.throughput_vs_direct = round(r.rps / results.direct.rps, 3);
}
const memory = {};
for (const arm of ['haproxy_http', 'haproxy_tls'].filter((a) => results[a])) {
  const client = rssOf(arm, ['haproxy_client']);
  const server = (rssOf(arm, ['haproxy_v1']) + rssOf(arm, ['haproxy_v2'])) / 2;
  const anon = (role) => median(raw[arm].map((r) => r.fixed.memory[role].anon));
  memory[arm] = {
    client_proxy_mb: round(client, 2),
    server_proxy_mb: round(server, 2),
    per_pod_pair_mb: round(client + server, 2),
    ten_pairs_mb: round(10 * (client + server), 1),
    /** Stricter: the file-backed pages (binary, libraries) that the proxies of a node share counted once. */
    ten_pairs_shared_files_mb: round(
      10 * (anon('haproxy_client') + (anon('haproxy_v1') + anon('haproxy_v2')) / 2) + Math.max(...['haproxy_client', 'haproxy_v1', 'haproxy_v2'].map((role) => median(raw[arm].map((r) => r.fixed.memory[role].file)))),
      1,
    ),
  };
}
if (results.mesh) {
  memory.agent = {
    rss_mb: results.mesh.rss_mb,
    anon_mb: round(median(raw.mesh.map((r) => r.fixed.memory.agent.anon)), 1),
    bpf_maps_mb: med(raw.mesh.map((r) => r.checks.bpf_maps_mb), 2),
    config: `the bench's 3 Workloads, 3 Services and 1 HTTPRoute, plus ${params.extraPodPairs} more pod pairs (a client and a server Workload and a Service each)`,
  };
}
const ratio = (a, b) => (a === undefined || b === undefined || !b ? undefined : round(a / b, 3));
/** What the mesh adds over what a proxy adds: a ratio only when the proxy's addition is above zero. When the
 *  direct arm's own percentile came out above the proxy arm's, the run's noise exceeded the differences and no
 *  ratio of the two would mean anything (two negative numbers give a large positive one). */
const addedRatio = (a, b) => (b === undefined || b <= 0 ? undefined : ratio(a, b));
const ratios = {
  added_p99_vs_haproxy_http: addedRatio(results.mesh?.added_p99_ms, results.haproxy_http?.added_p99_ms),
  throughput_vs_direct: results.mesh?.throughput_vs_direct,
  cpu_vs_haproxy_http: ratio(results.mesh?.cpu_ms_per_1k, results.haproxy_http?.cpu_ms_per_1k),
  memory_vs_haproxy_10_pairs: ratio(memory.agent?.rss_mb, memory.haproxy_http?.ten_pairs_mb),
};
const goals = {
  added_p99_vs_haproxy_http:
    ratios.added_p99_vs_haproxy_http === undefined && results.haproxy_http?.added_p99_ms !== undefined
      ? { goal: '≤ 0.3', met: null, why: `not measurable in this run: the direct arm's p99 (${results.direct.p99_ms} ms) was not below the HAProxy pair's (${results.haproxy_http.p99_ms} ms)` }
      : { goal: '≤ 0.3', met: ratios.added_p99_vs_haproxy_http !== undefined && ratios.added_p99_vs_haproxy_http <= 0.3 },
  throughput_vs_direct: { goal: '≥ 0.95', met: ratios.throughput_vs_direct !== undefined && ratios.throughput_vs_direct >= 0.95 },
  cpu_vs_haproxy_http: { goal: '≤ 0.25', met: ratios.cpu_vs_haproxy_http !== undefined && ratios.cpu_vs_haproxy_http <= 0.25 },
  memory_vs_haproxy_10_pairs: { goal: '≤ 0.5', met: ratios.memory_vs_haproxy_10_pairs !== undefined && ratios.memory_vs_haproxy_10_pairs <= 0.5 },
};
const byRep = (arm, rep) => raw[arm]?.find((r) => r.rep === rep);
const perRep = (fn) => (results.direct ? raw.direct.map((d) => fn(d.rep)).filter((x) => x !== undefined).map((x) => round(x, 3)) : []);
const secondary = {
  /** p90 sits below the machine's scheduling noise (see noise), p99 does not: the same ratio one step lower. */
  added_p90_vs_haproxy_http: addedRatio(results.mesh?.added_p90_ms, results.haproxy_http?.added_p90_ms),
  /** Each closed-loop round's own throughput ratio (mesh ÷ direct of the same round): the spread. */
  per_round_throughput_vs_direct: [...new Set(closedRuns.map((c) => c.round))]
    .map((n) => {
      const m = closedRuns.find((c) => c.arm === 'mesh' && c.round === n);
      const d = closedRuns.find((c) => c.arm === 'direct' && c.round === n);
      return m && d ? round(m.rps / d.rps, 3) : undefined;
    })
    .filter((x) => x !== undefined),
  /** Each latency run's own figures (all arms at once): the spread of the ratio the goal is on. */
  per_latency_run: {
    mesh_added_p99_ms: latencyRuns.filter((r) => r.arms.mesh && r.arms.direct).map((r) => round(r.arms.mesh.p99_ms - r.arms.direct.p99_ms, 4)),
    haproxy_http_added_p99_ms: latencyRuns.filter((r) => r.arms.haproxy_http && r.arms.direct).map((r) => round(r.arms.haproxy_http.p99_ms - r.arms.direct.p99_ms, 4)),
    added_p99_vs_haproxy_http: latencyRuns
      .filter((r) => r.arms.mesh && r.arms.haproxy_http && r.arms.direct)
      .map((r) => addedRatio(r.arms.mesh.p99_ms - r.arms.direct.p99_ms, r.arms.haproxy_http.p99_ms - r.arms.direct.p99_ms)),
  },
  /** The same ratio from the arms' own fixed-rate runs, one arm at a time (medians over the repetitions). */
  sequential_added_p99_vs_haproxy_http: addedRatio(results.mesh?.sequential.added_p99_ms, results.haproxy_http?.sequential.added_p99_ms),
  /** Each repetition's own figures (each arm against the direct arm of the same repetition): the spread. */
  per_repetition: {
    mesh_added_p99_ms: perRep((i) => byRep('mesh', i) && (byRep('mesh', i).fixed.p99_us - byRep('direct', i).fixed.p99_us) / 1000),
    haproxy_http_added_p99_ms: perRep((i) => byRep('haproxy_http', i) && (byRep('haproxy_http', i).fixed.p99_us - byRep('direct', i).fixed.p99_us) / 1000),
    mesh_added_p90_ms: perRep((i) => byRep('mesh', i) && (byRep('mesh', i).fixed.p90_us - byRep('direct', i).fixed.p90_us) / 1000),
    haproxy_http_added_p90_ms: perRep((i) => byRep('haproxy_http', i) && (byRep('haproxy_http', i).fixed.p90_us - byRep('direct', i).fixed.p90_us) / 1000),
  },
  added_p99_vs_haproxy_tls: addedRatio(results.mesh?.added_p99_ms, results.haproxy_tls?.added_p99_ms),
  cpu_vs_haproxy_tls: ratio(results.mesh?.cpu_ms_per_1k, results.haproxy_tls?.cpu_ms_per_1k),
  saturated_cpu_vs_haproxy_http: ratio(results.mesh?.saturated_cpu_ms_per_1k, results.haproxy_http?.saturated_cpu_ms_per_1k),
  memory_vs_haproxy_tls_10_pairs: ratio(memory.agent?.rss_mb, memory.haproxy_tls?.ten_pairs_mb),
  memory_with_bpf_maps_vs_haproxy_10_pairs: ratio(memory.agent && memory.agent.rss_mb + memory.agent.bpf_maps_mb, memory.haproxy_http?.ten_pairs_mb),
  memory_vs_haproxy_10_pairs_shared_files: ratio(memory.agent?.rss_mb, memory.haproxy_http?.ten_pairs_shared_files_mb),
};

// The latency distribution of every arm (every request of the latency phase), for the chart.
// Percentiles 1 %, 5 %, then evenly spaced on a log scale of 1 / (1 − p) up to 99.99 % (20 points a decade).
const GRID = [0.01, 0.05, ...Array.from({ length: 80 }, (_, k) => round(1 - 10 ** (-(k + 1) / 20), 6))];
const distribution = {};
for (const arm of ARMS) {
  const s = sortedLatencies[arm];
  distribution[arm] = { requests: s.length, points: GRID.filter((p) => s.length * (1 - p) >= 1).map((p) => [p, pctMs(s, p)]) };
}

// The machine's scheduling noise as the load generator saw it: how late its sends were against the schedule.
const allFixed = [...ARMS.flatMap((a) => raw[a].map((r) => r.fixed)), ...latencyRuns];
const noise = {
  what: 'lateness of the fixed-rate sends against their schedule (the load generator waking up late), all runs: median of the per-run figures, and the worst run',
  late_p50_ms: med(allFixed.map((f) => f.late_p50_us / 1000), 4),
  late_p99_ms: med(allFixed.map((f) => f.late_p99_us / 1000), 4),
  late_p999_ms: med(allFixed.map((f) => f.late_p999_us / 1000), 4),
  worst_late_p99_ms: round(Math.max(...allFixed.map((f) => f.late_p99_us / 1000)), 4),
  sends_over_1ms_late: round(allFixed.reduce((a, f) => a + f.late_sends, 0) / allFixed.reduce((a, f) => a + f.requests, 0), 4),
};

const result = {
  ...header('mesh', loadBefore),
  quick,
  duration_s: round((performance.now() - t0) / 1000, 1),
  params: { ...params, tools: { haproxy: haproxyVersion, nginx: run('nginx', ['-v']).stderr.trim(), loadgen: 'bench/mesh/loadgen.c' }, order },
  topology: {
    namespaces: 'node (ip_forward) with veth pairs to pod-client 198.18.1.2, pod-v1 198.18.2.2, pod-v2 198.18.3.2; routes for 198.18.0.0/15 only, through the node',
    servers: `two nginx 1.22 in each server pod, one process each, ${params.bodyBytes}-byte body, pinned to CPU ${params.serverCpu}: on port ${PORT.app} inside the pod's workload cgroup (the mesh arm's), on port ${PORT.plain} in a cgroup outside the mesh's (the direct and proxy arms'); the same configuration otherwise`,
    direct: `connections dial the servers directly (port ${PORT.plain}): 14 of 16 to v1, 2 to v2 (closed loop: all to v1)`,
    mesh: `connections dial the VIP ${ADDR.vip}:80, split ${params.split.v1}/${params.split.v2} per connection by the agent's programs (closed loop: the VIP of Service server-v1, ${ADDR.vipV1}:80); the load generator's sockets are in the client workload's cgroup; the agent runs (unpinned) only during this arm's runs and the latency phase`,
    haproxy: `HAProxy ${haproxyVersion.split(' ')[2]}: client-side proxy in pod-client on 127.0.0.1:${PORT.outbound} (CPU ${params.clientCpu}), mode http, roundrobin ${params.split.v1}/${params.split.v2} per request over the server-side proxies on <pod>:${PORT.inbound} (CPU ${params.serverCpu}), which forward to nginx on 127.0.0.1:${PORT.plain} (closed loop: a second frontend, 127.0.0.1:${PORT.outboundV1}, to v1 alone); nbthread 1, http-reuse always, keep-alive both ways; TLS arm: the same 100 ports higher, mutual TLS (ECDSA P-256, a throwaway CA) between the proxies, server name verified`,
    latency_phase: `after the repetitions, every arm up at once and one load generator loading all of them, ${params.rate} requests/s in all, each arm on its own ${params.connections} connections, the arms' requests interleaved one by one (in a de Bruijn order: every arm's request follows every pair of arms' equally often); ${params.latencyRuns} runs of ${params.latencyS} s; the direct and proxy arms' sockets in cgroups outside the mesh's`,
  },
  units:
    'latency: ms, from the write() of a request to the read() that completes its response, every request of the latency phase (all arms at once; sequential: the arm\'s own fixed-rate runs, medians over the repetitions); rps: closed-loop requests per second (against v1 alone); cpu_ms_per_1k: CPU ms added over the direct arm per 1,000 requests in the fixed-rate run (saturated_cpu_ms_per_1k: in the closed-loop run), see bench/README.md; rss_mb: MiB, VmRSS of the arm\'s own processes (the agent; the three proxies) at the end of the fixed-rate run; raw cpu_ms: CPU ms per process over the measured window (schedstat); raw system_ms: /proc/stat, tick-sampled, whole machine',
  arms: results,
  ratios,
  goals,
  secondary_ratios: secondary,
  noise,
  memory,
  distribution,
  latency_runs: latencyRuns,
  closed_loop_runs: closedRuns,
  raw,
};

const outDir = quick ? join(root, 'build/bench/mesh-quick') : join(root, 'bench/results');
mkdirSync(outDir, { recursive: true });
const write = (name, text) => {
  const f = join(outDir, name);
  writeFileSync(`${f}.tmp`, text);
  renameSync(`${f}.tmp`, f);
  return f;
};
const md = markdownTable(result);
write('mesh.json', JSON.stringify(result, null, 2) + '\n');
write('mesh.md', md);
write('mesh-latency.svg', latencySvg(result));
if (!quick) updateReadme(join(root, 'bench/README.md'), md);

console.log(md);
if (loadBefore > 0.5) console.log(`note: the 1-minute load was ${round(loadBefore, 2)} at the start: other work shared the machine; its tails are in these figures`);
console.log(`${quick ? 'quick run (non-default parameters): results in' : 'wrote'} ${outDir}/mesh.{json,md} and mesh-latency.svg in ${result.duration_s} s`);
