// What tests read about a process at run time: its threads (nice value, autogroup, wake-ups, read syscalls),
// V8's heap after a full collection, and how often the event loop turned.
import { readdirSync, readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export interface ThreadStat {
  tid: number;
  /** The thread's name (/proc/PID/task/TID/comm). */
  comm: string;
  /** Its nice value (field 19 of stat). */
  nice: number;
  /** Context switches so far: voluntary (it waited, then was woken) and nonvoluntary (it was preempted). */
  voluntarySwitches: number;
  involuntarySwitches: number;
  /** Read-class syscalls so far (read, recv…: syscr of io). */
  readSyscalls: number;
}

const field = (text: string, name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+)$`, 'm').exec(text)?.[1] ?? NaN);

/** Every thread of `pid` (default: this process) as it is now; a thread that ends while it is read is left out. */
export function threadsOf(pid: number | 'self' = 'self'): ThreadStat[] {
  const out: ThreadStat[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const dir = `/proc/${pid}/task/${tid}`;
    try {
      const stat = readFileSync(`${dir}/stat`, 'utf8');
      const status = readFileSync(`${dir}/status`, 'utf8');
      const io = readFileSync(`${dir}/io`, 'utf8');
      out.push({
        tid: Number(tid),
        comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')),
        nice: Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]),
        voluntarySwitches: field(status, 'voluntary_ctxt_switches'),
        involuntarySwitches: field(status, 'nonvoluntary_ctxt_switches'),
        readSyscalls: field(io, 'syscr'),
      });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' && (e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
    }
  }
  return out;
}

/** "nice N" of the autogroup of `pid`'s session; undefined where the kernel does not schedule by autogroup. */
export function autogroupNice(pid: number): number | undefined {
  try {
    if (readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() !== '1') return undefined;
    return Number(/nice (-?\d+)/.exec(readFileSync(`/proc/${pid}/autogroup`, 'utf8'))?.[1]);
  } catch {
    return undefined;
  }
}

let gc: (() => void) | undefined;

/** V8's heap in use after two full collections (gc exposed on first use): what a test holds, in bytes. */
export function heapUsedAfterGc(): number {
  if (gc === undefined) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

/** How often the event loop turned (setImmediate callbacks ran) while `work()` settled: 0 or 1 when it held the
 *  loop from start to end. */
export async function loopTurnsWhile(work: () => Promise<unknown>): Promise<number> {
  let turns = 0;
  let done = false;
  const tick = () => {
    if (done) return;
    turns++;
    setImmediate(tick);
  };
  setImmediate(tick);
  try {
    await work();
  } finally {
    done = true;
  }
  return turns;
}
