// bench:bpf: map get/set from JS through @mesh/bpf, single and batch, against a C loop (maploop.c) doing the same
// syscalls on the same kind of map in the same run. Arms alternate (C, JS, C, JS…) so drift hits both alike;
// the figures are medians over the repetitions. Writes bench/results/bpf.json and prints a table.
import { spawnSync } from 'node:child_process';
import { availableParallelism, loadavg } from 'node:os';
import { relative } from 'node:path';
import { performance } from 'node:perf_hooks';

import { BpfMap, codec } from '@mesh/bpf';

import { buildC, header, median, root, round, writeResult } from '../lib.mjs';

const params = {
  mapType: 'hash',
  keySize: 4, // __u32
  valueSize: 8, // __u64
  entries: 4096,
  batchSize: 256,
  reps: 7,
  // Per repetition and arm; an arm also stops after maxMsPerArm, and its rate is what it did in the time it took.
  singleOps: 400_000,
  batchElems: 1_048_576,
  maxMsPerArm: 1000,
  warmupMs: 300,
};
const OPS = ['set', 'get', 'setBatch', 'getBatch'];


function runC(bin) {
  const { entries, batchSize, singleOps, batchElems, maxMsPerArm } = params;
  const r = spawnSync(bin, [entries, batchSize, singleOps, batchElems, maxMsPerArm].map(String), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`maploop failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** Runs body(i) for i = 0, step, 2·step… until `total` or `maxMs`; the clock is read every 1024 operations. */
function timed(total, step, maxMs, body) {
  const t0 = performance.now();
  let done = 0;
  let nextCheck = 1024;
  while (done < total) {
    done += body(done);
    if (done >= nextCheck) {
      nextCheck = done + 1024;
      if (performance.now() - t0 > maxMs) break;
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  return { ops: done, seconds, opsPerSec: done / seconds };
}

/** The JS arms: the public API (`api`), and the addon's methods called with preallocated, pre-encoded buffers
 *  (`raw`), which shows how much of the API's cost is the TS layer and how much the Node-API call itself. */
function jsArms() {
  const { entries, batchSize } = params;
  const map = BpfMap.create({ type: 'hash', maxEntries: entries, name: 'bench_js' }, { key: codec.u32, value: codec.u64 });
  const mask = entries - 1;
  const values = Array.from({ length: entries }, (_, i) => BigInt(i));
  const chunks = [];
  for (let off = 0; off < entries; off += batchSize) {
    chunks.push(Array.from({ length: batchSize }, (_, i) => [off + i, values[off + i]]));
  }
  map.setBatch(chunks.flat());
  let misses = 0;

  const h = map.nativeHandle();
  const keyBuf = Buffer.alloc(4);
  const valBuf = Buffer.alloc(8);
  const keysAll = Buffer.alloc(entries * 4);
  const valsAll = Buffer.alloc(entries * 8);
  for (let i = 0; i < entries; i++) {
    keysAll.writeUInt32LE(i, i * 4);
    valsAll.writeBigUInt64LE(values[i], i * 8);
  }
  const rawChunks = chunks.map((_, c) => [
    keysAll.subarray(c * batchSize * 4, (c + 1) * batchSize * 4),
    valsAll.subarray(c * batchSize * 8, (c + 1) * batchSize * 8),
  ]);
  const outKeys = Buffer.alloc(batchSize * 4);
  const outVals = Buffer.alloc(batchSize * 8);
  const tokA = Buffer.alloc(8);
  const tokB = Buffer.alloc(8);

  const api = {
    set: (n, ms) => timed(n, 1, ms, (i) => (map.set(i & mask, values[i & mask]), 1)),
    get: (n, ms) => timed(n, 1, ms, (i) => (map.get(i & mask) === undefined && misses++, 1)),
    setBatch: (n, ms) => timed(n, batchSize, ms, (i) => map.setBatch(chunks[(i / batchSize) % chunks.length])),
    getBatch: (n, ms) => timed(n, entries, ms, () => map.getBatch({ batchSize }).length),
  };
  const raw = {
    set: (n, ms) => timed(n, 1, ms, (i) => (keyBuf.writeUInt32LE(i & mask), h.update(keyBuf, valBuf, 0), 1)),
    get: (n, ms) => timed(n, 1, ms, (i) => (keyBuf.writeUInt32LE(i & mask), h.lookup(keyBuf, valBuf, 0), 1)),
    setBatch: (n, ms) =>
      timed(n, batchSize, ms, (i) => {
        const [k, v] = rawChunks[(i / batchSize) % rawChunks.length];
        return h.updateBatch(k, v, batchSize, 0);
      }),
    getBatch: (n, ms) =>
      timed(n, entries, ms, () => {
        let got = 0;
        let inTok = null;
        let outTok = tokA;
        for (;;) {
          const [count, done] = h.lookupBatch(inTok, outTok, outKeys, outVals, batchSize, 0, false);
          got += count;
          if (done) return got;
          inTok = outTok;
          outTok = outTok === tokA ? tokB : tokA;
        }
      }),
  };
  return { api, raw, map, misses: () => misses };
}

function runJs(arms) {
  const { singleOps, batchElems, maxMsPerArm } = params;
  const out = {};
  for (const op of OPS) out[op] = arms[op](op.endsWith('Batch') ? batchElems : singleOps, maxMsPerArm);
  return out;
}


// --- run ---
const loadBefore = loadavg()[0];
const bin = buildC('bpf/maploop.c', 'maploop', ['-lbpf']);
const js = jsArms();
const raw = { c: [], js: [], jsRaw: [] };

// Warm-up: JIT-compile the JS arms and fault in both maps before anything is timed.
runC(bin);
for (const arms of [js.api, js.raw]) for (const op of OPS) arms[op](Infinity, params.warmupMs / OPS.length);

let libbpf;
for (let rep = 0; rep < params.reps; rep++) {
  const c = runC(bin);
  libbpf = c.libbpf;
  raw.c.push(Object.fromEntries(OPS.map((op) => [op, c[op]])));
  raw.js.push(runJs(js.api));
  raw.jsRaw.push(runJs(js.raw));
  if (process.stderr.isTTY) process.stderr.write(`rep ${rep + 1}/${params.reps}\r`);
}
if (process.stderr.isTTY) process.stderr.write('\x1b[K');
if (js.misses()) throw new Error(`${js.misses()} lookups missed: the map should hold every key`);
js.map.close();

const medians = Object.fromEntries(
  Object.entries(raw).map(([arm, reps]) => [arm, Object.fromEntries(OPS.map((op) => [op, median(reps.map((r) => r[op].opsPerSec))]))]),
);
// (max − min) / median of each arm's rate: how much to trust the second digit of a ratio.
const spread = Object.fromEntries(
  Object.entries(raw).map(([arm, reps]) => [
    arm,
    Object.fromEntries(
      OPS.map((op) => {
        const xs = reps.map((r) => r[op].opsPerSec);
        return [op, round((Math.max(...xs) - Math.min(...xs)) / medians[arm][op])];
      }),
    ),
  ]),
);

const m = medians;
const ratios = {
  js_vs_c_get: round(m.js.get / m.c.get),
  js_vs_c_set: round(m.js.set / m.c.set),
  js_vs_c_single_op: round((m.js.get / m.c.get + m.js.set / m.c.set) / 2),
  batch_vs_single_get: round(m.js.getBatch / m.js.get),
  batch_vs_single_set: round(m.js.setBatch / m.js.set),
  batch_vs_single: round((m.js.getBatch / m.js.get + m.js.setBatch / m.js.set) / 2),
  js_vs_c_get_batch: round(m.js.getBatch / m.c.getBatch),
  js_vs_c_set_batch: round(m.js.setBatch / m.c.setBatch),
  js_vs_c_batch: round((m.js.getBatch / m.c.getBatch + m.js.setBatch / m.c.setBatch) / 2),
};
// Not goals: where the JS cost sits. raw = the addon method with preallocated buffers; api = the public API.
const diagnostics = Object.fromEntries(
  OPS.flatMap((op) => [
    [`raw_vs_c_${op}`, round(m.jsRaw[op] / m.c[op])],
    [`api_vs_raw_${op}`, round(m.js[op] / m.jsRaw[op])],
  ]),
);

const result = {
  ...header('bpf', loadBefore),
  libbpf,
  params: { ...params, order: 'per repetition: C, JS api, JS raw; each runs set, get, setBatch, getBatch' },
  units: 'opsPerSec is operations per second for set/get and elements per second for setBatch/getBatch',
  raw,
  medians,
  spread,
  ratios,
  diagnostics,
};
const resultFile = writeResult('bpf', result);

const fmt = (x) => (x >= 1e6 ? `${(x / 1e6).toFixed(2)} M/s` : `${(x / 1e3).toFixed(0)} k/s`);
console.log(`\n@mesh/bpf map throughput, median of ${params.reps} (hash, u32 → u64, ${params.entries} entries, batch ${params.batchSize})`);
console.log(`${'op'.padEnd(10)}${'C'.padStart(12)}${'JS api'.padStart(12)}${'JS raw'.padStart(12)}${'api/C'.padStart(8)}${'raw/C'.padStart(8)}`);
for (const op of OPS) {
  console.log(
    `${op.padEnd(10)}${fmt(m.c[op]).padStart(12)}${fmt(m.js[op]).padStart(12)}${fmt(m.jsRaw[op]).padStart(12)}` +
      `${(m.js[op] / m.c[op]).toFixed(2).padStart(8)}${(m.jsRaw[op] / m.c[op]).toFixed(2).padStart(8)}`,
  );
}
console.log(
  `js_vs_c_single_op ${ratios.js_vs_c_single_op} (goal ≥ 0.5)  batch_vs_single ${ratios.batch_vs_single}  js_vs_c_batch ${ratios.js_vs_c_batch}`,
);
// The bench itself keeps about one core busy; more than that plus a quarter of the cores is someone else.
const busy = Math.max(loadBefore, loadavg()[0]);
if (busy > 1 + availableParallelism() / 4) {
  console.log(`note: load average ${busy.toFixed(1)} on ${availableParallelism()} cores during the run; the figures are noisy`);
}
console.log(`wrote ${relative(root, resultFile)}`);
