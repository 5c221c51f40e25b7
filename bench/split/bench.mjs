// bench:split: the cost of connect()+close() on loopback with the split programs attached vs without, at 10
// and at 10,000 services, side by side in one run (arms interleaved per repetition); and how long applying a
// 10,000-service / 100,000-endpoint snapshot and a one-weight change takes. Writes bench/results/split.json.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { loadavg } from 'node:os';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { Compiler, SplitDatapath, syntheticSnapshot, Validator } from '@mesh/split';

import { bpfRunTime, buildC, cleanup, header, inCgroup, median, onCleanup, round, scratchCgroup, writeResult } from '../lib.mjs';

// The diallers and the server share one CPU, so a block's time is the CPU cost of both ends of its connections.
// (With the server on another CPU, the dialler's time also depends on how the two CPUs' work on the listening
// socket interleaves: blocks varied ±10 % and the arms' difference came out 1.02–1.08 from run to run.) One
// dialler per arm stays up for the whole run and the two take turns in short blocks (ABBA), so drift hits both
// arms alike. A block of 2,000 connections takes ~30 ms.
const params = { connections: 2_000, reps: 151, serverHost: '127.0.0.9', vip: '127.0.0.200', vipPort: 80, cpu: 0, applyReps: 3, weightChanges: 7 };
const loadBefore = loadavg()[0];
const connloop = buildC('split/connloop.c', 'connloop');

function parseBlock(line, host, port) {
  const out = JSON.parse(line);
  if (out.failed) throw new Error(`${out.failed} of ${out.n} connects to ${host}:${port} failed`);
  return out.ns_per_conn;
}

/** [command, args] of a connloop dialler in cgroup `cg`: a block of `params.connections` connections per input line. */
function dialCommand(cg, host, port) {
  return inCgroup(cg, ['taskset', '-c', String(params.cpu), connloop, 'dial', host, String(port), String(params.connections)]);
}

/** A dialler kept running in a cgroup: each block() makes `params.connections` connections and returns ns per connection. */
function dialler(cg, host, port) {
  const [cmd, args] = dialCommand(cg, host, port);
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  onCleanup(() => child.kill('SIGKILL'));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  return {
    async block() {
      child.stdin.write('\n');
      const { value, done } = await lines.next();
      if (done) throw new Error(`connloop dial ${host}:${port} exited`);
      return parseBlock(value, host, port);
    },
    /** Ends its input and waits for it to exit. */
    async close() {
      const exited = child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : once(child, 'exit');
      child.stdin.end();
      await exited;
    },
  };
}

/** One block in a process of its own (for the BPF run-time count, which wants a synchronous call). */
function dialOnce(cg, host, port) {
  const [cmd, args] = dialCommand(cg, host, port);
  const r = spawnSync(cmd, args, { input: '\n', encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`connloop dial failed: ${r.stderr}`);
  return parseBlock(r.stdout.trim(), host, port);
}

const server = spawn('taskset', ['-c', String(params.cpu), connloop, 'serve', params.serverHost], { stdio: ['ignore', 'pipe', 'inherit'] });
onCleanup(() => server.kill('SIGKILL'));
const [portLine] = await once(server.stdout, 'data');
const serverPort = Number(String(portLine).trim());

const plainCg = scratchCgroup('plain');
const meshCg = scratchCgroup('mesh');
const dp = SplitDatapath.load({ maxServices: 16_384, maxEndpoints: 262_144 });
onCleanup(() => dp.close());
const links = dp.attach(meshCg);

/** The benched service plus synthetic ones up to `total` services. */
function snapshotWith(total) {
  const s = syntheticSnapshot(Math.floor((total - 1) / 3), 10);
  s.services.push({ kind: 'Service', metadata: { name: 'bench' }, spec: { clusterIP: params.vip, ports: [{ port: params.vipPort }] } });
  s.endpointSlices.push({
    kind: 'EndpointSlice',
    metadata: { name: 'bench-1', labels: { 'kubernetes.io/service-name': 'bench' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: [params.serverHost] }],
    ports: [{ port: serverPort }],
  });
  return s;
}

const raw = {};
const scenarios = { 10: snapshotWith(10), 10000: snapshotWith(10_000) };
for (const [n, snap] of Object.entries(scenarios)) {
  const res = dp.apply(snap);
  if (res.services !== Number(n)) throw new Error(`expected ${n} services, the table has ${res.services}`);
  const arms = { without: dialler(plainCg, params.serverHost, serverPort), with: dialler(meshCg, params.vip, params.vipPort) };
  await arms.without.block(); // warm-up
  await arms.with.block();
  raw[n] = { without: [], with: [] };
  // ABBA order: whichever arm runs second in a pair does not always run second.
  for (let i = 0; i < params.reps; i++) {
    const order = i % 2 ? ['with', 'without'] : ['without', 'with'];
    for (const arm of order) raw[n][arm].push(await arms[arm].block());
  }
  await Promise.all([arms.without.close(), arms.with.close()]);
}

// In-kernel cost, from BPF run-time stats: the split programs' run time per connection (a low-noise figure;
// the wall-clock arms above also carry the kernel's own variance).
async function programCost() {
  const { programs } = await bpfRunTime(links, () => dialOnce(meshCg, params.vip, params.vipPort));
  const out = {};
  for (const [name, { runs, ns }] of Object.entries(programs)) if (runs > 0) out[name] = { runs, ns_per_run: round(ns / runs, 1) };
  const total = Object.values(out).reduce((a, x) => a + x.ns_per_run * x.runs, 0) / params.connections;
  return { programs: out, ns_per_connection: round(total, 1) };
}
const bpfCost = {};
for (const [n, snap] of Object.entries(scenarios)) {
  dp.apply(snap);
  bpfCost[n] = await programCost();
}

// Applying: a fresh table with the 10,000-service / 100,000-endpoint snapshot, then one weight change at a time.
// The snapshots go through a Validator and a Compiler, as the agent's do: a changed route is a new object (objects are values),
// so only the Service it splits is compiled again and the table diff passes over the others. For reference, the
// same change compiled from scratch (compile(): what every apply cost before).
const applyReps = [];
for (let rep = 0; rep < params.applyReps; rep++) {
  dp.apply({ services: [], endpointSlices: [], httpRoutes: [] });
  const validator = new Validator();
  const compiler = new Compiler();
  let snap = syntheticSnapshot(3_334, 15);
  let t = performance.now();
  const full = dp.applyCompiled(compiler.compile(validator.validate(snap)));
  const fullMs = performance.now() - t;
  const one = [];
  for (let k = 0; k < params.weightChanges; k++) {
    const i = 42 + 97 * k;
    const route = structuredClone(snap.httpRoutes[i]);
    route.spec.rules[0].backendRefs[1].weight = 11 + k + rep;
    snap = { ...snap, httpRoutes: snap.httpRoutes.with(i, route) };
    t = performance.now();
    const r = dp.applyCompiled(compiler.compile(validator.validate(snap)));
    one.push({ ms: performance.now() - t, stats: r.stats });
  }
  const route = structuredClone(snap.httpRoutes[7]);
  route.spec.rules[0].backendRefs[1].weight = 33;
  snap = { ...snap, httpRoutes: snap.httpRoutes.with(7, route) };
  t = performance.now();
  const scratch = dp.apply(snap);
  const scratchMs = performance.now() - t;
  applyReps.push({ full_ms: round(fullMs, 1), full_stats: full.stats, one_weight_ms: one.map((o) => round(o.ms, 2)), one_weight_stats: one[0].stats, one_weight_from_scratch_ms: round(scratchMs, 1), from_scratch_stats: scratch.stats });
}
const big = syntheticSnapshot(3_334, 15);
const applyFullMs = median(applyReps.map((r) => r.full_ms));
const applyOneMs = median(applyReps.flatMap((r) => r.one_weight_ms));

const medians = Object.fromEntries(Object.entries(raw).map(([n, r]) => [n, { without_ns: round(median(r.without), 1), with_ns: round(median(r.with), 1) }]));
const result = {
  ...header('split', loadBefore),
  params,
  units: 'ns per connect()+close() of one TCP connection on loopback, measured by a C client (bench/split/connloop.c)',
  raw,
  medians,
  apply: {
    services: big.services.length,
    endpoints: big.endpointSlices.reduce((a, s) => a + s.endpoints.length, 0),
    full_ms: round(applyFullMs, 1),
    full_stats: applyReps[0].full_stats,
    one_weight_ms: round(applyOneMs, 2),
    one_weight_stats: applyReps[0].one_weight_stats,
    one_weight_from_scratch_ms: round(median(applyReps.map((r) => r.one_weight_from_scratch_ms)), 1),
    definitions: {
      full_ms: `validate + compile (a fresh Compiler) + map writes of the whole snapshot into an empty table; median of ${params.applyReps} reps`,
      one_weight_ms: `one route's weight changed (the route a new object), through the same Compiler: compile what changed + table diff + one map write; median of ${params.applyReps} x ${params.weightChanges} changes`,
      one_weight_from_scratch_ms: 'the same kind of change compiled from scratch with compile() (what every apply cost before the Compiler)',
    },
    reps: applyReps,
  },
  bpf_cost: bpfCost,
  // The same comparison pair by pair (each with-arm run against the without-arm run next to it): a check on
  // the ratio of medians below, which is the figure of record.
  paired_ratio_medians: Object.fromEntries(Object.entries(raw).map(([n, r]) => [n, round(median(r.with.map((w, i) => w / r.without[i])))])),
  ratios: {
    connect_cost_10: round(medians[10].with_ns / medians[10].without_ns),
    connect_cost_10000: round(medians[10000].with_ns / medians[10000].without_ns),
    one_weight_vs_full_apply: round(applyOneMs / applyFullMs),
  },
  goals: { one_weight_vs_full_apply: '≤ 0.1', met: applyOneMs / applyFullMs <= 0.1 },
};
const file = writeResult('split', result);
cleanup();

console.log(`connect()+close() on loopback, median of ${params.reps} × ${params.connections} connections`);
for (const [n, m] of Object.entries(medians)) {
  console.log(`  ${n.padStart(6)} services: without ${m.without_ns} ns, with split ${m.with_ns} ns  → ×${result.ratios[`connect_cost_${n}`]}`);
}
for (const [n, c] of Object.entries(bpfCost)) console.log(`  ${n.padStart(6)} services: split programs run ${c.ns_per_connection} ns per connection in the kernel`);
console.log(`apply ${result.apply.services} services / ${result.apply.endpoints} endpoints: ${result.apply.full_ms} ms; one weight change: ${result.apply.one_weight_ms} ms (${JSON.stringify(result.apply.one_weight_stats)}), ×${result.ratios.one_weight_vs_full_apply} of the full apply (goal ≤ 0.1: ${result.goals.met ? 'met' : 'NOT met'}); compiled from scratch: ${result.apply.one_weight_from_scratch_ms} ms`);
console.log(`wrote ${file}`);
