// The heap's mode (src/heap.ts) under mesh-agent's own node flags (its shebang): a small config keeps the young
// generation at its least (RSS), a big one lets it grow (fewer scavenges). Counted in scavenges and bytes of
// the young generation, not milliseconds. Runs the built heap module (dist), as bin/mesh-agent.mjs does.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { describe, expect, it } from 'vitest';

const app = join(import.meta.dirname, '../..');
const shebang = readFileSync(join(app, 'bin/mesh-agent.mjs'), 'utf8').split('\n')[0]!;
const flags = shebang.replace(/^#!\/usr\/bin\/env -S node\s*/, '').split(/\s+/).filter(Boolean);

// Allocates ~100 MB in small objects, one in 20 kept to the end (what a parse and compile keep); reports the
// scavenges it took and the young generation's size after.
const child = `
import { getHeapSpaceStatistics } from 'node:v8';
import { PerformanceObserver } from 'node:perf_hooks';
const { heapModeFor, BIG_CONFIG_BYTES } = await import(${JSON.stringify(pathToFileURL(join(app, 'dist/heap.js')).href)});
let scavenges = 0;
new PerformanceObserver((l) => { for (const e of l.getEntries()) if (e.detail.kind === 1) scavenges++; }).observe({ entryTypes: ['gc'] });
async function work() {
  scavenges = 0;
  const keep = [];
  for (let i = 0; i < 1_500_000; i++) { const o = { a: i, b: 'x' + i, c: [i] }; if (i % 20 === 0) keep.push(o); }
  await new Promise((r) => setTimeout(r, 20));
  return { scavenges, young: getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size, kept: keep.length };
}
heapModeFor(0);
const small = await work();
heapModeFor(BIG_CONFIG_BYTES + 1);
const big = await work();
console.log(JSON.stringify({ small, big }));
`;

describe('heap mode', () => {
  it('a small config keeps the young generation at 1 MB semi-spaces; a big one lets it grow (a quarter of the scavenges)', () => {
    const r = spawnSync(process.execPath, [...flags, '--input-type=module', '-e', child], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const { small, big } = JSON.parse(r.stdout) as Record<'small' | 'big', { scavenges: number; young: number }>;
    const MB = 2 ** 20;
    expect(small.young, 'young generation (both semi-spaces) with a small config').toBeLessThanOrEqual(2 * MB);
    expect(big.young, 'young generation with a big config').toBeGreaterThanOrEqual(8 * MB);
    expect(big.scavenges, `scavenges with a big config (${small.scavenges} with a small one)`).toBeLessThan(small.scavenges / 2);
  });
});
