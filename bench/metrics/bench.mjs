// bench:metrics: wrk against nginx on loopback with the metrics programs attached, with no-op programs on the
// same hooks, and with neither, side by side in one run (the arms rotate), and the programs' in-kernel cost per
// request from BPF run-time stats, beside the same figure for the no-op programs (what the statistics charge any
// program) and for two yardsticks that only look up a socket's storage, then read or write it (what any
// per-connection state costs on these hooks). Both wrk and nginx are measured, so every connection is measured
// once for both sides at nginx's socket; the cost with only one end measured (its peer outside the mesh, as a
// peer on another node is) is reported beside it, for each end.
// Writes bench/results/metrics.json.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';

import { ObjectSpec } from '@mesh/bpf';
import { testprogFile, testprogs } from '@mesh/testkit/testprogs';
import { MetricsDatapath } from '@mesh/metrics';

import { bpfRunTime, buildC, cleanup, header, inCgroup, median, onCleanup, round, runCommand, scratchCgroup, taggedLatencies, writeResult } from '../lib.mjs';

// fixedRate: requests per second of the latency runs over all three arms (bench/mesh/loadgen.c, one process loading
// the three, their requests interleaved one by one), far below what one nginx serves here (~240,000/s), so a
// request seldom waits for another; latencyRuns runs of latencyS seconds.
const params = {
  host: '127.0.0.18', port: 18418, durationS: 5, connections: 16, reps: 6, kernelReps: 3, clientCpu: 0, serverCpu: 1,
  fixedRate: 20000, latencyRuns: 3, latencyS: 10,
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
function startNginx(cg, port, cpu = params.serverCpu) {
  const dir = mkdtempSync(join(tmpdir(), 'mesh-bench-nginx-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'nginx.conf'), `daemon off; master_process off; worker_processes 1; pid ${dir}/pid; error_log ${dir}/error.log;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path ${dir}/b; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f; uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s;
  keepalive_requests 1000000000; keepalive_timeout 600s;
  server { listen ${params.host}:${port}; location / { return 200 "${'x'.repeat(1024)}"; } } }
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
for (const arm of ARMS) await load(...armCg[arm]); // warm-up
for (let i = 0; i < params.reps; i++) {
  const order = [...ARMS];
  for (let k = 0; k < i % 3; k++) order.push(order.shift());
  for (const arm of order) raw[arm].push(await load(...armCg[arm]));
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
async function kernelCost(cg, port, progLinks, loadCg = cg) {
  const { result: run, programs } = await bpfRunTime(progLinks, () => load(loadCg, port));
  const perProgram = Object.fromEntries(Object.entries(programs).map(([name, { runs, ns }]) => [name, { runs, ns_per_run: runs ? round(ns / runs, 1) : 0 }]));
  const totalNs = Object.values(programs).reduce((a, x) => a + x.ns, 0);
  return { run, programs: perProgram, ns_per_request: round(totalNs / run.requests, 1) };
}
// Each figure is the median of kernelReps runs, taken in turn (one 5 s run moves by a tenth on this VM).
const kernelRuns = { cost: [], floor: [], oneCpu: [], serverOnly: [], clientOnly: [], stateRead: [], stateWrite: [] };
const medianRun = (runs) => [...runs].sort((a, b) => a.ns_per_request - b.ns_per_request)[Math.floor(runs.length / 2)];
// On loopback a packet is received on the CPU that sent it, so each connection's state is written on the client's
// CPU and on the server's in turn and its cache lines travel between them every half exchange. With client and
// server on one CPU nothing travels: the difference is what those transfers cost (from a NIC, a
// flow's packets are received on its application's CPU when receive flow steering (RFS) is on).
for (let i = 0; i < params.kernelReps; i++) {
  kernelRuns.cost.push(await kernelCost(meshCg, params.port + 1, links));
  kernelRuns.floor.push(await kernelCost(noopCg, params.port + 2, noopLinks));
  kernelRuns.oneCpu.push(await kernelCost(meshCg, params.port + 3, links));
  // One end measured: wrk outside the mesh against the measured nginx, then wrk in the mesh against nginx outside.
  kernelRuns.serverOnly.push(await kernelCost(meshCg, params.port + 1, links, plainCg));
  kernelRuns.clientOnly.push(await kernelCost(meshCg, params.port + 6, links));
  kernelRuns.stateRead.push(await kernelCost(stateCgs.read, params.port + 4, stateLinks.read));
  kernelRuns.stateWrite.push(await kernelCost(stateCgs.write, params.port + 5, stateLinks.write));
}
const cost = medianRun(kernelRuns.cost);
const floor = medianRun(kernelRuns.floor);
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
  ratios: {
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
console.log(`wrote ${file}`);
