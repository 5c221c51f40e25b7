import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync, statSync } from 'node:fs';
import { describe, it, type SuiteFactory } from 'vitest';
import { findMount, mountTypeAt } from './mounts.js';
import { findTool } from './tools.js';

export const BPFFS = '/sys/fs/bpf';
// Serialises the bpffs mount between test workers that start at once; mkdir is atomic.
const MOUNT_LOCK = '/run/testkit-bpffs.lock';

export interface Privileges {
  root: boolean;
  /** bpffs is mounted at /sys/fs/bpf (after mounting it ourselves if we could). */
  bpffs: boolean;
  /** cgroup2 mount point, if any. */
  cgroup2: string | undefined;
  /** What is missing, in words, e.g. ['root (euid 0)']; empty when privileged tests can run. */
  missing: string[];
}

/** MESH_REQUIRE_BPF=1 (CI) turns a skipped privileged suite into a failing one. */
export function bpfRequired(): boolean {
  return process.env.MESH_REQUIRE_BPF === '1';
}

export function isRoot(): boolean {
  return process.geteuid?.() === 0;
}

let cached: Privileges | undefined;

/** Checks root, bpffs (mounting it when root and absent) and cgroup v2, once per process. */
export function privileges(): Privileges {
  if (cached) return cached;
  const root = isRoot();
  const bpffs = root ? ensureBpffs() : mountTypeAt(BPFFS) === 'bpf';
  const cgroup2 = findMount('cgroup2');
  const missing = [
    ...(root ? [] : ['root (euid 0)']),
    ...(bpffs ? [] : [`bpffs at ${BPFFS}`]),
    ...(cgroup2 !== undefined ? [] : ['a cgroup2 mount']),
  ];
  cached = { root, bpffs, cgroup2, missing };
  return cached;
}

export function canRunPrivileged(): boolean {
  return privileges().missing.length === 0;
}

/** Mount bpffs at /sys/fs/bpf unless something already did; true when it is there afterwards. */
export function ensureBpffs(): boolean {
  if (mountTypeAt(BPFFS) === 'bpf') return true;
  const mount = findTool('mount');
  if (mount === undefined || !existsSync(BPFFS)) return false;
  const deadline = Date.now() + 5000;
  const wait = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      mkdirSync(MOUNT_LOCK);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') return false;
      if (lockIsStale()) continue;
      // Another worker is mounting; give up waiting rather than stack a second mount on top of its own.
      if (Date.now() > deadline) return mountTypeAt(BPFFS) === 'bpf';
      Atomics.wait(wait, 0, 0, 20);
    }
  }
  try {
    // A second mount on top would hide what the first one's users pinned.
    if (mountTypeAt(BPFFS) !== 'bpf') execFileSync(mount, ['-t', 'bpf', 'bpf', BPFFS], { stdio: 'ignore' });
  } catch {
    // Reported as missing below.
  } finally {
    rmdirSync(MOUNT_LOCK);
  }
  return mountTypeAt(BPFFS) === 'bpf';
}

// A worker killed while holding the lock must not block every later run.
function lockIsStale(): boolean {
  try {
    if (Date.now() - statSync(MOUNT_LOCK).mtimeMs < 10_000) return false;
    rmdirSync(MOUNT_LOCK);
  } catch {
    // Released meanwhile: retry.
  }
  return true;
}

export interface PrivilegedOptions {
  /** Binaries the suite runs (checked on PATH and sbin), e.g. ['ip', 'tshark']. */
  tools?: readonly string[];
}

/**
 * A `describe` for tests that need root, bpffs and cgroup v2 (and `tools`). Without them it is skipped —
 * unless MESH_REQUIRE_BPF=1, where it becomes one failing test naming what is missing, so CI cannot pass by skipping.
 */
export function describePrivileged(name: string, fn: SuiteFactory, opts: PrivilegedOptions = {}): void {
  const missing = [
    ...privileges().missing,
    ...(opts.tools ?? []).filter((t) => findTool(t) === undefined).map((t) => `the ${t} tool`),
  ];
  if (missing.length === 0) {
    describe(name, fn);
  } else if (bpfRequired()) {
    describe(name, () => {
      it('has the privileges it needs', () => {
        throw new Error(`${name} needs ${missing.join(', ')}; MESH_REQUIRE_BPF=1 makes this a failure instead of a skip`);
      });
    });
  } else {
    describe.skip(`${name} (needs ${missing.join(', ')})`, fn);
  }
}
