/**
 * The heap's mode follows the config's size. Small (the agent of a node with a few hundred pods): V8's
 * --optimize-for-size (~18 MiB less RSS with 1,000 services) and a young generation that stays at its least
 * (1 MB semi-spaces). Big: no --optimize-for-size (it collects in its most thorough mode all the time: a 13 MB
 * config, 50,000 Services, took 2-3x the CPU to parse and compile, in 77 full collections instead of 7) and a
 * young generation that may grow to the shebang's --max-semi-space-size (4 MB: a scale run of bench:agent made
 * ~2,900 scavenges with 1 MB semi-spaces, ~760 with 4 MB ones, and its apply took a third less CPU).
 * V8 reads both flags at run time (--optimize-for-size at each collection, the growth factor each time the
 * young generation would grow) but bounds the young generation at start: --optimize-for-size on the command
 * line would hold it at its least for good, and a growth factor there is not heeded (checked, Node 20), so
 * the shebang sets neither and bin/mesh-agent.mjs sets the small mode first thing.
 */
import { setFlagsFromString } from 'node:v8';

/** Above this much config text, speed over size. The 1,000-service config of bench:agent is 1 MB. */
export const BIG_CONFIG_BYTES = 4 * 2 ** 20;

let big: boolean | undefined;

/** Sets the heap's mode for a config of `bytes`; does nothing when the mode does not change. bin/mesh-agent.mjs
 *  sets the small one at start. */
export function heapModeFor(bytes: number): void {
  if (bytes > BIG_CONFIG_BYTES === big) return;
  big = bytes > BIG_CONFIG_BYTES;
  setFlagsFromString(big ? '--no-optimize-for-size' : '--optimize-for-size');
  // A growth factor of 1: a young generation that does not grow. 2 is V8's default.
  setFlagsFromString(big ? '--semi-space-growth-factor=2' : '--semi-space-growth-factor=1');
}
