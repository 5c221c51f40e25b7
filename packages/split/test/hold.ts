// A program run held open (the split_hold test program, run by BPF_PROG_TEST_RUN in a child process): what a
// connect() slowed between reading a service entry and reading its endpoint slot would see.
import { codec as c, BpfMap } from '@mesh/bpf';
import { spawnTracked, waitForLine } from '@mesh/testkit';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const fixture = fileURLToPath(new URL('./fixtures/hold-reader.mjs', import.meta.url));

/** CLOCK_MONOTONIC in ns, the clock of bpf_ktime_get_ns. */
export const now = () => process.hrtime.bigint();

export interface HoldResult {
  began: string;
  read: string;
  ended: string;
  version: number;
  found: number;
}

/** Starts a run of split_hold (maps pinned in `pinDir`, the service key as hex or '', held `holdMs`) in a child;
 *  resolves once the run has begun (and read the entry, when there is one), with the child and its result. */
export async function holdRun(pinDir: string, keyHex: string, holdMs: number) {
  // A run before this one left its state pinned: the new run makes its own.
  for (const m of ['hold_state', 'hold_key']) rmSync(join(pinDir, m), { force: true });
  const child = spawnTracked(process.execPath, [fixture, pinDir, keyHex, String(holdMs)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const path = join(pinDir, 'hold_state');
  const deadline = Date.now() + 30_000;
  while (!existsSync(path)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error('the held run did not start');
    await sleep(1);
  }
  const state = BpfMap.openPinned(path, { key: c.u32, value: c.bytes(40) });
  const field = (o: number) => state.get(0)!.readBigUInt64LE(o);
  while (field(keyHex ? 16 : 8) === 0n) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error('the held run did not begin');
    await sleep(1);
  }
  const result = waitForLine(child, /^\{"began".*$/, 60_000).then(([l]) => JSON.parse(l) as HoldResult);
  return { child, state, field, result };
}

