// bench:mesh's measurement: CPU (schedstat per thread, /proc/stat), memory and BPF run time read around the
// load generator's measured window, the load generator itself, and the phase that loads every arm at once.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';

import { buildC, round, taggedLatencies } from '../lib.mjs';
import { arms, clientCgroup } from './arms.mjs';
import { ARMS, log, meshProgramsOn, NS, params, plainCgroups, podCommand, Proc, tmp } from './topology.mjs';

export const loadgen = buildC('mesh/loadgen.c', 'loadgen');
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));
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
  return { rss: round(kb('VmRSS') / 1024, 2), anon: round(kb('RssAnon') / 1024, 2), file: round(kb('RssFile') / 1024, 2), hwm: round(kb('VmHWM') / 1024, 2), bpf_mapped: round(bpfMappedKb(pid) / 1024, 2) };
}
/** kB of the RSS that are BPF maps mapped into the process (a ring buffer: its data pages mapped twice, so a
 *  record can wrap): kernel memory that the maps' bytes_memlock already counts. */
function bpfMappedKb(pid) {
  let kb = 0;
  let inMap = false;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ /.test(line);
    if (head) inMap = line.endsWith('anon_inode:bpf-map');
    else if (inMap && line.startsWith('Rss:')) kb += Number(/(\d+) kB/.exec(line)[1]);
  }
  return kb;
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
export function snapshot(procs, progs) {
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
export async function load(arm, targets, { rate, durationS, warmupS, latFile, cgroups, connections = params.connections, connectionPerRequest = false }, procs, progs = [], cg) {
  const argv = [loadgen, '-s', '-t', targets.join(','), '-c', String(connections), '-d', String(durationS), '-w', String(warmupS), '-r', String(rate), '-b', String(params.bodyBytes), '-H', 'server.default.svc'];
  if (latFile) argv.push('-o', latFile);
  if (connectionPerRequest) argv.push('-n');
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
    connectionPerRequest,
    window_ms: round(after.at - before.at, 1),
    cpu_ms: cpuMs,
    system_ms: { busy: round(after.stat.busy - before.stat.busy, 1), softirq: round(after.stat.softirq - before.stat.softirq, 1) },
    bpf,
    memory,
  };
}


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
export async function allArmsPhase({ serverProcs, latencies, latencyRuns, closedRuns, newConnRuns }) {
  const sessions = {};
  try {
    // The others first (each checks that nothing of the mesh is attached), then the mesh.
    for (const arm of [...ARMS.filter((x) => !arms[x].cgroup), ...ARMS.filter((x) => arms[x].cgroup)]) sessions[arm] = await arms[arm].start();
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
    for (const arm of ['mesh_mtls', 'mesh_mtls_local']) if (sessions[arm]) await sessions[arm].check({ requests: 0 });
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
    // One connection per request (as clients that do not keep connections alive): new connections per second,
    // a closed loop per arm in turn as above. HAProxy's client-side proxy keeps its connections to the far proxy;
    // each new connection of the mesh_mtls arm is a tunnelled connection of the data plane's.
    for (let round = 0; round < params.newConnRounds; round++) {
      for (const arm of ARMS.map((_, i) => ARMS[(i + round) % ARMS.length])) {
        const armProcs = { ...serverProcs(arms[arm].servers), ...sessions[arm].procs };
        const res = await load(arm, arms[arm].closedTargets(), { rate: 0, durationS: params.closedS, warmupS: params.closedWarmupS, connectionPerRequest: true }, armProcs, [], clientCgroup(arm));
        newConnRuns.push({ round, arm, rps: res.rps, connects: res.connects, p50_us: res.p50_us, p99_us: res.p99_us, requests: res.requests, cpu_ms: res.cpu_ms });
        if (arm === 'mesh_mtls' || arm === 'mesh_mtls_local') await sessions[arm].check(res);
      }
      const r = Object.fromEntries(newConnRuns.filter((x) => x.round === round).map((x) => [x.arm, x.rps]));
      log(`new-connection round ${round + 1}/${params.newConnRounds}: ${ARMS.map((a) => `${a} ${Math.round(r[a])} conn/s`).join(', ')}`);
    }
    // The proxies carried their arm's requests (each used CPU), as in their own runs.
    for (const [arm, s] of Object.entries(sessions)) if (s.check && !arms[arm].cgroup) await s.check({ cpu_ms: Object.fromEntries(Object.keys(s.procs).map((role) => [role, cpuMs[`${arm}.${role}`]])) });
  } finally {
    for (const s of Object.values(sessions)) await s.stop();
  }
}
/**
 * n symbols (0 … k − 1) in a cyclic order where every run of `order` symbols appears equally often: a de Bruijn
 * sequence B(k, order), repeated, for the largest order with k^order dividing n (1: plain round robin).
 */
export function balancedOrder(k, n) {
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
export const pctMs = (sorted, q) => round(sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] / 1e6, 4);
