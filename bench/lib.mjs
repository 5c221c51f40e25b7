// What every benchmark shares: the machine/kernel/commit header of a result file, medians, building a C
// helper, and cleanup of what a run started (also when it is interrupted).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { cgroup2Mount, enableStats, Program } from '@mesh/bpf';

export { agentApi } from '../scripts/lib/agent.mjs';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The q-quantile (0..1) of xs, nearest rank. */
export function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] : NaN;
}

export const round = (x, digits = 3) => Number(x.toFixed(digits));

function git(...args) {
  return execFileSync('git', args, { cwd: root, encoding: 'utf8' }).trim();
}

/** machine, kernel, node, commit and date, for the head of a result file. */
export function header(bench, loadBefore) {
  return {
    bench,
    machine: {
      cpu: cpus()[0]?.model ?? 'unknown',
      cores: availableParallelism(),
      memoryBytes: totalmem(),
      // A 1-minute load near the core count means other work shared the machine: noisy figures.
      loadavg1m: { before: round(loadBefore, 2), after: round(loadavg()[0], 2) },
    },
    kernel: release(),
    node: process.version,
    // Dirty: the tree differs from the commit outside bench/results (where results are being written).
    commit: { sha: git('rev-parse', 'HEAD'), dirty: git('status', '--porcelain', '--', '.', ':!bench/results') !== '' },
    date: new Date().toISOString(),
  };
}

export function writeResult(name, result) {
  const file = join(root, 'bench/results', `${name}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
  return file;
}

/** Compiles bench/<src> into build/bench/<name>. */
export function buildC(src, name, libs = []) {
  const out = join(root, 'build/bench', name);
  mkdirSync(dirname(out), { recursive: true });
  const r = spawnSync('cc', ['-O2', '-Wall', '-Wextra', '-o', out, join(root, 'bench', src), ...libs], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cc ${src} failed (run scripts/setup.sh first):\n${r.stderr ?? r.error}`);
  return out;
}

const cleanups = [];
/** Runs fn at exit, on SIGINT/SIGTERM, or when the bench throws; last registered runs first. */
export function onCleanup(fn) {
  cleanups.push(fn);
}
export function cleanup() {
  while (cleanups.length) {
    try {
      cleanups.pop()();
    } catch (err) {
      console.error(`cleanup: ${err.message}`);
    }
  }
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    cleanup();
    process.exit(130);
  });
}
process.on('exit', cleanup);

/**
 * BPF run time of the programs behind `links` while `fn` runs (it may return a promise: then while it settles),
 * with the kernel's run-time statistics on only meanwhile: fn's result, and per program name its runs and ns.
 */
export async function bpfRunTime(links, fn) {
  const progs = links.map((l) => Program.openById(l.info().programId));
  try {
    const stats = enableStats();
    let before, after, result;
    try {
      before = progs.map((p) => p.stats());
      result = await fn();
      after = progs.map((p) => p.stats());
    } finally {
      stats.close();
    }
    const programs = {};
    progs.forEach((p, i) => {
      programs[p.name] = { runs: Number(after[i].runCount - before[i].runCount), ns: Number(after[i].runTimeNs - before[i].runTimeNs) };
    });
    return { result, programs };
  } finally {
    progs.forEach((p) => p.close());
  }
}

/**
 * Runs a command to completion without blocking the event loop (so SIGINT/SIGTERM reach cleanup meanwhile, which
 * kills it): { status, signal, stdout, stderr }. A command still running after timeoutMs is killed.
 */
export function runCommand(cmd, args, { timeoutMs = 120_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = [];
    const err = [];
    child.stdout.on('data', (b) => out.push(b));
    child.stderr.on('data', (b) => err.push(b));
    const kill = () => child.kill('SIGKILL');
    cleanups.push(kill);
    const timer = setTimeout(kill, timeoutMs);
    child.on('error', reject);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      const i = cleanups.indexOf(kill);
      if (i >= 0) cleanups.splice(i, 1);
      resolve({ status, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
  });
}

/** A scratch cgroup v2 directory for one arm of a benchmark, removed at cleanup. Whatever still runs in it at
 *  cleanup was started by this bench (only its children join it) and is killed first (cgroup.kill), then the
 *  directory is removed once the kernel has let the processes go (tried for up to 2 s). */
export function scratchCgroup(name) {
  const path = join(cgroup2Mount(), `mesh-bench-${name}-${process.pid}`);
  mkdirSync(path);
  onCleanup(() => removeCgroup(path));
  return path;
}

function removeCgroup(path) {
  const until = Date.now() + 2000;
  for (let killed = false; ; ) {
    try {
      rmdirSync(path);
      return;
    } catch (err) {
      if (err.code !== 'EBUSY' || Date.now() > until) throw err;
      if (!killed) writeFileSync(join(path, 'cgroup.kill'), '1');
      killed = true;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
}

/**
 * The latencies of a `loadgen -T` file (bench/mesh/loadgen.c: "TARGET NS" a line), grouped by arm: armOf[t] is
 * target t's arm. Returns { arm: [ns, …] } for every arm named in armOf.
 */
export function taggedLatencies(file, armOf) {
  const samples = Object.fromEntries(armOf.map((a) => [a, []]));
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    const [target, ns] = line.split(' ');
    samples[armOf[Number(target)]].push(Number(ns));
  }
  return samples;
}

/** [command, args] that run argv as a process that first moves itself into cgroup `cg` (never this process). */
export function inCgroup(cg, argv) {
  return ['/bin/sh', ['-c', 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', 'in-cgroup', cg, ...argv]];
}
