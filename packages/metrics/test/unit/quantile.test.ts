// histogramQuantile over the OpenTelemetry buckets, as histogram_quantile() computes it.
import { describe, expect, it } from 'vitest';

import { BUCKET_BOUNDS_S, histogramQuantile } from '../../src/index.js';

const at = (counts: Record<number, number>) => Array.from({ length: BUCKET_BOUNDS_S.length + 1 }, (_, i) => counts[i] ?? 0);

describe('histogramQuantile', () => {
  it('interpolates within the bucket the rank falls in', () => {
    // 10 in (0, 5 ms], 10 in (25 ms, 50 ms]: the median is the first bucket's top, p75 halfway into the fourth.
    expect(histogramQuantile(0.5, at({ 0: 10, 3: 10 }))).toBeCloseTo(0.005, 9);
    expect(histogramQuantile(0.75, at({ 0: 10, 3: 10 }))).toBeCloseTo(0.0375, 9);
  });

  it('skips empty buckets, gives the last finite bound in +Inf, and nothing for an empty histogram', () => {
    expect(histogramQuantile(0.5, at({ 2: 4 }))).toBeCloseTo(0.0175, 9);
    expect(histogramQuantile(0, at({ 2: 4 }))).toBe(0.01);
    expect(histogramQuantile(0.99, at({ 0: 1, [BUCKET_BOUNDS_S.length]: 99 }))).toBe(10);
    expect(histogramQuantile(0.5, at({}))).toBeUndefined();
  });
});
