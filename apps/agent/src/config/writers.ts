/**
 * Which processes hold a file open for writing, read from /proc (every process's fd links and fdinfo flags).
 * A config file that some process still has open for writing is not finished (`kubectl … > mesh.yaml` holds it
 * open until kubectl exits; a streaming writer until its last chunk), whatever a parser makes of its prefix.
 */
import { readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';

export interface Writer {
  pid: number;
  /** The process's name (/proc/PID/comm). */
  command: string;
  file: string;
}

const O_ACCMODE = 0o3;

/** Processes other than this one with any of `files` open for writing (O_WRONLY or O_RDWR). Processes that
 *  vanish or cannot be read during the walk are skipped. */
export function openWriters(files: string[]): Writer[] {
  const wanted = new Map<string, string>();
  for (const f of files) {
    try {
      wanted.set(realpathSync(f), f);
    } catch {
      // gone: nobody writes it
    }
  }
  const out: Writer[] = [];
  if (wanted.size === 0) return out;
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid);
  } catch {
    return out;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const file = wanted.get(target);
      if (file === undefined) continue;
      try {
        const flags = /^flags:\s*([0-7]+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
        if (!flags || (parseInt(flags[1]!, 8) & O_ACCMODE) === 0) continue;
        const command = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
        out.push({ pid: Number(pid), command, file });
      } catch {
        continue;
      }
    }
  }
  return out;
}
