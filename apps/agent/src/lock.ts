/** One agent per pin root: an flock(2) on a file under /run (tmpfs, so it goes at reboot like the pins do). The
 *  kernel holds the lock for the process and drops it when the process dies, kill -9 included: no stale lock to
 *  judge, and two agents racing for it have one winner. The file holds the owner's pid, for messages only. */
import { closeSync, constants, fchmodSync, fstatSync, ftruncateSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';

import { tryLockExclusive } from '@mesh/bpf';

export const LOCK_DIR = '/run/mesh';

export interface Lock {
  path: string;
  release(): void;
}

const lockPath = (pinRoot: string, dir: string) => join(dir, `agent${pinRoot.replace(/[^A-Za-z0-9_.-]/g, '_')}.pid`);

/** The lock file of `pinRoot`. */
export const lockFile = (pinRoot: string, dir = LOCK_DIR): string => lockPath(pinRoot, dir);

/** Whether `fd` is the file `path` names now (not one removed, or replaced, since it was opened). */
function isCurrent(fd: number, path: string): boolean {
  try {
    const [a, b] = [fstatSync(fd), statSync(path)];
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}

/** Opens and locks the lock file; undefined when another process holds it. */
function tryLock(path: string): number | undefined {
  // A holder releases by removing the file while it holds the lock, so one opened just before may be locked
  // just after: the lock counts only on the file the path names. Bounded: each retry follows a release.
  for (let attempt = 0; attempt < 100; attempt++) {
    // Root's only: flock needs no more than a read-only fd, so a file others can open is a lock they can hold.
    const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600);
    fchmodSync(fd, 0o600);
    if (!tryLockExclusive(fd)) {
      closeSync(fd);
      return undefined;
    }
    if (isCurrent(fd, path)) return fd;
    closeSync(fd);
  }
  throw new Error(`lock ${path}: removed and made again 100 times while taking it`);
}

/** Removes the lock file of `pinRoot` unless an agent holds it (uninstall's clean-up). */
export function removeStaleLock(pinRoot: string, dir = LOCK_DIR): void {
  const path = lockPath(pinRoot, dir);
  try {
    statSync(path);
  } catch {
    return; // no lock file
  }
  const fd = tryLock(path);
  if (fd === undefined) return;
  rmSync(path, { force: true });
  closeSync(fd);
}

/** Whether `s` is the pid of a process that exists (EPERM: it exists, owned by another user). */
function isLivePid(s: string): boolean {
  if (!/^\d+$/.test(s)) return false;
  try {
    process.kill(Number(s), 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function acquireLock(pinRoot: string, dir = LOCK_DIR): Lock {
  mkdirSync(dir, { recursive: true });
  const path = lockPath(pinRoot, dir);
  const fd = tryLock(path);
  if (fd === undefined) {
    // The holder writes its pid just after it locks: a racing loser may read before that (an empty file, or the
    // pid a killed agent left), so it waits a little for a pid that runs.
    let owner = '';
    for (let i = 0; i < 20 && !isLivePid(owner); i++) {
      if (i > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
      try {
        owner = readFileSync(path, 'utf8').trim();
      } catch {
        break; // released meanwhile: the message names no pid
      }
    }
    throw new Error(`another mesh-agent (pid ${isLivePid(owner) ? owner : 'unknown'}) owns ${pinRoot} (lock ${path}); stop it first`);
  }
  ftruncateSync(fd, 0);
  writeSync(fd, String(process.pid), 0);
  let held = true;
  return {
    path,
    release() {
      if (!held) return;
      held = false;
      // Removed while still locked, then unlocked by the close: see tryLock.
      rmSync(path, { force: true });
      closeSync(fd);
    },
  };
}
