/** One agent per pin root: a pid file under /run (tmpfs, so it goes at reboot like the pins do). A file left by
 *  an agent that died (kill -9) is taken over once its pid is gone or runs something else. */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const LOCK_DIR = '/run/mesh';

export interface Lock {
  path: string;
  release(): void;
}

const isAgent = (pid: number): boolean => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('mesh-agent');
  } catch {
    return false;
  }
};

const lockPath = (pinRoot: string, dir: string) => join(dir, `agent${pinRoot.replace(/[^A-Za-z0-9_.-]/g, '_')}.pid`);

/** Removes the pid file of `pinRoot` if the agent that wrote it is gone (uninstall's clean-up). */
export function removeStaleLock(pinRoot: string, dir = LOCK_DIR): void {
  const path = lockPath(pinRoot, dir);
  try {
    const pid = Number(readFileSync(path, 'utf8').trim());
    if (!isAgent(pid)) rmSync(path, { force: true });
  } catch {
    // no lock file
  }
}

export function acquireLock(pinRoot: string, dir = LOCK_DIR): Lock {
  mkdirSync(dir, { recursive: true });
  const path = lockPath(pinRoot, dir);
  const mine = String(process.pid);
  try {
    writeFileSync(path, mine, { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const other = Number(readFileSync(path, 'utf8').trim());
    if (Number.isInteger(other) && other > 0 && other !== process.pid && isAgent(other)) {
      throw new Error(`another mesh-agent (pid ${other}) owns ${pinRoot} (lock ${path}); stop it first`);
    }
    writeFileSync(path, mine); // stale: its agent is gone
  }
  return {
    path,
    release() {
      try {
        if (readFileSync(path, 'utf8').trim() === mine) rmSync(path, { force: true });
      } catch {
        // already gone
      }
    },
  };
}
