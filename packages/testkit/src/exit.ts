// Last-resort cleanup for resources a test forgot to close, run synchronously when the process ends.

type Cleanup = () => void;

const cleanups = new Set<Cleanup>();
// vitest stops its fork workers with SIGTERM, which skips 'exit' unless someone listens for the signal.
const SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];
let installed = false;

/**
 * Run `fn` when the process exits or is stopped by SIGTERM/SIGINT/SIGHUP, newest first.
 * `fn` must be synchronous. Returns a function that unregisters it (call it once the resource is closed).
 */
export function atExit(fn: Cleanup): () => void {
  cleanups.add(fn);
  install();
  return () => {
    cleanups.delete(fn);
    if (cleanups.size === 0) uninstall();
  };
}

function runAll(): void {
  for (const fn of [...cleanups].reverse()) {
    cleanups.delete(fn);
    try {
      fn();
    } catch {
      // Keep going: one stuck resource must not leave the others behind.
    }
  }
}

function onSignal(signal: NodeJS.Signals): void {
  runAll();
  uninstall();
  // With our listener gone and no other, re-raising gets the default action: die by this signal.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', runAll);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstall(): void {
  if (!installed) return;
  installed = false;
  process.off('exit', runAll);
  for (const s of SIGNALS) process.off(s, onSignal);
}
