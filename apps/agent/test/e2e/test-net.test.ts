// testNet(): address blocks claimed per process, so that e2e runs of two checkouts at once never share one.
import { existsSync } from 'node:fs';

import { expect, it } from 'vitest';
import { describePrivileged, run } from '@mesh/testkit';

import { testNet } from './harness.js';

describePrivileged('testNet', () => {
  it('gives each call a block of its own, held against other processes while this one lives', async () => {
    const a = testNet();
    const b = testNet();
    expect(a).toMatch(/^127\.(1[1-9]\d)$/);
    expect(b).toMatch(/^127\.(1[1-9]\d)$/);
    expect(b).not.toBe(a);
    // Another process (flock(1), as a second checkout's test would) cannot take either block.
    for (const net of [a, b]) {
      const file = `/run/mesh-test-nets/${net}`;
      expect(existsSync(file)).toBe(true);
      const r = await run('flock', ['-n', file, 'true'], { timeoutMs: 10_000 });
      expect(r.code, `${net} taken by another process`).not.toBe(0);
    }
  });
});
