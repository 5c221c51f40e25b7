/**
 * Long computations over a big config (validation, endpoints, compile, the table diff) are written once, as
 * generators that yield every few hundred objects. runSteps() runs one to its end at once; runStepsAsync()
 * runs it a slice of time at a time and lets the event loop turn in between, so an agent applying 50,000
 * services still answers /healthz (a liveness probe) within milliseconds.
 */
import { runSliced, runSteps as runStepsSync } from '@mesh/bpf';

export type Steps<T> = Generator<void, T, void>;

/** Runs to completion synchronously. */
export const runSteps: <T>(steps: Steps<T>) => T = runStepsSync;

/** Runs `sliceMs` of work at a time, then lets pending I/O and timers run (setImmediate) before the next slice. */
export const runStepsAsync: <T>(steps: Steps<T>, sliceMs?: number) => Promise<T> = runSliced;

/** A counter for loops: true every `every` calls, when the loop should yield. */
export function every(n = 256): () => boolean {
  let i = 0;
  return () => ++i % n === 0;
}
