// The grace period the split table waits for before it deletes a replaced version's endpoint slots
// (waitForPrograms, a map-in-map update: the kernel's synchronize_rcu): it ends only after every program run that
// began before it. A test program (split_hold) is held inside one run for HOLD_MS by BPF_PROG_TEST_RUN in a child
// process; a grace period asked for during that run resolves after the run ended, not before.
import { BPFFS, waitForPrograms, waitForProgramsSync } from '@mesh/bpf';
import { describePrivileged, uniqueName, waitForExit } from '@mesh/testkit';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';

import { holdRun, now } from '../hold.js';

const HOLD_MS = 1000;
const dir = join(BPFFS, uniqueName('grace', 40));

describePrivileged('grace period for running programs', () => {
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it(`waitForPrograms() resolves after a program run that began before it (held ${HOLD_MS} ms), not before`, async () => {
    mkdirSync(dir, { recursive: true });
    const { child, state, result } = await holdRun(dir, '', HOLD_MS);
    try {
      const asked = now();
      await waitForPrograms();
      const resolved = now();
      const r = await result;
      // The run began before the grace period was asked for, and it ended before the grace period did.
      expect(BigInt(r.began)).toBeLessThan(asked);
      expect(BigInt(r.ended)).toBeGreaterThan(asked);
      expect(resolved).toBeGreaterThanOrEqual(BigInt(r.ended));
      await waitForExit(child, 30_000);
      // Without a running program it is short (a grace period: milliseconds).
      const t0 = performance.now();
      waitForProgramsSync();
      expect(performance.now() - t0).toBeLessThan(HOLD_MS * 10);
    } finally {
      state.close();
    }
  }, 120_000);
});
