// The histogram bounds and the counter enums that the BPF programs and user space share come from one source,
// bpf/include/shared.json, generated into C headers (build/bpf/*_gen.h) and TS modules: nothing restates them.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

import { BUCKET_BOUNDS_S, counterNames, HTTP_BUCKETS } from '../../src/maps.js';

const repo = fileURLToPath(new URL('../../../../', import.meta.url));
const read = (p: string) => readFileSync(repo + p, 'utf8');

describe('constants shared by BPF and user space', () => {
  const shared = JSON.parse(read('bpf/include/shared.json')) as {
    http: { bucketBoundsSeconds: number[]; counters: { names: { name: string }[] } };
  };

  it('user space reads them from the source', () => {
    expect(BUCKET_BOUNDS_S).toEqual(shared.http.bucketBoundsSeconds);
    expect(HTTP_BUCKETS).toBe(shared.http.bucketBoundsSeconds.length + 1);
    expect(counterNames).toEqual(shared.http.counters.names.map((c) => c.name));
  });

  it('the C sources do not restate them', () => {
    expect(read('bpf/include/http.h')).not.toMatch(/HTTP_C_NOT_HTTP|#define HTTP_BOUNDS/);
    expect(read('bpf/metrics/http.bpf.c')).not.toMatch(/750 \* ms|7500/);
    expect(read('packages/metrics/src/datapath.ts')).not.toMatch(/new Array(<number>)?\(15\)/);
  });
});

describe('http_bucket_of (build/bpf/http_gen.h)', () => {
  it('puts a duration in the bucket whose bounds hold it, as the exporter reads them', () => {
    const header = readFileSync(repo + 'build/bpf/http_gen.h', 'utf8');
    const expr = /http_bucket_of\(__u64 d\)\s*\{\s*return ([\s\S]*?);\s*\}/.exec(header)?.[1];
    expect(expr).toBeDefined();
    // The C expression is comparisons and ternaries only: it evaluates the same in JS over bigints.
    const bucketOf = new Function('d', `return ${expr!.replace(/(\d+)ULL/g, '$1n')};`) as (d: bigint) => number;
    const boundsNs = BUCKET_BOUNDS_S.map((s) => BigInt(Math.round(s * 1e9)));
    const expected = (d: bigint) => {
      const i = boundsNs.findIndex((b) => d <= b);
      return i < 0 ? HTTP_BUCKETS - 1 : i;
    };
    const samples = [0n, 1n, ...boundsNs.flatMap((b) => [b - 1n, b, b + 1n]), 10n ** 12n, 2n ** 63n];
    for (const d of samples) expect([d, bucketOf(d)]).toEqual([d, expected(d)]);
  });
});
