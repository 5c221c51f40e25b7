// Percentiles from histogram buckets and windowed rates, as meshctl stat shows them.
import type { HttpSample } from '@mesh/metrics';
import { BUCKET_BOUNDS_S } from '@mesh/metrics';
import { afterEach, describe, expect, it, vi } from 'vitest';

import { PairStats, quantile } from '../../src/stats.js';

const buckets = (at: Record<number, number>) => {
  const b = new Array<number>(BUCKET_BOUNDS_S.length + 1).fill(0);
  for (const [i, n] of Object.entries(at)) b[Number(i)] = n;
  return b;
};

describe('quantile', () => {
  it('interpolates within the bucket holding the rank (histogram_quantile)', () => {
    // 100 observations, all in the first bucket (0, 0.005]: the median is its middle.
    expect(quantile(0.5, buckets({ 0: 100 }))).toBeCloseTo(0.0025, 9);
    // 50 in bucket 0 and 50 in bucket 1 (0.005, 0.01]: p75 is halfway through bucket 1.
    expect(quantile(0.75, buckets({ 0: 50, 1: 50 }))).toBeCloseTo(0.0075, 9);
    expect(quantile(0.5, buckets({ 0: 50, 1: 50 }))).toBeCloseTo(0.005, 9);
  });
  it('the +Inf bucket yields the last finite bound; no observations yield undefined', () => {
    expect(quantile(0.99, buckets({ [BUCKET_BOUNDS_S.length]: 10 }))).toBe(BUCKET_BOUNDS_S.at(-1));
    expect(quantile(0.5, buckets({}))).toBeUndefined();
  });
});

describe('PairStats', () => {
  const sampleOf = (count: number, status: number, bucketAt: Record<number, number>): HttpSample => ({
    direction: 'client', cgroupId: 7n, remoteIp: '127.0.0.2', port: 80, method: 'GET', status, count, sumSeconds: 0, buckets: buckets(bucketAt),
  });
  const resolver = () => ({
    local: (id: bigint) => (id === 7n ? { workload: 'web', namespace: 'shop' } : undefined),
    peer: () => ({ workload: 'db', namespace: 'shop', service: 'db' }),
  });

  it('differences the window: rate, success rate and percentiles of the new requests only', () => {
    let current: HttpSample[] = [sampleOf(1000, 200, { 0: 1000 })];
    const s = new PairStats(() => ({ http: current }), resolver);
    s.sample(0);
    // In 10 s: 90 more successes (bucket 2) and 10 failures (bucket 3).
    current = [sampleOf(1090, 200, { 0: 1000, 2: 90 }), sampleOf(10, 503, { 3: 10 })];
    s.sample(10_000);
    const [p] = s.query(10_000).pairs;
    expect(p).toMatchObject({ direction: 'client', source: 'shop/web', destination: 'shop/db', service: 'db', requests: 100, rps: 10, successRate: 0.9 });
    // p50 is inside bucket 2 (0.01, 0.025]; p99 inside bucket 3 (0.025, 0.05].
    expect(p!.p50Ms).toBeGreaterThan(10);
    expect(p!.p50Ms).toBeLessThanOrEqual(25);
    expect(p!.p99Ms).toBeGreaterThan(25);
    expect(p!.p99Ms).toBeLessThanOrEqual(50);
  });

  it('sorts its pairs without localeCompare (ICU collation data would cost the agent ~2.7 MiB of RSS)', () => {
    const at = (direction: 'client' | 'server', port: number): HttpSample => ({ ...sampleOf(10, 200, { 0: 10 }), direction, port });
    const s = new PairStats(() => ({ http: [at('server', 80), at('client', 80)] }), resolver);
    s.sample(0);
    const localeCompare = String.prototype.localeCompare;
    String.prototype.localeCompare = () => {
      throw new Error('localeCompare called');
    };
    try {
      expect(s.query(10_000).pairs.map((p) => p.direction)).toEqual(['client', 'server']);
    } finally {
      String.prototype.localeCompare = localeCompare;
    }
  });

  it('drops samples older than it keeps, and a counter reset reads as zero, not negative', () => {
    let current: HttpSample[] = [sampleOf(500, 200, { 0: 500 })];
    const s = new PairStats(() => ({ http: current }), resolver, 5_000);
    s.sample(0);
    current = [sampleOf(10, 200, { 0: 10 })];
    s.sample(3_000);
    expect(s.query(10_000).pairs[0]!.requests).toBe(0);
    s.sample(7_000); // keeps 5 s: the sample at 0 goes, the one at 3 s stays
    expect(s.query(60_000).windowSeconds).toBe(4);
  });

  it('a window starts at the sample nearest to it, even when the timer drifted past it', () => {
    const s = new PairStats(() => ({ http: [sampleOf(1, 200, { 0: 1 })] }), resolver);
    for (const at of [0, 1_004, 2_009, 3_013, 4_018, 5_022]) s.sample(at);
    expect(s.query(3_000).windowSeconds).toBe(3); // the window should start at 2,022: the sample at 2,009 is nearest
    expect(s.query(10_000).windowSeconds).toBe(5); // as much as was sampled
  });

  it('rows per protocol, gRPC rows per method; gRPC succeeds only with grpc-status OK, an HTTP/2 reset fails', () => {
    const side = { direction: 'client' as const, cgroupId: 7n, remoteIp: '127.0.0.2', port: 80, sumSeconds: 0, buckets: buckets({ 0: 1 }) };
    const s = new PairStats(
      () => ({
        http: [sampleOf(5, 200, { 0: 5 })],
        h2: [
          { ...side, method: 'GET', status: 200, errorType: '', count: 6 },
          { ...side, method: 'GET', status: 404, errorType: '', count: 2 },
          { ...side, method: 'GET', status: 200, errorType: 'CANCEL', count: 1 },
          { ...side, method: 'GET', status: 503, errorType: '', count: 1 },
        ],
        rpc: [
          { ...side, service: 'pkg.Svc', method: 'Get', grpcStatus: '0', errorType: '', count: 3 },
          { ...side, service: 'pkg.Svc', method: 'Get', grpcStatus: '5', errorType: '', count: 1 },
          { ...side, service: 'pkg.Svc', method: 'List', grpcStatus: '', errorType: 'CANCEL', count: 2 },
        ],
      }),
      resolver,
    );
    s.sample(0);
    expect(s.query(10_000).pairs.map((p) => [p.protocol, p.rpc, p.requests, p.successRate])).toEqual([
      ['gRPC', 'pkg.Svc/Get', 4, 0.75],
      ['gRPC', 'pkg.Svc/List', 2, 0],
      ['HTTP/1.1', '', 5, 1],
      ['HTTP/2', '', 10, 0.8],
    ]);
  });

  describe('sampling pace', () => {
    afterEach(() => vi.useRealTimers());

    it('every 10 s unwatched, every 2 s for two minutes after a query, and once at each query', () => {
      vi.useFakeTimers();
      let reads = 0;
      const s = new PairStats(() => (reads++, { http: [sampleOf(1, 200, { 0: 1 })] }), resolver);
      s.start();
      expect(reads).toBe(1);
      vi.advanceTimersByTime(31_000);
      expect(reads).toBe(4); // 10, 20, 30 s
      s.query(10_000);
      expect(reads).toBe(5); // a fresh sample ends the window
      vi.advanceTimersByTime(10_000);
      expect(reads).toBe(10); // every 2 s while watched
      vi.advanceTimersByTime(120_000);
      const watchedUntil = reads;
      vi.advanceTimersByTime(60_000);
      expect(reads - watchedUntil).toBeLessThanOrEqual(7); // back to every 10 s
      s.stop();
    });

    it('a wall clock stepped back does not freeze the stats: a query still ends its window with a fresh sample', () => {
      vi.useFakeTimers({ toFake: ['Date'] });
      let count = 10;
      const s = new PairStats(() => ({ http: [sampleOf(count, 200, { 0: count })] }), resolver);
      s.start();
      vi.setSystemTime(Date.now() - 3_600_000); // NTP steps the clock an hour back
      count = 30;
      const started = performance.now();
      while (performance.now() - started < 300); // the 250 ms a query waits before it samples again
      expect(s.query(60_000).pairs[0]!.requests).toBe(20);
      s.stop();
    });
  });
});
