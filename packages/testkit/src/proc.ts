import { spawn as nodeSpawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { StringDecoder } from 'node:string_decoder';
import { setTimeout as sleep } from 'node:timers/promises';
import { atExit } from './exit.js';

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** Exit status, or null when a signal ended the process. */
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Hard limit: the process group is killed with SIGKILL and the promise rejects. Default 30 s. */
  timeoutMs?: number;
  /** Written to stdin, which is then closed; without it stdin is /dev/null. */
  input?: string | Uint8Array;
  /** Per stream; more output kills the process and rejects. Default 32 MiB. */
  maxBuffer?: number;
}

export type CommandFailure = 'spawn' | 'exit' | 'timeout' | 'maxBuffer';

/** A command that could not start, exited non-zero (runChecked only), timed out or printed too much. */
export class CommandError extends Error {
  override readonly name = 'CommandError';

  constructor(
    readonly reason: CommandFailure,
    readonly cmd: string,
    readonly args: readonly string[],
    readonly result: ExecResult,
    detail: string,
  ) {
    const stderr = result.stderr.trim();
    super(`${[cmd, ...args].join(' ')}: ${detail}${stderr === '' ? '' : `\n${lastLines(stderr, 20)}`}`);
  }
}

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_BUFFER = 32 * 1024 * 1024;
const DEFAULT_GRACE_MS = 1000;
// Output kept per tracked child for waitForLine and error messages.
const LOG_MAX_LINES = 2000;

/** Every live tracked child, across trackers, for the exit hook. */
const live = new Set<ChildProcess>();
let unregisterExitHook: (() => void) | undefined;
const groupLeaders = new WeakSet<ChildProcess>();
const logs = new WeakMap<ChildProcess, OutputLog>();

/**
 * Owns the processes it starts: each runs in its own process group so that stopping it also stops what it
 * forked, and `close()` (or process exit, as a last resort) stops them all.
 */
export class ProcessTracker implements AsyncDisposable {
  readonly #children = new Set<ChildProcess>();
  #closing: Promise<void> | undefined;

  constructor(readonly label = 'processes') {}

  get closed(): boolean {
    return this.#closing !== undefined;
  }

  /** Live children, oldest first. */
  get children(): ChildProcess[] {
    return [...this.#children];
  }

  /**
   * Start a tracked child. stdin defaults to /dev/null and stdout/stderr to pipes that are always drained
   * (so a chatty child never blocks) into a log that waitForLine() and capturedOutput() read.
   */
  spawn(cmd: string, args: readonly string[] = [], opts: SpawnOptions = {}): ChildProcess {
    this.#assertOpen('spawn');
    const child = nodeSpawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...opts });
    if (opts.detached !== false) groupLeaders.add(child);
    logs.set(child, new OutputLog(child));
    // Without a listener an 'error' event (e.g. ENOENT) would be thrown as an uncaught exception.
    child.on('error', () => {});
    if (child.pid === undefined) return child;
    this.#children.add(child);
    live.add(child);
    unregisterExitHook ??= atExit(killLiveSync);
    child.once('exit', () => {
      this.#children.delete(child);
      live.delete(child);
      if (live.size === 0) {
        unregisterExitHook?.();
        unregisterExitHook = undefined;
      }
    });
    return child;
  }

  /** Run a command to completion, with a hard timeout. A non-zero exit resolves; see runChecked(). */
  run(cmd: string, args: readonly string[] = [], opts: RunOptions = {}): Promise<ExecResult> {
    this.#assertOpen('run');
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const maxBuffer = opts.maxBuffer ?? DEFAULT_MAX_BUFFER;
    const child = this.spawn(cmd, args, {
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      ...(opts.cwd !== undefined && { cwd: opts.cwd }),
      ...(opts.env !== undefined && { env: opts.env }),
    });
    return new Promise<ExecResult>((resolve, reject) => {
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let outBytes = 0;
      let errBytes = 0;
      let failure: [CommandFailure, string] | undefined;
      const result = (code: number | null, signal: NodeJS.Signals | null): ExecResult => ({
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        code,
        signal,
      });
      const fail = (reason: CommandFailure, detail: string): void => {
        failure ??= [reason, detail];
        signalChild(child, 'SIGKILL');
      };
      const timer = setTimeout(() => fail('timeout', `timed out after ${timeoutMs} ms, killed`), timeoutMs);
      child.stdout?.on('data', (chunk: Buffer) => {
        outBytes += chunk.length;
        if (outBytes > maxBuffer) fail('maxBuffer', `stdout passed ${maxBuffer} bytes, killed`);
        else out.push(chunk);
      });
      child.stderr?.on('data', (chunk: Buffer) => {
        errBytes += chunk.length;
        if (errBytes > maxBuffer) fail('maxBuffer', `stderr passed ${maxBuffer} bytes, killed`);
        else err.push(chunk);
      });
      child.once('error', (e) => {
        if (child.pid !== undefined) return;
        clearTimeout(timer);
        reject(new CommandError('spawn', cmd, args, result(null, null), e.message));
      });
      child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
        clearTimeout(timer);
        if (failure) reject(new CommandError(failure[0], cmd, args, result(code, signal), failure[1]));
        else resolve(result(code, signal));
      });
      if (opts.input !== undefined && child.stdin) {
        // A child that exits without reading its input makes this write fail with EPIPE; its exit status tells.
        child.stdin.on('error', () => {});
        child.stdin.end(opts.input);
      }
    });
  }

  /** run(), then throw a CommandError unless the exit status is 0. */
  async runChecked(cmd: string, args: readonly string[] = [], opts: RunOptions = {}): Promise<ExecResult> {
    const result = await this.run(cmd, args, opts);
    if (result.code !== 0) {
      const how = result.code === null ? `killed by ${result.signal}` : `exited with status ${result.code}`;
      throw new CommandError('exit', cmd, args, result, how);
    }
    return result;
  }

  /** Stop every live child (SIGTERM to its group, SIGKILL after `graceMs`). Safe to call twice. */
  close(graceMs = DEFAULT_GRACE_MS): Promise<void> {
    this.#closing ??= Promise.all(this.children.map((c) => stopProcess(c, graceMs))).then(() => {});
    return this.#closing;
  }

  /** SIGKILL every live child's group now; for synchronous exit paths. */
  killAllSync(): void {
    for (const child of this.#children) signalChild(child, 'SIGKILL');
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #assertOpen(op: string): void {
    if (this.#closing) throw new TypeError(`${this.label}: ${op} after close`);
  }
}

/** The tracker behind the module-level spawnTracked/run/runChecked; its children are killed at process exit. */
export const processes = new ProcessTracker('testkit processes');

export function spawnTracked(cmd: string, args: readonly string[] = [], opts: SpawnOptions = {}): ChildProcess {
  return processes.spawn(cmd, args, opts);
}

export function run(cmd: string, args: readonly string[] = [], opts: RunOptions = {}): Promise<ExecResult> {
  return processes.run(cmd, args, opts);
}

export function runChecked(cmd: string, args: readonly string[] = [], opts: RunOptions = {}): Promise<ExecResult> {
  return processes.runChecked(cmd, args, opts);
}

export function hasExited(child: ChildProcess): boolean {
  return child.pid === undefined || child.exitCode !== null || child.signalCode !== null;
}

/** Resolves when the child exits; rejects after `timeoutMs`. */
export function waitForExit(child: ChildProcess, timeoutMs: number): Promise<ExecResult['code']> {
  if (hasExited(child)) return Promise.resolve(child.exitCode);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      reject(new Error(`pid ${child.pid} (${child.spawnfile}) still running after ${timeoutMs} ms`));
    }, timeoutMs);
    const onExit = (code: number | null): void => {
      clearTimeout(timer);
      resolve(code);
    };
    child.once('exit', onExit);
  });
}

/** SIGTERM, then SIGKILL if the child is still there after `graceMs`. Resolves once it has exited. */
export async function stopProcess(child: ChildProcess, graceMs = DEFAULT_GRACE_MS): Promise<void> {
  if (hasExited(child)) return;
  const exited = waitForExit(child, graceMs).then(() => true, () => false);
  signalChild(child, 'SIGTERM');
  if (await exited) return;
  signalChild(child, 'SIGKILL');
  // SIGKILL cannot be ignored; a child stuck in uninterruptible sleep is worth an error, not a hang.
  await waitForExit(child, 5000);
}

/** Signal the child's whole process group when it leads one, else the child. Never throws. */
export function signalChild(child: ChildProcess, signal: NodeJS.Signals): void {
  if (hasExited(child) || child.pid === undefined) return;
  try {
    if (groupLeaders.has(child)) process.kill(-child.pid, signal);
    else child.kill(signal);
  } catch {
    // ESRCH: it exited between the check and the signal.
  }
}

function killLiveSync(): void {
  for (const child of live) signalChild(child, 'SIGKILL');
}

export type OutputStream = 'stdout' | 'stderr' | 'both';

/**
 * Resolve with the first line of the child's output that matches `re`. For children started by a tracker,
 * lines printed before the call count too; for others, only lines after it.
 */
export function waitForLine(
  child: ChildProcess,
  re: RegExp,
  timeoutMs: number,
  opts: { stream?: OutputStream } = {},
): Promise<RegExpExecArray> {
  const log = logs.get(child) ?? attachLog(child);
  const stream = opts.stream ?? 'both';
  return new Promise((resolve, reject) => {
    const check = (line: OutputLine): boolean => {
      if (stream !== 'both' && line.stream !== stream) return false;
      re.lastIndex = 0; // a /g or /y regex carries state between exec() calls
      const m = re.exec(line.text);
      if (m === null) return false;
      finish();
      resolve(m);
      return true;
    };
    const onEnd = (): void => {
      finish();
      reject(new Error(`${describe(child)} ended before printing a line matching ${re}${log.tailText()}`));
    };
    const timer = setTimeout(() => {
      finish();
      reject(new Error(`${describe(child)} printed no line matching ${re} within ${timeoutMs} ms${log.tailText()}`));
    }, timeoutMs);
    const finish = (): void => {
      clearTimeout(timer);
      log.lineListeners.delete(check);
      log.endListeners.delete(onEnd);
    };
    if (log.lines.some(check)) return;
    if (log.ended) return onEnd();
    log.lineListeners.add(check);
    log.endListeners.add(onEnd);
  });
}

/** Output a tracked child has printed so far (the last lines of it, for a long-running child). */
export function capturedOutput(child: ChildProcess): { stdout: string; stderr: string } {
  const log = logs.get(child);
  const pick = (s: 'stdout' | 'stderr'): string =>
    (log?.lines ?? []).filter((l) => l.stream === s).map((l) => `${l.text}\n`).join('');
  return { stdout: pick('stdout'), stderr: pick('stderr') };
}

/**
 * Resolve once a TCP connect to host:port succeeds, retrying every `intervalMs` until `timeoutMs`.
 * Only for addresses the traffic rules allow from here: loopback or a namespace the test made.
 */
export async function waitForPort(host: string, port: number, timeoutMs: number, intervalMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    try {
      await tryConnect(host, port, Math.min(left, 1000));
      return;
    } catch (e) {
      lastError = e;
    }
    await sleep(Math.min(intervalMs, Math.max(0, deadline - Date.now())));
  }
  const why = lastError instanceof Error ? `: ${lastError.message}` : '';
  throw new Error(`nothing accepted on ${host}:${port} within ${timeoutMs} ms${why}`);
}

function tryConnect(host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`connect timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.destroy();
      resolve();
    });
    sock.once('error', (e) => {
      clearTimeout(timer);
      sock.destroy();
      reject(e);
    });
  });
}

/** True while `pid` exists and is not a zombie (an exited child nobody has reaped yet). */
export function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The state letter follows the command name, which is in parentheses and may itself contain ') '.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Open file descriptors of this process; compare two counts to find a leak. */
export function fdCount(): number {
  // Listing /proc/self/fd opens one more fd, which shows up in the listing.
  return readdirSync('/proc/self/fd').length - 1;
}

/** Each open fd and what it points at ('anon_inode:bpf-map', 'socket:[123]', a path), to name a leak. */
export function openFds(): { fd: number; target: string }[] {
  const fds: { fd: number; target: string }[] = [];
  for (const entry of readdirSync('/proc/self/fd')) {
    try {
      fds.push({ fd: Number(entry), target: readlinkSync(`/proc/self/fd/${entry}`) });
    } catch {
      // The directory fd used for the listing is closed by now.
    }
  }
  return fds;
}

interface OutputLine {
  stream: 'stdout' | 'stderr';
  text: string;
}

class OutputLog {
  readonly lines: OutputLine[] = [];
  readonly lineListeners = new Set<(line: OutputLine) => boolean>();
  readonly endListeners = new Set<() => void>();
  ended = false;

  constructor(child: ChildProcess) {
    let open = 0;
    for (const stream of ['stdout', 'stderr'] as const) {
      const readable = child[stream];
      if (!readable) continue;
      open++;
      const decoder = new StringDecoder('utf8');
      let partial = '';
      const emit = (text: string): void => {
        const line = { stream, text: text.replace(/\r$/, '') };
        this.lines.push(line);
        if (this.lines.length > LOG_MAX_LINES) this.lines.shift();
        for (const listener of [...this.lineListeners]) listener(line);
      };
      readable.on('data', (chunk: Buffer) => {
        const parts = (partial + decoder.write(chunk)).split('\n');
        partial = parts.pop() ?? '';
        parts.forEach(emit);
      });
      readable.once('close', () => {
        const rest = partial + decoder.end();
        if (rest !== '') emit(rest);
        if (--open === 0) this.#end();
      });
    }
    if (open === 0) child.once('exit', () => this.#end());
  }

  tailText(): string {
    if (this.lines.length === 0) return ' (no output)';
    return `; last output:\n${this.lines.slice(-20).map((l) => `  ${l.stream}: ${l.text}`).join('\n')}`;
  }

  #end(): void {
    this.ended = true;
    for (const listener of [...this.endListeners]) listener();
  }
}

function attachLog(child: ChildProcess): OutputLog {
  const log = new OutputLog(child);
  logs.set(child, log);
  return log;
}

function describe(child: ChildProcess): string {
  return `pid ${child.pid} (${child.spawnargs.join(' ')})`;
}

function lastLines(text: string, n: number): string {
  const lines = text.split('\n');
  return (lines.length > n ? ['…', ...lines.slice(-n)] : lines).join('\n');
}
