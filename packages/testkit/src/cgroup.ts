import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { atExit } from './exit.js';
import { findMount } from './mounts.js';
import { uniqueName } from './names.js';
import { ProcessTracker, type ExecResult, type RunOptions } from './proc.js';

const CGROUP_NAME_MAX = 64;
const REMOVE_TIMEOUT_MS = 3000;

// The child joins the cgroup itself, then becomes the command: the runner is never moved, and the command
// is inside from its first instruction. Paths and argv travel as arguments, never spliced into the script.
const JOIN_AND_EXEC = 'echo $$ > "$1/cgroup.procs" || exit 126; shift; exec "$@"';

/** Mount point of the cgroup v2 hierarchy, from /proc/mounts; throws when there is none. */
export function cgroup2Mount(): string {
  const mount = findMount('cgroup2');
  if (mount === undefined) throw new Error('no cgroup2 filesystem in /proc/mounts: cgroup v2 tests need one mounted');
  return mount;
}

/** The v2 cgroup of a process as /proc/PID/cgroup names it ('/tk1a2b-0'), relative to the cgroup2 mount. */
export function cgroupOf(pid: number | 'self'): string {
  const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'));
  if (line === undefined) throw new Error(`/proc/${pid}/cgroup has no cgroup v2 entry`);
  return line.slice(3);
}

/** A scratch cgroup v2 directory whose members are only processes it started (and their children). */
export interface Cgroup extends AsyncDisposable {
  readonly name: string;
  /** Absolute directory, e.g. '/sys/fs/cgroup/unified/tk1a2b-0'; open it to attach cgroup BPF programs. */
  readonly path: string;
  /** Path as /proc/PID/cgroup shows it, e.g. '/tk1a2b-0'. */
  readonly relPath: string;
  readonly closed: boolean;
  /** Start a command that joins this cgroup before it runs; close() stops it. */
  spawn(cmd: string, args?: readonly string[], opts?: SpawnOptions): ChildProcess;
  /** Run a command inside this cgroup to completion, with a hard timeout; a non-zero exit resolves. */
  run(cmd: string, args?: readonly string[], opts?: RunOptions): Promise<ExecResult>;
  /** Pids now in the cgroup. */
  procs(): number[];
  /** Stop its processes, wait for it to empty, remove it (and any sub-cgroups a test made). Safe to call twice. */
  close(): Promise<void>;
}

export interface CgroupOptions {
  /** Directory to create the cgroup in; default the root of the cgroup2 mount. */
  parent?: string;
}

/** argv that runs `cmd args` as a process that first moves itself into `cg`, for composing with inNetns(). */
export function inCgroup(cg: Cgroup | string, cmd: string, args: readonly string[] = []): [string, string[]] {
  return ['/bin/sh', ['-c', JOIN_AND_EXEC, 'testkit-cgroup', typeof cg === 'string' ? cg : cg.path, cmd, ...args]];
}

export async function createCgroup(prefix = 'tk', opts: CgroupOptions = {}): Promise<Cgroup> {
  const mount = cgroup2Mount();
  const parent = opts.parent ?? mount;
  const name = uniqueName(prefix, CGROUP_NAME_MAX);
  const path = join(parent, name);
  mkdirSync(path);
  const tracker = new ProcessTracker(`cgroup ${name}`);
  const unregister = atExit(() => {
    tracker.killAllSync();
    removeSync(path);
  });
  let closing: Promise<void> | undefined;

  const close = (): Promise<void> => {
    closing ??= (async () => {
      await tracker.close();
      await remove(path);
      unregister();
    })();
    return closing;
  };
  const assertOpen = (op: string): void => {
    if (closing) throw new TypeError(`cgroup ${name}: ${op} after close`);
  };

  return {
    name,
    path,
    relPath: `/${relative(mount, path)}`,
    get closed() {
      return closing !== undefined;
    },
    spawn(cmd, args = [], spawnOpts = {}) {
      assertOpen('spawn');
      const [sh, argv] = inCgroup(path, cmd, args);
      return tracker.spawn(sh, argv, spawnOpts);
    },
    run(cmd, args = [], runOpts = {}) {
      assertOpen('run');
      const [sh, argv] = inCgroup(path, cmd, args);
      return tracker.run(sh, argv, runOpts);
    },
    procs: () => readProcs(path),
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** Run `cmd` inside `cg` to completion; the child is killed when `timeoutMs` passes. */
export function runInCgroup(
  cg: Cgroup,
  cmd: string,
  args: readonly string[],
  opts: RunOptions & { timeoutMs: number },
): Promise<ExecResult> {
  return cg.run(cmd, args, opts);
}

function readProcs(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** Sub-cgroups first, deepest first, then `dir` itself. */
function cgroupDirs(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const subs = readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory());
  return [...subs.flatMap((d) => cgroupDirs(join(dir, d.name))), dir];
}

// Only descendants of processes we started can be inside (nothing else is moved here), so killing them is ours to do.
function killMembers(dir: string): void {
  if (existsSync(join(dir, 'cgroup.kill'))) {
    writeFileSync(join(dir, 'cgroup.kill'), '1');
    return;
  }
  for (const pid of readProcs(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

/** One pass: kill what is inside, try to remove every directory. True when `dir` is gone. */
function tryRemove(dir: string): boolean {
  for (const d of cgroupDirs(dir)) {
    if (readProcs(d).length > 0) {
      killMembers(d);
      continue;
    }
    try {
      rmdirSync(d);
    } catch (e) {
      // EBUSY while the last members finish exiting; ENOENT if it went meanwhile.
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EBUSY' && code !== 'ENOENT' && code !== 'ENOTEMPTY') throw e;
    }
  }
  return !existsSync(dir);
}

async function remove(dir: string): Promise<void> {
  const deadline = Date.now() + REMOVE_TIMEOUT_MS;
  while (!tryRemove(dir)) {
    if (Date.now() > deadline) {
      throw new Error(`cgroup ${dir}: could not remove it within ${REMOVE_TIMEOUT_MS} ms; pids still inside: ${readProcs(dir).join(', ') || 'none'}`);
    }
    await sleep(20);
  }
}

function removeSync(dir: string): void {
  const deadline = Date.now() + REMOVE_TIMEOUT_MS;
  const wait = new Int32Array(new SharedArrayBuffer(4));
  // Exit hooks cannot await; Atomics.wait is the synchronous sleep Node offers on the main thread.
  while (!tryRemove(dir) && Date.now() < deadline) Atomics.wait(wait, 0, 0, 20);
}
