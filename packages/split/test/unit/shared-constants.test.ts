// split's counter enum comes from bpf/include/shared.json, generated into build/bpf/split_gen.h and the TS
// module @mesh/split reads: nothing restates it.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

import { counterNames } from '../../src/maps.js';

const repo = fileURLToPath(new URL('../../../../', import.meta.url));
const read = (p: string) => readFileSync(repo + p, 'utf8');

describe('split counters shared by BPF and user space', () => {
  it('come from bpf/include/shared.json, not from a copy', () => {
    const shared = JSON.parse(read('bpf/include/shared.json')) as { split: { counters: { names: { name: string }[] } } };
    expect(counterNames).toEqual(shared.split.counters.names.map((c) => c.name));
    expect(read('bpf/include/split.h')).not.toMatch(/SPLIT_CONNECT_REWRITE/);
    expect(read('packages/split/src/maps.ts')).not.toMatch(/'connect_rewrite'/);
  });
});
