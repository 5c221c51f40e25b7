import { BUCKET_BOUNDS_S } from './maps.js';

/**
 * The q-quantile (0..1) of a non-cumulative histogram over BUCKET_BOUNDS_S (+Inf last), in seconds: interpolated
 * within its bucket as Prometheus' histogram_quantile() does; in the +Inf bucket, the last finite bound.
 * Undefined for an empty histogram.
 */
export function histogramQuantile(q: number, buckets: readonly number[]): number | undefined {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (total <= 0) return undefined;
  const rank = q * total;
  let cum = 0;
  for (let i = 0; i < buckets.length; i++) {
    const n = buckets[i]!;
    if (cum + n >= rank && n > 0) {
      if (i >= BUCKET_BOUNDS_S.length) return BUCKET_BOUNDS_S.at(-1);
      const lo = i === 0 ? 0 : BUCKET_BOUNDS_S[i - 1]!;
      const hi = BUCKET_BOUNDS_S[i]!;
      return lo + (hi - lo) * ((rank - cum) / n);
    }
    cum += n;
  }
  return BUCKET_BOUNDS_S.at(-1);
}
