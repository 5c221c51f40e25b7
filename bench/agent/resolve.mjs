// The resolve half of the scale apply alone (workload checks, endpoints, validation, compile, mTLS policies:
// resolveSteps of apps/agent), on scaleConfig's 50,000 Services / 20,000 Workloads, then one weight changed (the
// memo keeps what did not change). Run it with the agent's V8 flags (bin/mesh-agent.mjs's shebang):
//
//   node --max-semi-space-size=4 --no-sparkplug --expose-gc bench/agent/resolve.mjs [--reps N]
//
// Per resolve: the main thread's CPU time (its schedstat, ns), wall time, young- and old-generation collections,
// and the longest step between two yields, in wall and in the thread's CPU time (the event loop cannot turn
// within one): compare figures taken before/after alternately, in one window. Not recorded in bench/results.
import { openSync, readSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { PerformanceObserver, constants } from 'node:perf_hooks';

import { parseSteps } from '../../apps/agent/dist/config/file.js';
import { heapModeFor } from '../../apps/agent/dist/heap.js';
import { resolveMemo, resolveSteps } from '../../apps/agent/dist/config/objects.js';
import { SCALE, scaleConfig } from './config.mjs';

const arg = (name) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined);
const reps = Number(arg('--reps') ?? 1);
// --cpu-prof-out PREFIX: a CPU profile of each resolve (PREFIX-apply.cpuprofile, PREFIX-one-weight.cpuprofile);
// --heap-prof-out PREFIX: where each resolve allocates (sampled, collected objects included; .heapprofile).
const profOut = arg('--cpu-prof-out');
const heapOut = arg('--heap-prof-out');
const session = profOut || heapOut ? new Session() : undefined;
if (session) {
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('HeapProfiler.enable');
}
// The main thread's CPU time in ns: one pread of its schedstat (read per step: it must cost little).
const schedstat = openSync(`/proc/self/task/${process.pid}/schedstat`, 'r');
const statBuf = Buffer.alloc(128);
const threadCpuNs = () => {
  const n = readSync(schedstat, statBuf, 0, statBuf.length, 0);
  return Number(statBuf.toString('latin1', 0, n).split(' ')[0]);
};

// Collections are reported later than they happen: counted by their start time, within the resolve's.
let gcs = { minor: 0, major: 0, ms: 0, from: Infinity, to: Infinity };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    if (e.startTime < gcs.from || e.startTime > gcs.to) continue;
    const kind = e.detail?.kind ?? e.kind;
    if (kind === constants.NODE_PERFORMANCE_GC_MINOR) gcs.minor++;
    else gcs.major++;
    gcs.ms += e.duration;
  }
}).observe({ entryTypes: ['gc'] });
const settle = () => new Promise((r) => setImmediate(r));

/** Runs steps to their end, timing each step between yields: wall time, and the thread's CPU time (what a
 *  step would hold the event loop for on an idle core). */
function timed(steps) {
  let longest = 0, longestCpu = 0, count = 0, longestAt;
  for (;;) {
    const t = performance.now(), c = threadCpuNs(), h = process.hrtime.bigint();
    const r = steps.next();
    const d = performance.now() - t, dc = (threadCpuNs() - c) / 1e6;
    count++;
    if (d > longest) longest = d;
    if (dc > longestCpu) (longestCpu = dc), (longestAt = globalThis.__phases?.length), (globalThis.longestWindowUs = [Number(h / 1000n), Number(process.hrtime.bigint() / 1000n)]);
    if (r.done) return { value: r.value, longest, longestCpu, count, longestAt };
  }
}

async function measure(label, snapshot, memo) {
  globalThis.gc?.();
  await settle();
  gcs = { minor: 0, major: 0, ms: 0, from: performance.now(), to: Infinity };
  if (profOut) await session.post('Profiler.start');
  if (heapOut) await session.post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  const c0 = threadCpuNs(), t0 = performance.now();
  const { value, longest, longestCpu, count, longestAt } = timed(resolveSteps(snapshot, memo));
  const wall = performance.now() - t0, cpu = (threadCpuNs() - c0) / 1e6;
  gcs.to = performance.now();
  const name = label.trim().replace(' ', '-');
  // The longest step's window (monotonic µs, the profile's clock) rides along in the profile.
  if (profOut) writeFileSync(`${profOut}-${name}.cpuprofile`, JSON.stringify({ ...(await session.post('Profiler.stop')).profile, longestWindowUs: globalThis.longestWindowUs }));
  if (heapOut) writeFileSync(`${heapOut}-${name}.heapprofile`, JSON.stringify((await session.post('HeapProfiler.stopSampling')).profile));
  await new Promise((r) => setTimeout(r, 100));
  // With resolveSteps instrumented by hand (globalThis.__phases: [label, cpu ms] at each phase's end).
  if (globalThis.__phases?.length) console.log(globalThis.__phases.map(([l, c]) => `${l} ${c.toFixed(0)}`).join(', '), `; longest step in ${globalThis.__phases[longestAt]?.[0]}`);
  console.log(`${label}: cpu ${cpu.toFixed(0)} ms, wall ${wall.toFixed(0)} ms, scavenges ${gcs.minor}, other gcs ${gcs.major}, ${gcs.ms.toFixed(0)} ms in gc, steps ${count}, longest step ${longest.toFixed(1)} ms (cpu ${longestCpu.toFixed(1)} ms); ${value.compiled.services.length} service addresses`);
  return value;
}

const text = scaleConfig(SCALE);
const oneText = text.replace(/name: r-s-00042,[^]*?weight: 90 \}, \{ name: s-\d+, port: 80, weight: 10/, (m) => `${m.slice(0, -2)}20`);
if (oneText === text) throw new Error('the one-weight edit did not apply');
// The agent's heap mode for a config this big (bin/mesh-agent.mjs starts in the small one).
heapModeFor(0);
heapModeFor(text.length);
for (let rep = 0; rep < reps; rep++) {
  const parsed = parseSteps([{ path: 'scale.yaml', text }], undefined, {});
  let r;
  do r = parsed.next(); while (!r.done);
  const memo = resolveMemo();
  await measure(`apply     `, r.value.snapshot, memo);
  const again = parseSteps([{ path: 'scale.yaml', text: oneText }], r.value.documents, {});
  let r2;
  do r2 = again.next(); while (!r2.done);
  await measure(`one weight`, r2.value.snapshot, memo);
}
