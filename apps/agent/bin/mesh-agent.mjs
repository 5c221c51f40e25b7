#!/usr/bin/env -S node --max-semi-space-size=1 --optimize-for-size --no-sparkplug
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

// Memory: a small young generation (the shebang's flag: run this file, not `node` on it, to get it), and a gc()
// the agent calls after each config apply (parsing and compiling a big config leaves tens of MB of garbage that
// V8 would otherwise keep as heap for a long while). --optimize-for-size is turned off while the config is big
// (src/heap.ts).
setFlagsFromString('--expose-gc');
globalThis.gc ??= runInNewContext('gc');

const { main } = await import('../dist/cli/agent.js');
// Exit explicitly: the code is the contract with scripts, not whatever handles are left open.
process.exit(await main(process.argv.slice(2)));
