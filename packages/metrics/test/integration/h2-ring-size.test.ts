// The HTTP/2 ring (h2_events) is 1 MiB by default (it was 4 MiB: bench:mesh counts its pages in the agent's
// memory). Maps pinned by a build or a config with another ring size are adopted, the ring alone made anew:
// the counts in the other maps survive the upgrade.
import { describePrivileged, ensureTool, runChecked, uniqueName } from '@mesh/testkit';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';

import { BPFFS } from '@mesh/bpf';
import { MetricsDatapath } from '../../src/index.js';

const dir = join(BPFFS, uniqueName('h2ring', 40));

async function pinned(name: string): Promise<{ id: number; max_entries: number }> {
  const r = await runChecked(ensureTool('bpftool'), ['-j', 'map', 'show', 'pinned', join(dir, name)], { timeoutMs: 10_000 });
  return JSON.parse(r.stdout);
}

describePrivileged('h2_events ring size', () => {
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('defaults to 1 MiB; a pinned 4 MiB ring is replaced, the other pinned maps adopted', async () => {
    mkdirSync(dir, { recursive: true });
    const resized: string[][] = [];
    const before = MetricsDatapath.load({ pinDir: dir, h2RingBytes: 4 << 20 });
    before.close();
    expect((await pinned('h2_events')).max_entries).toBe(4 << 20);
    const requests = await pinned('http_requests');

    const after = MetricsDatapath.load({ pinDir: dir, onResize: (maps) => resized.push(maps) });
    try {
      expect((await pinned('h2_events')).max_entries).toBe(1 << 20);
      expect(resized).toEqual([['h2_events']]);
      // Adopted, not made anew: the same kernel map, counts kept.
      expect((await pinned('http_requests')).id).toBe(requests.id);
    } finally {
      after.close();
    }
  });
});
