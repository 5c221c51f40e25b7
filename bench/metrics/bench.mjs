// bench:metrics: wrk against nginx on loopback with the metrics programs attached, with no-op programs on the
// same hooks, and with neither, side by side in one run (the arms rotate), and the programs' in-kernel cost per
// request from BPF run-time stats, beside the same figure for the no-op programs (what the statistics charge any
// program) and for two yardsticks that only look up a socket's storage, then read or write it (what any
// per-connection state costs on these hooks). Both wrk and nginx are measured, so every connection is measured
// once for both sides at nginx's socket; the cost with only one end measured (its peer outside the mesh, as a
// peer on another node is) is reported beside it, for each end.
// An HTTP/2 arm beside it: h2load against nginx on an h2c listener (http2 without TLS), with the programs and the
// agent's consumer of their records (the ring buffer's drain thread, HPACK decoding, stream aggregation) against
// without: throughput, and the cost per request in the kernel and in user space, as a ratio to HTTP/1.1's.
// Writes bench/results/metrics.json (BENCH_METRICS_QUICK=1: only the kernel and user-space costs, one round, to
// build/bench/metrics-quick.json).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, release, tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { dirname, join } from 'node:path';

import { ObjectSpec } from '@mesh/bpf';
import { testprogFile, testprogs } from '@mesh/testkit/testprogs';
import { MetricsDatapath } from '@mesh/metrics';

import { bpfRunTime, buildC, cleanup, header, root, inCgroup, median, onCleanup, round, runCommand, scratchCgroup, taggedLatencies, writeResult } from '../lib.mjs';

// fixedRate: requests per second of the latency runs over all three arms (bench/mesh/loadgen.c, one process loading
// the three, their requests interleaved one by one), far below what one nginx serves here (~240,000/s), so a
// request seldom waits for another; latencyRuns runs of latencyS seconds.
// h2Streams: streams in flight per connection (h2load -m): 1, as wrk keeps one request in flight per connection,
// so that both protocols make the same exchanges, packet for packet.
const QUICK = process.env.BENCH_METRICS_QUICK === '1';
const params = {
  host: '127.0.0.18', port: 18418, durationS: 5, connections: 16, reps: QUICK ? 0 : 6, kernelReps: QUICK ? Number(process.env.BENCH_METRICS_QUICK_REPS ?? 1) : 3, clientCpu: 0, serverCpu: 1,
  fixedRate: 20000, latencyRuns: QUICK ? 0 : 3, latencyS: 10, h2Streams: 1,
};
const loadBefore = loadavg()[0];

const plainCg = scratchCgroup('plain');
const meshCg = scratchCgroup('mesh');
const noopCg = scratchCgroup('noop');
const dp = MetricsDatapath.load();
onCleanup(() => dp.close());
const links = dp.attach(meshCg);
const noop = ObjectSpec.file(testprogFile(testprogs.skb_noop.name)).load();
onCleanup(() => noop.close());
const noopLinks = noop.attachCgroup(noopCg);
// Yardsticks for per-connection state (bpf/testprogs/skb_sk_state.bpf.c): 8 bytes of socket storage looked up
// on every packet, only read in one cgroup, written in the other.
const stateCgs = { read: scratchCgroup('sread'), write: scratchCgroup('swrite') };
const stateLinks = Object.fromEntries(
  Object.entries(stateCgs).map(([mode, cg]) => {
    const obj = ObjectSpec.file(testprogFile(testprogs.skb_sk_state.name)).setConstant(testprogs.skb_sk_state.constants.write_state, mode === 'write').load();
    onCleanup(() => obj.close());
    return [mode, obj.attachCgroup(cg)];
  }),
);

// One nginx per arm, each inside its arm's cgroup, so the server side is measured (or not) too. Keep-alive
// connections are never closed by nginx (its default closes one every 1,000 requests), so the latency runs'
// connections stay in the cgroups they were made in.
function startNginx(cg, port, cpu = params.serverCpu, { http2 = false } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'mesh-bench-nginx-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'nginx.conf'), `daemon off; master_process off; worker_processes 1; pid ${dir}/pid; error_log ${dir}/error.log;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path ${dir}/b; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f; uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s;
  keepalive_requests 1000000000; keepalive_timeout 600s;
  server { listen ${params.host}:${port}${http2 ? ' http2' : ''}; location / { return 200 "${'x'.repeat(1024)}"; } } }
`);
  const [cmd, args] = inCgroup(cg, ['taskset', '-c', String(cpu), 'nginx', '-p', dir, '-c', join(dir, 'nginx.conf')]);
  const child = spawn(cmd, args, { stdio: 'ignore' });
  onCleanup(() => child.kill('SIGKILL'));
}
startNginx(plainCg, params.port);
startNginx(meshCg, params.port + 1);
startNginx(noopCg, params.port + 2);
startNginx(stateCgs.read, params.port + 4);
startNginx(stateCgs.write, params.port + 5);
// One more with the metrics programs, on the load generator's CPU: the programs' cost when both ends of every
// connection run on one CPU (see oneCpu below).
startNginx(meshCg, params.port + 3, params.clientCpu);
// One outside the mesh, for the cost of measuring the client's end alone (wrk in the mesh, nginx not).
startNginx(plainCg, params.port + 6);
// HTTP/2 (h2c with prior knowledge, as the h2 tests configure nginx): the same body, with and without the mesh.
// keepalive_requests bounds HTTP/2 connections' streams too (nginx ≥ 1.19.7): never reached here.
const H2_PORT = { with: params.port + 7, without: params.port + 8 };
startNginx(meshCg, H2_PORT.with, params.serverCpu, { http2: true });
startNginx(plainCg, H2_PORT.without, params.serverCpu, { http2: true });
// The agent's consumer of the HTTP/2 records, in this process: its drain thread and the decoding on this event
// loop, which is otherwise idle while a load runs (see h2UserCost).
dp.consumeH2();
await sleep(500);

// wrk, one thread (C, epoll): its latency percentiles resolve 10 µs at this scale. hey's summary (used before)
// steps by 0.1 ms, a tenth of the p99 being compared.
const UNIT_MS = { us: 1e-3, ms: 1, s: 1000 };
async function load(cg, port) {
  const url = `http://${params.host}:${port}/`;
  const [cmd, args] = inCgroup(cg, ['taskset', '-c', String(params.clientCpu), 'wrk', '-t1', `-c${params.connections}`, `-d${params.durationS}s`, '--latency', url]);
  const r = await runCommand(cmd, args, { timeoutMs: (params.durationS + 30) * 1000 });
  if (r.status !== 0) throw new Error(`wrk failed: ${r.stderr}`);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(r.stdout)?.[1]);
  const p99 = /^\s*99%\s+([\d.]+)(us|ms|s)\s*$/m.exec(r.stdout);
  const total = Number(/(\d+) requests in/.exec(r.stdout)?.[1]);
  if (!rps || !p99 || !total) throw new Error(`unexpected wrk output:\n${r.stdout}`);
  if (/Non-2xx|Socket errors/.test(r.stdout)) throw new Error(`wrk saw failed requests:\n${r.stdout}`);
  return { rps, p99_ms: round(Number(p99[1]) * UNIT_MS[p99[2]], 4), requests: total };
}

// h2load, one thread, closed loop like wrk: params.connections connections, params.h2Streams streams in flight each.
async function loadH2(cg, port) {
  const url = `http://${params.host}:${port}/`;
  const [cmd, args] = inCgroup(cg, ['taskset', '-c', String(params.clientCpu), 'h2load', '-t1', `-c${params.connections}`, `-m${params.h2Streams}`, `-D${params.durationS}`, url]);
  const r = await runCommand(cmd, args, { timeoutMs: (params.durationS + 30) * 1000 });
  if (r.status !== 0) throw new Error(`h2load failed: ${r.stderr}${r.stdout}`);
  const rps = Number(/finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(r.stdout)?.[1]);
  const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(r.stdout);
  const codes = /status codes: (\d+) 2xx/.exec(r.stdout);
  if (!rps || !m || !codes) throw new Error(`unexpected h2load output:\n${r.stdout}`);
  const done = Number(m[3]);
  if (Number(m[5]) || Number(m[6]) || Number(m[7]) || Number(codes[1]) < done) throw new Error(`h2load saw failed requests:\n${r.stdout}`);
  // With -D, streams still in flight at the end are started but not done (their 2xx may be counted already).
  return { rps, requests: done, started: Number(m[2]) };
}

// Latency at a fixed rate: what the programs add to a request's time. Closed-loop latency is not that: with 16
// requests always in flight, a request's time is mostly waiting for the others (Little's law), so the closed loop's
// p99 ratio is about the inverse of its throughput ratio whatever the programs add to each request. One load
// generator loads the three arms at once, 16 connections each, their sockets in the arms' cgroups (loadgen -g), the
// requests of the arms interleaved one by one: whatever the machine does meanwhile touches every arm alike (with
// one arm after the other, a run's p99 moved by a tenth and the arms' ratio by ±0.03 between runs).
const loadgen = buildC('mesh/loadgen.c', 'loadgen');
const latDir = mkdtempSync(join(tmpdir(), 'mesh-bench-lat-'));
onCleanup(() => rmSync(latDir, { recursive: true, force: true }));
const ARMS = ['without', 'with', 'noop'];
const armCg = { without: [plainCg, params.port], with: [meshCg, params.port + 1], noop: [noopCg, params.port + 2] };
async function fixedRate() {
  const file = join(latDir, 'lat');
  const argv = [
    'taskset', '-c', String(params.clientCpu), loadgen,
    '-t', ARMS.map((a) => `${params.host}:${armCg[a][1]}`).join(','), '-g', ARMS.map((a) => armCg[a][0]).join(','),
    '-c', String(params.connections * ARMS.length), '-r', String(params.fixedRate),
    '-d', String(params.latencyS), '-w', '1', '-b', '1024', '-o', file, '-T',
  ];
  const r = await runCommand(argv[0], argv.slice(1), { timeoutMs: (params.latencyS + 30) * 1000 });
  const summary = r.stdout.split('\n').find((l) => l.startsWith('{'));
  if (r.status !== 0 || !summary) throw new Error(`loadgen failed (${r.status ?? r.signal}): ${r.stderr}${r.stdout}`);
  const j = JSON.parse(summary);
  if (j.reconnects) throw new Error(`loadgen reconnected ${j.reconnects} times: a new socket may be in another arm's cgroup`);
  const samples = taggedLatencies(file, ARMS);
  return { summary: { rps: j.rps, late_p99_ms: round(j.late_p99_us / 1000, 4) }, samples };
}
const pct = (sorted, q) => round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] / 1e6, 4);

// A third arm, no-op programs on the same hooks: how much of the difference is the kernel running cgroup
// programs at all (the hooks' own cost) and how much is the metrics programs' work. The closed loops (wrk:
// throughput) take turns, the order rotated each round; then the fixed-rate runs load the three at once.
const raw = { without: [], with: [], noop: [] };
const rawH2 = { with: [], without: [] };
for (const arm of ARMS) await load(...armCg[arm]); // warm-up
for (const arm of ['with', 'without']) await loadH2(arm === 'with' ? meshCg : plainCg, H2_PORT[arm]);
for (let i = 0; i < params.reps; i++) {
  const order = [...ARMS];
  for (let k = 0; k < i % 3; k++) order.push(order.shift());
  for (const arm of order) raw[arm].push(await load(...armCg[arm]));
  // HTTP/2, with and without, in turn (the order alternating).
  for (const arm of i % 2 ? ['without', 'with'] : ['with', 'without']) rawH2[arm].push(await loadH2(arm === 'with' ? meshCg : plainCg, H2_PORT[arm]));
}
const fixed = { runs: [], samples: Object.fromEntries(ARMS.map((a) => [a, []])) };
for (let i = 0; i < params.latencyRuns; i++) {
  const run = await fixedRate();
  const perArm = {};
  for (const arm of ARMS) {
    const sorted = Float64Array.from(run.samples[arm]).sort();
    perArm[arm] = { requests: sorted.length, p50_ms: pct(sorted, 0.5), p99_ms: pct(sorted, 0.99) };
    fixed.samples[arm].push(...run.samples[arm]);
  }
  fixed.runs.push({ ...run.summary, arms: perArm });
}

// In-kernel cost: the programs' run time over one measured run, per request; the metrics programs, then the
// no-op ones (the floor: what the statistics charge a run that does no work).
async function kernelCost(cg, port, progLinks, loadCg = cg, loader = load) {
  const cpu0 = process.cpuUsage();
  const { result: run, programs } = await bpfRunTime(progLinks, () => loader(loadCg, port));
  // This process's CPU over the run (every thread): for HTTP/2 the consumer's, see h2UserCost.
  const cpu = process.cpuUsage(cpu0);
  const perProgram = Object.fromEntries(Object.entries(programs).map(([name, { runs, ns }]) => [name, { runs, ns_per_run: runs ? round(ns / runs, 1) : 0 }]));
  const totalNs = Object.values(programs).reduce((a, x) => a + x.ns, 0);
  return { run, programs: perProgram, ns_per_request: round(totalNs / run.requests, 1), cpu_us: { user: cpu.user, system: cpu.system } };
}

// HTTP/2: the programs' run time as for HTTP/1.1, and the user-space work of the agent's consumer: the drain
// thread and the decoding on this process's event loop, which does nothing else while h2load runs. The records
// still queued when h2load ends are decoded (readH2) inside the measured interval. The same process's CPU over
// an HTTP/1.1 run of the same length (cost.cpu_us: spawning the load, reading its output) is subtracted.
async function h2Cost() {
  const before = dp.readH2();
  const streams0 = countH2(before.http);
  const cpu0 = process.cpuUsage();
  const k = await kernelCost(meshCg, H2_PORT.with, links, meshCg, loadH2);
  let after = dp.readH2();
  for (let i = 0; i < 20 && countH2(after.http) - streams0 < k.run.requests; i++) {
    await sleep(50);
    after = dp.readH2();
  }
  const cpu = process.cpuUsage(cpu0);
  return { ...k, cpu_us: { user: cpu.user, system: cpu.system }, streams_counted_server_side: countH2(after.http) - streams0, counters: after.counters };
}
// Streams answered 200 as the server's socket counted them (both ends measured there).
const countH2 = (http) => http.filter((s) => s.port === H2_PORT.with && s.direction === 'server' && s.status === 200 && !s.errorType).reduce((a, s) => a + s.count, 0);
// Each figure is the median of kernelReps runs, taken in turn (one 5 s run moves by a tenth on this VM).
const kernelRuns = { cost: [], floor: [], h2: [], oneCpu: [], serverOnly: [], clientOnly: [], stateRead: [], stateWrite: [] };
const medianRun = (runs) => [...runs].sort((a, b) => a.ns_per_request - b.ns_per_request)[Math.floor(runs.length / 2)];
// On loopback a packet is received on the CPU that sent it, so each connection's state is written on the client's
// CPU and on the server's in turn and its cache lines travel between them every half exchange. With client and
// server on one CPU nothing travels: the difference is what those transfers cost (from a NIC, a
// flow's packets are received on its application's CPU when receive flow steering (RFS) is on).
// BENCH_METRICS_BASELINE=<http.bpf.o of another build> (quick mode): its cost per request too, in the same rounds,
// against its own nginx, to compare two builds under the same load; for HTTP/2 its programs' run time (its records
// drained by a consumer of its own in this process, so the user-space figure is this build's only roughly).
let baseline;
if (QUICK && process.env.BENCH_METRICS_BASELINE) {
  const cg = scratchCgroup('base');
  const obj = ObjectSpec.file(process.env.BENCH_METRICS_BASELINE).setConstant('cell_epoch', 7).load();
  const base = new MetricsDatapath(obj);
  onCleanup(() => base.close());
  baseline = { cg, links: base.attach(cg), runs: [], h2Runs: [] };
  startNginx(cg, params.port + 9);
  startNginx(cg, params.port + 10, params.serverCpu, { http2: true });
  base.consumeH2();
  await sleep(300);
}
for (let i = 0; i < params.kernelReps; i++) {
  if (baseline) baseline.runs.push(await kernelCost(baseline.cg, params.port + 9, baseline.links));
  kernelRuns.cost.push(await kernelCost(meshCg, params.port + 1, links));
  if (baseline) baseline.runs.push(await kernelCost(baseline.cg, params.port + 9, baseline.links));
  kernelRuns.floor.push(await kernelCost(noopCg, params.port + 2, noopLinks));
  if (baseline) baseline.h2Runs.push(await kernelCost(baseline.cg, params.port + 10, baseline.links, baseline.cg, loadH2));
  kernelRuns.h2.push(await h2Cost());
  if (baseline) baseline.h2Runs.push(await kernelCost(baseline.cg, params.port + 10, baseline.links, baseline.cg, loadH2));
  if (QUICK) continue;
  kernelRuns.oneCpu.push(await kernelCost(meshCg, params.port + 3, links));
  // One end measured: wrk outside the mesh against the measured nginx, then wrk in the mesh against nginx outside.
  kernelRuns.serverOnly.push(await kernelCost(meshCg, params.port + 1, links, plainCg));
  kernelRuns.clientOnly.push(await kernelCost(meshCg, params.port + 6, links));
  kernelRuns.stateRead.push(await kernelCost(stateCgs.read, params.port + 4, stateLinks.read));
  kernelRuns.stateWrite.push(await kernelCost(stateCgs.write, params.port + 5, stateLinks.write));
}
const cost = medianRun(kernelRuns.cost);
const floor = medianRun(kernelRuns.floor);
// HTTP/2 per request: the programs' run time plus the consumer's CPU above the same round's HTTP/1.1 run.
const h2Runs = kernelRuns.h2.map((r, i) => {
  const base = kernelRuns.cost[i].cpu_us;
  const userNs = Math.max(0, (r.cpu_us.user + r.cpu_us.system - base.user - base.system) * 1000);
  const user = round(userNs / r.run.requests, 1);
  return { ...r, user_ns_per_request: user, total_ns_per_request: round(r.ns_per_request + user, 1) };
});
const h2 = [...h2Runs].sort((a, b) => a.total_ns_per_request - b.total_ns_per_request)[Math.floor(h2Runs.length / 2)];
const h2Figures = {
  kernel: { ...h2.run, programs: h2.programs, ns_per_request: h2.ns_per_request },
  // The consumer's CPU per request (drain thread, HPACK decoding, streams), and the process's CPU it is read from.
  user_space: { ns_per_request: h2.user_ns_per_request, cpu_us: h2.cpu_us, baseline_cpu_us: kernelRuns.cost[h2Runs.indexOf(h2)].cpu_us },
  ns_per_request: h2.total_ns_per_request,
  streams_counted_server_side: h2.streams_counted_server_side,
  counters: h2.counters,
  runs: h2Runs.map((r) => ({ kernel: r.ns_per_request, user: r.user_ns_per_request, total: r.total_ns_per_request })),
};
const costRatios = {
  cost_vs_floor: round(cost.ns_per_request / floor.ns_per_request),
  h2_cost_vs_h1: round(h2.total_ns_per_request / cost.ns_per_request),
  h2_kernel_vs_h1: round(h2.ns_per_request / cost.ns_per_request),
};
if (QUICK) {
  const out = join(root, 'build/bench/metrics-quick.json');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ ...header('metrics-quick', loadBefore), params, ns_per_request: cost.ns_per_request, programs: cost.programs, floor: { ns_per_request: floor.ns_per_request, programs: floor.programs }, h2: h2Figures, ratios: costRatios }, null, 2) + '\n');
  cleanup();
  if (baseline) console.log(`baseline ${process.env.BENCH_METRICS_BASELINE}: ${baseline.runs.map((r) => r.ns_per_request).join(', ')} ns per request (${baseline.runs.map((r) => Object.values(r.programs).map((p) => p.ns_per_run).join('/')).join(', ')})`);
  if (baseline) console.log(`baseline HTTP/2: ${baseline.h2Runs.map((r) => r.ns_per_request).join(', ')} ns per request in the kernel (${baseline.h2Runs.map((r) => Object.values(r.programs).map((p) => `${p.ns_per_run}×${round(p.runs / r.run.requests, 2)}`).join('/')).join(', ')}); this build's: ${kernelRuns.h2.map((r) => r.ns_per_request).join(', ')} (${kernelRuns.h2.map((r) => Object.values(r.programs).map((p) => `${p.ns_per_run}×${round(p.runs / r.run.requests, 2)}`).join('/')).join(', ')})`);
  console.log(`runs: ${kernelRuns.cost.map((r) => r.ns_per_request).join(", ")} (${kernelRuns.cost.map((r) => Object.values(r.programs).map((p) => p.ns_per_run).join("/")).join(", ")}); floor ${kernelRuns.floor.map((r) => r.ns_per_request).join(", ")}`);
  console.log(`HTTP/1.1 ${cost.ns_per_request} ns per request, floor ${floor.ns_per_request}: cost_vs_floor ×${costRatios.cost_vs_floor}`);
  for (const [name, p] of Object.entries(cost.programs)) console.log(`  ${name}: ${p.ns_per_run} ns per run, ${round(p.runs / cost.run.requests, 2)} runs per request`);
  console.log(`HTTP/2 ${h2.ns_per_request} ns in the kernel + ${h2.user_ns_per_request} in user space per request: ×${costRatios.h2_cost_vs_h1} HTTP/1.1's (kernel alone ×${costRatios.h2_kernel_vs_h1}); ${h2.streams_counted_server_side} of ${h2.run.requests} streams counted`);
  console.log(`wrote ${out}`);
  process.exit(0);
}
const oneCpu = medianRun(kernelRuns.oneCpu);
const serverOnly = medianRun(kernelRuns.serverOnly);
const clientOnly = medianRun(kernelRuns.clientOnly);
const stateRead = medianRun(kernelRuns.stateRead);
const stateWrite = medianRun(kernelRuns.stateWrite);
const counted = dp.read().http.filter((s) => s.port === params.port + 1 && s.direction === 'server').reduce((a, s) => a + s.count, 0);

const med = (arm, k) => median(raw[arm].map((r) => r[k]));
const medians = Object.fromEntries(Object.keys(raw).map((arm) => [arm, { rps: round(med(arm, 'rps'), 1), p99_ms: round(med(arm, 'p99_ms'), 3) }]));
// The fixed rate's percentiles over every request of an arm in all runs.
const fixedPooled = Object.fromEntries(
  ARMS.map((arm) => {
    const sorted = Float64Array.from(fixed.samples[arm]).sort();
    return [arm, { p50_ms: pct(sorted, 0.5), p90_ms: pct(sorted, 0.9), p99_ms: pct(sorted, 0.99), p999_ms: pct(sorted, 0.999), requests: sorted.length }];
  }),
);
const result = {
  ...header('metrics', loadBefore),
  // header()'s `kernel` (the release) is taken below by the kernel cost: the release is here.
  kernel_release: release(),
  params,
  units: 'rps: requests per second (wrk, closed loop); p99_ms: 99th percentile latency in ms; ns_per_request: BPF run time of all metrics programs (client and server side sockets, both ends measured: each connection measured once at the server socket for both sides) per request; one_end: the same with only the server or only the client in the mesh; floor: the same for no-op programs on the same hooks; socket_state_read/socket_state_write: the same for programs that look up 8 bytes of socket storage per packet and read or write them',
  raw,
  medians,
  // Latency at params.fixedRate requests per second, the three arms loaded at once by one loadgen (a third each):
  // each run's percentiles per arm, and the percentiles over all of an arm's requests.
  fixed_rate: { runs: fixed.runs, pooled: fixedPooled },
  kernel: { ...cost.run, programs: cost.programs, requests_counted_server_side: counted, connections_paired: dp.readCounters().paired },
  ns_per_request: cost.ns_per_request,
  // Every kernel-cost run's figure (the ones above are each series' median run).
  kernel_runs_ns_per_request: Object.fromEntries(Object.entries(kernelRuns).map(([k, runs]) => [k, runs.map((r) => r.ns_per_request)])),
  // Programs that return at once, on the same cgroup_skb hooks, same load: what BPF stats charge per request
  // before any work (one run per packet, client and server side).
  floor: { programs: floor.programs, ns_per_request: floor.ns_per_request, rps: floor.run.rps },
  ns_per_request_above_floor: round(cost.ns_per_request - floor.ns_per_request, 1),
  // The same programs and load with wrk and nginx on one CPU: no per-connection state moves between CPUs.
  one_cpu: { programs: oneCpu.programs, ns_per_request: oneCpu.ns_per_request, rps: oneCpu.run.rps },
  // One end measured (its peer outside the mesh, as a peer on another node is): that end's own work per request.
  one_end: {
    server: { programs: serverOnly.programs, ns_per_request: serverOnly.ns_per_request, rps: serverOnly.run.rps },
    client: { programs: clientOnly.programs, ns_per_request: clientOnly.ns_per_request, rps: clientOnly.run.rps },
  },
  // The yardsticks, client and server on their two CPUs as for ns_per_request: every packet looks up its
  // socket's 8-byte storage and only reads it (the line stays shared), or adds to it (the line moves to the
  // CPU handling the packet: on loopback the client's and the server's CPU in turn, every half exchange). No
  // design that writes per-connection state on these hooks costs less here than socket_state_write.
  socket_state_read: { programs: stateRead.programs, ns_per_request: stateRead.ns_per_request, rps: stateRead.run.rps },
  socket_state_write: { programs: stateWrite.programs, ns_per_request: stateWrite.ns_per_request, rps: stateWrite.run.rps },
  // HTTP/2 (h2load against nginx h2c, params.h2Streams streams in flight per connection): throughput with the
  // programs and the consumer against without, and the cost per request in the kernel and in user space.
  h2: {
    medians: { with: { rps: round(median(rawH2.with.map((r) => r.rps)), 1) }, without: { rps: round(median(rawH2.without.map((r) => r.rps)), 1) } },
    raw: rawH2,
    ...h2Figures,
    ratios: {
      // HTTP/2's cost per request (kernel and user space) ÷ HTTP/1.1's (kernel: HTTP/1.1 has no per-request user-space work).
      cost_vs_h1: costRatios.h2_cost_vs_h1,
      kernel_vs_h1: costRatios.h2_kernel_vs_h1,
      throughput: round(median(rawH2.with.map((r) => r.rps)) / median(rawH2.without.map((r) => r.rps))),
    },
  },
  ratios: {
    // HTTP/1.1's ns_per_request ÷ the no-op programs' on the same hooks, same run (absolute figures differ 2–3×
    // between machines of one kind; this does not).
    cost_vs_floor: costRatios.cost_vs_floor,
    throughput: round(medians.with.rps / medians.without.rps),
    // At the fixed rate: what the programs add to a request's p99.
    p99: round(fixedPooled.with.p99_ms / fixedPooled.without.p99_ms),
    // Closed loop (wrk), for reference: about 1 / throughput (see fixedRate above).
    p99_closed_loop: round(medians.with.p99_ms / medians.without.p99_ms),
  },
  // The same throughput ratio split at the no-op arm: the hooks' own cost, then the programs' work.
  throughput_split: {
    noop_vs_without: round(medians.noop.rps / medians.without.rps),
    with_vs_noop: round(medians.with.rps / medians.noop.rps),
  },
};
const file = writeResult('metrics', result);
cleanup();
console.log(`wrk -t1 -c${params.connections} -d${params.durationS}s against nginx, median of ${params.reps}`);
console.log(`  without: ${medians.without.rps} rps, p99 ${medians.without.p99_ms} ms`);
console.log(`  with:    ${medians.with.rps} rps, p99 ${medians.with.p99_ms} ms`);
console.log(`  no-op:   ${medians.noop.rps} rps, p99 ${medians.noop.p99_ms} ms (no-op ÷ without ×${result.throughput_split.noop_vs_without}, with ÷ no-op ×${result.throughput_split.with_vs_noop})`);
console.log(`loadgen at ${params.fixedRate} requests/s, the arms interleaved: p50 / p99 without ${fixedPooled.without.p50_ms} / ${fixedPooled.without.p99_ms} ms, with ${fixedPooled.with.p50_ms} / ${fixedPooled.with.p99_ms} ms, no-op ${fixedPooled.noop.p50_ms} / ${fixedPooled.noop.p99_ms} ms`);
console.log(`  throughput ×${result.ratios.throughput}, p99 at the fixed rate ×${result.ratios.p99} (closed loop ×${result.ratios.p99_closed_loop}), ${result.ns_per_request} ns per request in the kernel`);
console.log(`  no-op programs on the same hooks: ${result.floor.ns_per_request} ns per request (${result.ns_per_request_above_floor} ns above that)`);
console.log(`  client and server on one CPU: ${result.one_cpu.ns_per_request} ns per request (no connection state moves between CPUs)`);
console.log(`  one end measured: the server ${result.one_end.server.ns_per_request} ns per request, the client ${result.one_end.client.ns_per_request}`);
console.log(`  socket storage looked up and read per packet: ${result.socket_state_read.ns_per_request} ns per request; written: ${result.socket_state_write.ns_per_request}`);
console.log(`  ×${result.ratios.cost_vs_floor} the no-op floor`);
console.log(`HTTP/2 (h2load -c${params.connections} -m${params.h2Streams}): with ${result.h2.medians.with.rps} rps, without ${result.h2.medians.without.rps} (×${result.h2.ratios.throughput}); ${h2.ns_per_request} ns per request in the kernel + ${h2.user_ns_per_request} in user space: ×${result.h2.ratios.cost_vs_h1} HTTP/1.1's`);
console.log(`wrote ${file}`);
