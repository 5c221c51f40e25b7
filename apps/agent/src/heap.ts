/**
 * V8's --optimize-for-size (bin/mesh-agent.mjs turns it on) keeps the agent of a small config small (~18 MiB
 * less RSS with 1,000 services), but collects in its most thorough mode all the time: with a 13 MB config
 * (50,000 Services) parsing and compiling took 2-3x the CPU, in 77 full collections instead of 7, which held the
 * event loop for up to ~2 s. The agent keeps it while its config is small and turns it off while it is big
 * (V8 reads the flag at each collection).
 */
import { setFlagsFromString } from 'node:v8';

/** Above this much config text, speed over size. The 1,000-service config of bench:agent is 1 MB. */
export const BIG_CONFIG_BYTES = 4 * 2 ** 20;

let big = false;

/** Sets the heap's mode for a config of `bytes`; does nothing when the mode does not change. */
export function heapModeFor(bytes: number): void {
  if (bytes > BIG_CONFIG_BYTES === big) return;
  big = bytes > BIG_CONFIG_BYTES;
  setFlagsFromString(big ? '--no-optimize-for-size' : '--optimize-for-size');
}
