/** Structured logs: one JSON object per line ({"time","level","msg",…fields}), written synchronously so the
 *  last lines before a crash are not lost. */
import { readFileSync, writeSync } from 'node:fs';

export const LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type Level = (typeof LEVELS)[number];

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** A logger that adds `fields` to every line. */
  with(fields: Record<string, unknown>): Logger;
}

const plain = (v: unknown): unknown => {
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Error) return { name: v.name, message: v.message, ...((v as { code?: string }).code ? { code: (v as { code?: string }).code } : {}) };
  return v;
};

export function createLogger(opts: { level?: Level; fd?: number; base?: Record<string, unknown> } = {}): Logger {
  const min = LEVELS.indexOf(opts.level ?? 'info');
  const fd = opts.fd ?? 2;
  const base = opts.base ?? {};
  const emit = (level: Level, msg: string, fields: Record<string, unknown> = {}) => {
    if (LEVELS.indexOf(level) < min) return;
    const line = JSON.stringify({ time: new Date().toISOString(), level, msg, ...base, ...fields }, (_k, v) => plain(v));
    try {
      writeSync(fd, line + '\n');
    } catch {
      // a closed stderr must not take the agent down
    }
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    with: (f) => createLogger({ ...opts, base: { ...base, ...f } }),
  };
}

/** Milliseconds since `t0` (a performance.now() reading), to a tenth, for log fields. */
export function msSince(t0: number): number {
  return Math.round((performance.now() - t0) * 10) / 10;
}

/** CPU time (user + system) the calling thread has used so far, in ms (10 ms steps): how much of an apply was
 *  the event loop's own work, whatever share of the machine it got. 0 where /proc has no thread-self. */
export function threadCpuMs(): number {
  try {
    const f = readFileSync('/proc/thread-self/stat', 'utf8');
    const x = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(x[11]) + Number(x[12])) * 10;
  } catch {
    return 0;
  }
}
