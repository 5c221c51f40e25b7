#!/usr/bin/env -S node --max-semi-space-size=4 --no-sparkplug
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

// Memory: the heap's mode follows the config's size (src/heap.ts): small from the start (--optimize-for-size, a
// young generation of 1 MB semi-spaces), a young generation that may grow to the shebang's 4 MB semi-spaces
// while the config is big. V8 sizes the young generation's bounds at start: run this file, not `node` on it.
// And a gc() the agent calls after each config apply (parsing and compiling a big config leaves tens of MB of
// garbage that V8 would otherwise keep as heap for a long while).
setFlagsFromString('--expose-gc');
globalThis.gc ??= runInNewContext('gc');
(await import('../dist/heap.js')).heapModeFor(0);

const { main } = await import('../dist/cli/agent.js');
// Exit explicitly: the code is the contract with scripts, not whatever handles are left open.
process.exit(await main(process.argv.slice(2)));
