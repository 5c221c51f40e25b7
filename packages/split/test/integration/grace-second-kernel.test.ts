// The grace period the split table waits for (waitForPrograms: a map-in-map update) on the second kernel, Debian's
// 6.1 in qemu (../shared/tools/guest-kernel): there the kernel waits after every map-in-map update, not only after a
// successful one (kernel/bpf/syscall.c, maybe_wait_bpf_programs). A run of split_hold is held 1 s; a plain map
// update returns while it runs, a grace period only after it ended (fixtures/grace-check.mjs).
import { describePrivileged, run } from '@mesh/testkit';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const repo = fileURLToPath(new URL('../../../../', import.meta.url));
const guest = fileURLToPath(new URL('../../../../../shared/tools/guest-kernel', import.meta.url));

describePrivileged('grace period on a second kernel (6.1 guest)', () => {
  it('a plain map update returns while a program run is held; waitForPrograms() only after it ended', async () => {
    expect(existsSync(guest), `${guest} (DEVELOPERS.md, Tests: the qemu route to a second kernel)`).toBe(true);
    // The result comes back through a file in the shared repository directory (the guest's only writable share).
    const dir = mkdtempSync(join(repo, 'build', 'guest-'));
    const result = join(dir, 'result.json');
    try {
      const r = await run(guest, ['--', 'node', 'packages/split/test/fixtures/grace-check.mjs', result], { cwd: repo, timeoutMs: 240_000 });
      expect(existsSync(result), `${r.stdout}\n${r.stderr}`).toBe(true);
      const out = JSON.parse(readFileSync(result, 'utf8')) as {
        kernel: string;
        plainUpdate: { askedAfterBeganMs: number; returnedAfterEndedMs: number };
        waitForPrograms: { askedAfterBeganMs: number; returnedAfterEndedMs: number };
      };
      expect(out.kernel).toMatch(/^6\.1\./);
      // The hold spans what is measured: a plain update, asked for during the run, returns before it ends.
      expect(out.plainUpdate.returnedAfterEndedMs).toBeLessThan(0);
      // A grace period asked for during the run returns after it.
      expect(out.waitForPrograms.askedAfterBeganMs).toBeGreaterThanOrEqual(0);
      expect(out.waitForPrograms.returnedAfterEndedMs).toBeGreaterThanOrEqual(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
