#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=1 --optimize-for-size
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

// Memory: a small young generation (the shebang's flag: run this file, not `node` on it, to get it), and a gc()
// the agent calls after each config apply (parsing and compiling a big config leaves tens of MB of garbage that
// V8 would otherwise keep as heap for a long while). --optimize-for-size is turned off while the config is big
// (src/heap.ts).
setFlagsFromString('--expose-gc');
globalThis.gc ??= runInNewContext('gc');
// MALLOC_ARENA_MAX=2 (the shebang): glibc gives each thread that allocates (libuv's pool running WebCrypto's
// key generation and signing, V8's helpers, the HTTP/2 drain) an arena of its own, which keeps what it once held;
// two arenas cut ~2 MiB of RSS (bench/README.md, bench:mesh memory). glibc has read it by now; the data plane the
// agent spawns is a program of its own and gets glibc's default.
if (process.env.MALLOC_ARENA_MAX === '2') delete process.env.MALLOC_ARENA_MAX;

const { main } = await import('../dist/cli/agent.js');
// Exit explicitly: the code is the contract with scripts, not whatever handles are left open.
process.exit(await main(process.argv.slice(2)));
