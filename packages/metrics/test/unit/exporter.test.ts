// KernelMetrics over a fake MetricsSource: what a scrape shows for a given kernel snapshot, without the kernel.
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it, vi } from 'vitest';

import { KernelMetrics, type HttpSample, type MetricsSnapshot, type MetricsSource } from '../../src/index.js';

const buckets = (at: Record<number, number>) => {
  const b = new Array<number>(15).fill(0);
  for (const [i, n] of Object.entries(at)) b[Number(i)] = n;
  return b;
};
const http = (direction: 'client' | 'server', remoteIp: string, count: number, bucketAt: Record<number, number>, overflow = false): HttpSample => ({
  direction, cgroupId: overflow ? undefined : 7n, remoteIp, port: 80, method: 'GET', status: 200, count, sumSeconds: count * 0.001, buckets: buckets(bucketAt),
});
const counters = { not_http: 0, unparsed_status: 0, http_overflow: 0, tcp_overflow: 0, paired: 0, http2: 0, h2_drops: 0, h2_lost: 0, h2_wakeups: 0 };

function source(snap: () => MetricsSnapshot): MetricsSource & { reads: number } {
  const s = {
    reads: 0,
    read: () => (s.reads++, snap()),
    fill: () => ({ http_requests: { used: 1, max: 8192 } }),
  };
  return s;
}

async function scrape(opts: ConstructorParameters<typeof KernelMetrics>[1], src: MetricsSource) {
  const registry = new Registry();
  new KernelMetrics(src, opts).register(registry);
  return { registry, text: () => registry.metrics() };
}

/** The value of one sample line `name{labels} value` (labels given as a substring to look for). */
function value(text: string, name: string, labels = ''): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!line.includes(labels)) continue;
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

describe('KernelMetrics', () => {
  afterEach(() => vi.useRealTimers());

  it('HTTP/2 streams share the HTTP histograms with network_protocol_version="2" (HTTP/1.x: "1.1"), resets with error_type; gRPC calls go to rpc_*', async () => {
    const snap: MetricsSnapshot = { http: [http('server', '127.0.0.2', 10, { 0: 10 })], tcp: [], counters };
    const h2 = {
      http: [
        { ...http('server', '127.0.0.2', 7, { 1: 7 }), cgroupId: 7n, status: 503, errorType: '' },
        { ...http('server', '127.0.0.2', 2, { 1: 2 }), cgroupId: 7n, errorType: 'INTERNAL_ERROR' },
      ],
      rpc: [
        { direction: 'client' as const, cgroupId: 7n, remoteIp: '127.0.0.3', port: 50051, service: 'pkg.Echo', method: 'Say', grpcStatus: '5', errorType: '', count: 4, sumSeconds: 0.004, buckets: buckets({ 0: 4 }) },
      ],
      counters: { gaps: 0, lostDirections: 1, unparsedStreams: 3, orphanStreams: 0, untracked: 0, rpcMethodsCapped: 0, entries: 0, bytes: 0, records: 0, frames: 0 },
    };
    const out = await (await scrape({ cacheMs: 0 }, { ...source(() => snap), readH2: () => h2 })).text();
    expect(value(out, 'http_server_request_duration_seconds_count', 'http_response_status_code="200",source_workload="127.0.0.2"')).toBe(10);
    expect(out).toMatch(/^http_server_request_duration_seconds_count\{http_request_method="GET",http_response_status_code="200",[^}]*network_protocol_version="1.1"\} 10$/m);
    expect(out).toMatch(/^http_server_request_duration_seconds_count\{http_request_method="GET",http_response_status_code="503",[^}]*network_protocol_version="2"\} 7$/m);
    expect(out).toMatch(/^http_server_request_duration_seconds_count\{[^}]*http_response_status_code="200",[^}]*network_protocol_version="2",error_type="INTERNAL_ERROR"\} 2$/m);
    expect(out).toMatch(/^rpc_client_duration_seconds_count\{rpc_system="grpc",rpc_service="pkg.Echo",rpc_method="Say",rpc_grpc_status_code="5",source_workload="cgroup-7",[^}]*destination_workload="127.0.0.3"[^}]*\} 4$/m);
    expect(value(out, 'mesh_http2_unparsed_streams_total')).toBe(3);
    expect(value(out, 'mesh_http2_directions_unknown_total')).toBe(1);
  });

  it('two scrapes without traffic are identical, series overflow included', async () => {
    // Three label sets, room for two: the third's 5 requests go to the overflow series, once.
    const snap: MetricsSnapshot = {
      http: [http('client', '127.0.0.2', 10, { 0: 10 }), http('client', '127.0.0.3', 20, { 1: 20 }), http('client', '127.0.0.4', 5, { 2: 5 })],
      tcp: [],
      counters,
    };
    const { text } = await scrape({ maxSeries: 2, cacheMs: 0 }, source(() => snap));
    const first = await text();
    const second = await text();
    expect(second).toBe(first);
    expect(value(first, 'mesh_metrics_series_overflow_total')).toBe(5);
    expect(value(first, 'http_client_request_duration_seconds_count', 'source_workload="_overflow"')).toBe(5);
  });

  it('a label set admitted once keeps its own series: the overflow counts only what never fitted', async () => {
    let snap: MetricsSnapshot = { http: [http('client', '127.0.0.2', 10, { 0: 10 })], tcp: [], counters };
    const { text } = await scrape({ maxSeries: 1, cacheMs: 0 }, source(() => snap));
    await text();
    // A second pair arrives, listed first: the first pair keeps its series, the newcomer overflows.
    snap = { http: [http('client', '127.0.0.9', 3, { 0: 3 }), http('client', '127.0.0.2', 12, { 0: 12 })], tcp: [], counters };
    const out = await text();
    expect(value(out, 'http_client_request_duration_seconds_count', 'destination_workload="127.0.0.2"')).toBe(12);
    expect(value(out, 'mesh_metrics_series_overflow_total')).toBe(3);
  });

  it('buckets are cumulative and end with +Inf = count', async () => {
    const snap: MetricsSnapshot = { http: [http('server', '127.0.0.2', 10, { 0: 2, 3: 5, 14: 3 })], tcp: [], counters };
    const out = await (await scrape({ cacheMs: 0 }, source(() => snap))).text();
    const b = (le: string) => value(out, 'http_server_request_duration_seconds_bucket', `le="${le}"`);
    expect([b('0.005'), b('0.01'), b('0.05'), b('0.075'), b('10'), b('+Inf')]).toEqual([2, 2, 7, 7, 7, 10]);
    expect(value(out, 'http_server_request_duration_seconds_count')).toBe(10);
  });

  it('the overflow series merges every label set past the cap: its buckets are the cumulative sum of theirs', async () => {
    const snap: MetricsSnapshot = {
      http: [http('client', '127.0.0.2', 10, { 0: 10 }), http('client', '127.0.0.3', 4, { 0: 1, 2: 3 }), http('client', '127.0.0.4', 6, { 2: 2, 14: 4 })],
      tcp: [],
      counters,
    };
    const out = await (await scrape({ maxSeries: 1, cacheMs: 0 }, source(() => snap))).text();
    const b = (le: string) => value(out, 'http_client_request_duration_seconds_bucket', `destination_workload="_overflow",destination_namespace="_overflow",destination_service="_overflow",network_protocol_version="_overflow",le="${le}"`);
    expect([b('0.005'), b('0.01'), b('0.025'), b('10'), b('+Inf')]).toEqual([1, 1, 6, 6, 10]);
    expect(value(out, 'http_client_request_duration_seconds_count', 'source_workload="_overflow"')).toBe(10);
    expect(value(out, 'mesh_metrics_series_overflow_total')).toBe(10);
  });

  it('a series the kernel no longer has gives its place up to a newcomer', async () => {
    let snap: MetricsSnapshot = { http: [http('client', '127.0.0.2', 10, { 0: 10 })], tcp: [], counters };
    const { text } = await scrape({ maxSeries: 1, cacheMs: 0 }, source(() => snap));
    await text();
    snap = { http: [http('client', '127.0.0.9', 3, { 0: 3 })], tcp: [], counters };
    const out = await text();
    expect(value(out, 'http_client_request_duration_seconds_count', 'destination_workload="127.0.0.9"')).toBe(3);
    expect(value(out, 'http_client_request_duration_seconds_count', 'source_workload="_overflow"')).toBeUndefined();
    expect(value(out, 'mesh_metrics_series_overflow_total')).toBe(0);
  });

  it('the cap is per metric: client, server and TCP series are admitted separately; TCP past the cap merges without counting as requests', async () => {
    const tcp = (remoteIp: string, opened: number) => ({ direction: 'client' as const, cgroupId: 7n, remoteIp, port: 80, opened, closed: 0, bytesSent: 0, bytesReceived: 0 });
    const snap: MetricsSnapshot = {
      http: [http('client', '127.0.0.2', 1, { 0: 1 }), http('server', '127.0.0.3', 2, { 0: 2 })],
      tcp: [tcp('127.0.0.2', 5), tcp('127.0.0.3', 7), tcp('127.0.0.4', 9)],
      counters,
    };
    const out = await (await scrape({ maxSeries: 1, cacheMs: 0 }, source(() => snap))).text();
    expect(value(out, 'http_client_request_duration_seconds_count', 'destination_workload="127.0.0.2"')).toBe(1);
    expect(value(out, 'http_server_request_duration_seconds_count', 'source_workload="127.0.0.3"')).toBe(2);
    expect(value(out, 'mesh_tcp_connections_opened_total', 'destination_workload="127.0.0.2"')).toBe(5);
    expect(value(out, 'mesh_tcp_connections_opened_total', 'source_workload="_overflow"')).toBe(16);
    expect(value(out, 'mesh_metrics_series_overflow_total')).toBe(0);
  });

  it('one kernel read serves every metric of a scrape', async () => {
    let t = 0;
    const src = source(() => ({ http: [http('client', '127.0.0.2', 1, { 0: 1 })], tcp: [], counters }));
    const { text } = await scrape({ cacheMs: 200, now: () => t }, src);
    await text();
    expect(src.reads).toBe(1);
    t = 199;
    await text();
    expect(src.reads).toBe(1);
    t = 200;
    await text();
    expect(src.reads).toBe(2);
  });

  it('maxSeries must be a positive integer', () => {
    for (const maxSeries of [0, -1, 1.5, NaN]) expect(() => new KernelMetrics(source(() => ({ http: [], tcp: [], counters })), { maxSeries })).toThrow(RangeError);
  });

  it('overflowed server-side requests are in the server histogram, not the client one', async () => {
    const snap: MetricsSnapshot = { http: [http('server', '', 4, { 0: 4 }, true), http('client', '', 6, { 0: 6 }, true)], tcp: [], counters };
    const out = await (await scrape({ cacheMs: 0 }, source(() => snap))).text();
    expect(value(out, 'http_server_request_duration_seconds_count', 'source_workload="_overflow"')).toBe(4);
    expect(value(out, 'http_client_request_duration_seconds_count', 'source_workload="_overflow"')).toBe(6);
  });

  it('a peer that is not a known one (remoteIp empty) is named "unknown"', async () => {
    const snap: MetricsSnapshot = { http: [http('server', '', 3, { 0: 3 })], tcp: [], counters };
    const out = await (await scrape({ cacheMs: 0 }, source(() => snap))).text();
    expect(value(out, 'http_server_request_duration_seconds_count', 'source_workload="unknown",source_namespace="unknown"')).toBe(3);
  });

  it('a wall clock stepped back does not freeze the cache: the next scrape after cacheMs reads the kernel again', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    let n = 1;
    const src = source(() => ({ http: [http('client', '127.0.0.2', n, { 0: n })], tcp: [], counters }));
    const { text } = await scrape({ cacheMs: 20 }, src);
    expect(value(await text(), 'http_client_request_duration_seconds_count')).toBe(1);
    vi.setSystemTime(Date.now() - 3_600_000); // NTP steps the clock an hour back
    n = 2;
    await new Promise((r) => setTimeout(r, 60));
    expect(value(await text(), 'http_client_request_duration_seconds_count')).toBe(2);
  });
});
