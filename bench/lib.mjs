// What every benchmark shares: the machine/kernel/commit header of a result file, medians, building a C
// helper, and cleanup of what a run started (also when it is interrupted).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { cgroup2Mount, enableStats, Program } from '@mesh/bpf';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
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
 * BPF run time of the programs behind `links` while `fn` runs, with the kernel's run-time statistics on only
 * meanwhile: fn's result, and per program name its runs and ns.
 */
export function bpfRunTime(links, fn) {
  const progs = links.map((l) => Program.openById(l.info().programId));
  try {
    const stats = enableStats();
    let before, after, result;
    try {
      before = progs.map((p) => p.stats());
      result = fn();
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

/** [command, args] that run argv as a process that first moves itself into cgroup `cg` (never this process). */
export function inCgroup(cg, argv) {
  return ['/bin/sh', ['-c', 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', 'in-cgroup', cg, ...argv]];
}
