// The README's example runs as a user would run it and prints the counter it read from the kernel.
import { describePrivileged, run } from '@mesh/testkit';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const repo = fileURLToPath(new URL('../../../../', import.meta.url));

describePrivileged('examples/tc-counter.mjs', () => {
  it('test-runs 1,000 packets and prints the counters read back from the maps', async () => {
    const r = await run(process.execPath, ['examples/tc-counter.mjs'], { cwd: repo, timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/verdicts\[PASS\] read from the kernel map: 1000 \(sent 1000\)/);
    expect(r.stdout).toMatch(/port_stats ipv4\/udp\/53: 600 packets, 44400 bytes/);
    expect(r.stdout).toMatch(/port_stats ipv4\/udp\/8125: 400 packets, 96800 bytes/);
  });
});
