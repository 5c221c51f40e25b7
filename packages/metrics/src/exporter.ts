/**
 * Prometheus exposition of the kernel's aggregates through prom-client. Names follow the OpenTelemetry HTTP
 * semantic conventions as Prometheus spells them: http_server_request_duration_seconds and
 * http_client_request_duration_seconds histograms (OTel's default buckets), labels http_request_method (unknown
 * methods as _OTHER) and http_response_status_code, plus source/destination workload, namespace and service.
 * The kernel is read once per scrape; series are capped, and what exceeds the cap is merged into one overflow
 * series per metric and counted.
 */
import { type Registry } from 'prom-client';

import type { Direction, HttpSample, MetricsSnapshot, TcpSample } from './datapath.js';
import type { H2Counters, H2HttpSample, RpcSample } from './h2/streams.js';
import { BUCKET_BOUNDS_S, type CounterName } from './maps.js';

export interface Identity {
  workload: string;
  namespace: string;
  service?: string;
}

/** Names what the kernel knows by cgroup id and address. The agent resolves them from its config. */
export interface IdentityResolver {
  /** The local workload of a socket, by the socket's cgroup id; for servers, `port` is the port served. */
  local(cgroupId: bigint, port: number, direction: Direction): Identity | undefined;
  /** The peer: for clients, the address and port dialled (a workload or a service); for servers, the client's address. */
  peer(ip: string, port: number, direction: Direction): Identity | undefined;
}

export const defaultResolver: IdentityResolver = {
  local: (id) => ({ workload: `cgroup-${id}`, namespace: '' }),
  peer: (ip) => ({ workload: ip, namespace: '' }),
};

export interface MetricsSource {
  read(): MetricsSnapshot;
  fill(): Record<string, { used: number; max: number }>;
  /** HTTP/2 and gRPC aggregates (MetricsDatapath.readH2), when the source has them. */
  readH2?(): { http: H2HttpSample[]; rpc: RpcSample[]; counters: H2Counters | undefined };
  /** Peer addresses of the config that did not fit the known-peer table (MetricsDatapath.unnamedPeers). */
  unnamedPeers?(): number;
}

export interface ExporterOptions {
  resolver?: IdentityResolver;
  /** Most label sets per metric; the rest merge into one overflow series. Default 10,000. */
  maxSeries?: number;
  /** A snapshot younger than this is reused (several metrics are rendered per scrape). Default 200 ms. */
  cacheMs?: number;
  /** Milliseconds from a monotonic clock (default performance.now): a wall clock stepped back would keep the
   *  cache from ever expiring. */
  now?: () => number;
}

const OVERFLOW = '_overflow';
const UNKNOWN_PEER: Identity = { workload: 'unknown', namespace: 'unknown' };
const identityLabels = ['source_workload', 'source_namespace', 'destination_workload', 'destination_namespace', 'destination_service'] as const;
type Labels = Record<string, string>;

interface PromValue {
  labels: Labels;
  value: number;
  metricName?: string;
}

/** A metric object prom-client's Registry can render: name, help, type and get(). */
interface CustomMetric {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  aggregator: 'sum';
  get(): Promise<{ name: string; help: string; type: string; aggregator: 'sum'; values: PromValue[] }>;
  reset(): void;
}

interface Group<S> {
  labels: Labels;
  acc: S;
}

/** One read of the kernel, grouped by label set once for every metric rendered from it. */
interface Snapshot {
  at: number;
  snap: MetricsSnapshot;
  fill: Record<string, { used: number; max: number }>;
  http: Record<Direction, Group<HttpSample>[]>;
  rpc: Record<Direction, Group<RpcSample>[]>;
  h2: H2Counters | undefined;
  tcp: Group<TcpSample>[];
  /** Requests in this snapshot that fall in an overflow series because a metric reached its series cap. */
  overflowed: number;
}

export class KernelMetrics {
  private readonly resolver: IdentityResolver;
  private readonly maxSeries: number;
  private readonly cacheMs: number;
  private readonly now: () => number;
  private cached: Snapshot | undefined;
  /**
   * Label sets that got a series of their own, per metric family, kept across scrapes while the kernel still
   * has them: a series does not move into or out of the overflow series from one scrape to the next (which
   * would make both go down), so each grows only as the kernel's counts do.
   */
  private readonly admitted = { client: new Set<string>(), server: new Set<string>(), tcp: new Set<string>(), rpcClient: new Set<string>(), rpcServer: new Set<string>() };

  constructor(
    private readonly source: MetricsSource,
    opts: ExporterOptions = {},
  ) {
    this.resolver = opts.resolver ?? defaultResolver;
    this.maxSeries = opts.maxSeries ?? 10_000;
    this.cacheMs = opts.cacheMs ?? 200;
    this.now = opts.now ?? (() => performance.now());
    if (!Number.isInteger(this.maxSeries) || this.maxSeries < 1) throw new RangeError(`maxSeries must be a positive integer, got ${this.maxSeries}`);
  }

  /** Registers every metric in a prom-client registry. */
  register(registry: Registry): void {
    for (const m of this.metrics()) registry.registerMetric(m as never);
  }

  private snapshot(): Snapshot {
    const now = this.now();
    if (!this.cached || now - this.cached.at >= this.cacheMs) {
      const snap = this.source.read();
      const fill = this.source.fill();
      const h2 = this.source.readH2?.();
      const overflowed = { n: 0 };
      const all = h2 ? [...snap.http, ...h2.http.map((s): HttpSample => ({ ...s, protocolVersion: '2' }))] : snap.http;
      const http = { client: this.groupHttp(all, 'client', overflowed), server: this.groupHttp(all, 'server', overflowed) };
      const rpcs = h2?.rpc ?? [];
      const rpc = { client: this.groupRpc(rpcs, 'client', overflowed), server: this.groupRpc(rpcs, 'server', overflowed) };
      const tcp = this.group<TcpSample>(
        snap.tcp,
        this.admitted.tcp,
        (s) => this.identities(s.direction, s.cgroupId, s.remoteIp, s.port),
        (acc, s) => (acc ? { ...acc, opened: acc.opened + s.opened, closed: acc.closed + s.closed, bytesSent: acc.bytesSent + s.bytesSent, bytesReceived: acc.bytesReceived + s.bytesReceived } : { ...s }),
        () => {},
      );
      this.cached = { at: now, snap, fill, http, rpc, h2: h2?.counters, tcp, overflowed: overflowed.n };
    }
    return this.cached;
  }

  private identities(direction: Direction, cgroupId: bigint | undefined, ip: string, port: number): Labels {
    if (cgroupId === undefined) return Object.fromEntries(identityLabels.map((l) => [l, OVERFLOW]));
    const local = this.resolver.local(cgroupId, port, direction) ?? { workload: `cgroup-${cgroupId}`, namespace: '' };
    // A peer that is not a known one (remoteIp '') is "unknown", as Istio and Linkerd name it.
    const peer = (ip === '' ? undefined : this.resolver.peer(ip, port, direction)) ?? (ip === '' ? UNKNOWN_PEER : { workload: ip, namespace: '' });
    const [src, dst] = direction === 'client' ? [local, peer] : [peer, local];
    return {
      source_workload: src.workload,
      source_namespace: src.namespace,
      destination_workload: dst.workload,
      destination_namespace: dst.namespace,
      destination_service: dst.service ?? '',
    };
  }

  /** Groups samples by label set: those admitted before, then new ones while fewer than maxSeries are; the
   *  rest go to one overflow set (onOverflow is told of each sample that does). */
  private group<S>(samples: S[], admitted: Set<string>, labelsOf: (s: S) => Labels, add: (acc: S | undefined, s: S) => S, onOverflow: (s: S) => void): Group<S>[] {
    const labeled = samples.map((s) => {
      const labels = labelsOf(s);
      return { s, labels, key: JSON.stringify(labels) };
    });
    // Series the kernel no longer has (a workload gone or renamed) give their place up.
    const seen = new Set(labeled.map((x) => x.key));
    for (const key of admitted) if (!seen.has(key)) admitted.delete(key);
    const out = new Map<string, Group<S>>();
    for (let { s, labels, key } of labeled) {
      if (!admitted.has(key)) {
        if (admitted.size < this.maxSeries) admitted.add(key);
        else {
          labels = Object.fromEntries(Object.keys(labels).map((k) => [k, OVERFLOW]));
          key = JSON.stringify(labels);
          onOverflow(s);
        }
      }
      const cur = out.get(key);
      out.set(key, { labels, acc: add(cur?.acc, s) });
    }
    return [...out.values()];
  }

  private groupHttp(all: HttpSample[], direction: Direction, overflowed: { n: number }): Group<HttpSample>[] {
    return this.group<HttpSample>(
      all.filter((s) => s.direction === direction),
      this.admitted[direction],
      (s) => ({
        http_request_method: s.cgroupId === undefined ? OVERFLOW : s.method || '_OTHER',
        http_response_status_code: s.cgroupId === undefined ? OVERFLOW : s.status ? String(s.status) : '',
        ...this.identities(direction, s.cgroupId, s.remoteIp, s.port),
        network_protocol_version: s.cgroupId === undefined ? OVERFLOW : (s.protocolVersion ?? '1.1'),
        // Only streams that ended without their response ending carry it (OTel's error.type).
        ...(s.errorType ? { error_type: s.errorType } : {}),
      }),
      (acc, s) => (acc ? { ...acc, count: acc.count + s.count, sumSeconds: acc.sumSeconds + s.sumSeconds, buckets: acc.buckets.map((b, i) => b + s.buckets[i]!) } : { ...s, buckets: [...s.buckets] }),
      (s) => (overflowed.n += s.count),
    );
  }

  private groupRpc(all: RpcSample[], direction: Direction, overflowed: { n: number }): Group<RpcSample>[] {
    return this.group<RpcSample>(
      all.filter((s) => s.direction === direction),
      this.admitted[direction === 'client' ? 'rpcClient' : 'rpcServer'],
      (s) => ({
        rpc_system: 'grpc',
        rpc_service: s.service,
        rpc_method: s.method,
        rpc_grpc_status_code: s.grpcStatus,
        ...this.identities(direction, s.cgroupId, s.remoteIp, s.port),
        ...(s.errorType ? { error_type: s.errorType } : {}),
      }),
      (acc, s) => (acc ? { ...acc, count: acc.count + s.count, sumSeconds: acc.sumSeconds + s.sumSeconds, buckets: acc.buckets.map((b, i) => b + s.buckets[i]!) } : { ...s, buckets: [...s.buckets] }),
      (s) => (overflowed.n += s.count),
    );
  }

  private rpcHistogram(direction: Direction): CustomMetric {
    const name = `rpc_${direction}_duration_seconds`;
    const help = `Duration of gRPC calls (${direction} side): the request's HEADERS to the response's trailers, from HTTP/2 frames the kernel hands over.`;
    const get = async () => ({ name, help, type: 'histogram', aggregator: 'sum' as const, values: histogramValues(name, this.snapshot().rpc[direction]) });
    return { name, help, type: 'histogram', aggregator: 'sum', get, reset() {} };
  }

  private histogram(direction: Direction): CustomMetric {
    const name = `http_${direction}_request_duration_seconds`;
    const help = `Duration of HTTP ${direction} requests: first byte of the request to first byte of the response, measured in the kernel.`;
    const get = async () => ({ name, help, type: 'histogram', aggregator: 'sum' as const, values: histogramValues(name, this.snapshot().http[direction]) });
    return { name, help, type: 'histogram', aggregator: 'sum', get, reset() {} };
  }

  private tcpCounter(name: string, help: string, field: keyof Pick<TcpSample, 'opened' | 'closed' | 'bytesSent' | 'bytesReceived'>): CustomMetric {
    const get = async () => {
      const groups = this.snapshot().tcp;
      return { name, help, type: 'counter', aggregator: 'sum' as const, values: groups.map(({ labels, acc }) => ({ labels, value: acc[field] })) };
    };
    return { name, help, type: 'counter', aggregator: 'sum', get, reset() {} };
  }

  private simple(name: string, help: string, type: 'counter' | 'gauge', values: () => PromValue[]): CustomMetric {
    const get = async () => ({ name, help, type, aggregator: 'sum' as const, values: values() });
    return { name, help, type, aggregator: 'sum', get, reset() {} };
  }

  private metrics(): CustomMetric[] {
    const kernelCounter = (n: CounterName) => () => [{ labels: {}, value: this.snapshot().snap.counters[n] }];
    return [
      this.histogram('server'),
      this.histogram('client'),
      this.rpcHistogram('server'),
      this.rpcHistogram('client'),
      this.tcpCounter('mesh_tcp_connections_opened_total', 'TCP connections established, per workload pair.', 'opened'),
      this.tcpCounter('mesh_tcp_connections_closed_total', 'TCP connections closed, per workload pair.', 'closed'),
      this.tcpCounter('mesh_tcp_sent_bytes_total', 'TCP payload bytes sent, per workload pair.', 'bytesSent'),
      this.tcpCounter('mesh_tcp_received_bytes_total', 'TCP payload bytes received, per workload pair.', 'bytesReceived'),
      this.simple('mesh_http_not_http_connections_total', 'Connections whose first bytes were not HTTP/1.x (not counted as requests), once per side measured.', 'counter', kernelCounter('not_http')),
      this.simple('mesh_http_unparsed_responses_total', 'Responses that did not start with a status line (recorded with an empty status code), once per side measured.', 'counter', kernelCounter('unparsed_status')),
      this.simple('mesh_http_http2_connections_total', 'Connections that carried the HTTP/2 preface (h2c with prior knowledge or after an upgrade; gRPC without TLS): not counted as HTTP/1.x, once per side measured.', 'counter', kernelCounter('http2')),
      this.simple('mesh_http2_records_lost_total', 'HTTP/2 records the kernel\'s ring buffer had no room for: their connection direction is decoded no further (its streams count with an empty status).', 'counter', kernelCounter('h2_drops')),
      this.simple('mesh_http2_directions_unknown_total', 'HTTP/2 connection directions whose header blocks could no longer be decoded (a lost record, a cut one, a decoding error); later streams count with an empty status.', 'counter', () => [
        { labels: {}, value: this.snapshot().h2?.lostDirections ?? 0 },
      ]),
      this.simple('mesh_http2_unparsed_streams_total', 'HTTP/2 streams counted with an empty status and method because their header blocks could not be decoded.', 'counter', () => [
        { labels: {}, value: this.snapshot().h2?.unparsedStreams ?? 0 },
      ]),
      this.simple('mesh_http_paired_connections_total', 'Connections whose two ends are both measured on this node: measured once, at the server\'s socket, for both sides.', 'counter', kernelCounter('paired')),
      this.simple('mesh_metrics_kernel_overflow_total', 'Exchanges or connections counted under the overflow key because an aggregation map was full.', 'counter', () => [
        { labels: { map: 'http_requests' }, value: this.snapshot().snap.counters.http_overflow },
        { labels: { map: 'tcp_stats' }, value: this.snapshot().snap.counters.tcp_overflow },
      ]),
      this.simple('mesh_metrics_series_overflow_total', 'Requests merged into an overflow series because a metric reached its series cap.', 'counter', () => [
        { labels: {}, value: this.snapshot().overflowed },
      ]),
      this.simple('mesh_metrics_peers_unnamed', 'Peer addresses of the config that did not fit the known-peer table (http_peers): their connections count under the "unknown" peer. A restart sizes the table from the config; --max-peers pins it.', 'gauge', () => [
        { labels: {}, value: this.source.unnamedPeers?.() ?? 0 },
      ]),
      this.simple('mesh_bpf_map_entries', 'Entries in use in a BPF map of the mesh.', 'gauge', () =>
        Object.entries(this.snapshot().fill).map(([map, f]) => ({ labels: { map }, value: f.used })),
      ),
      this.simple('mesh_bpf_map_capacity', 'Capacity (max entries) of a BPF map of the mesh.', 'gauge', () =>
        Object.entries(this.snapshot().fill).map(([map, f]) => ({ labels: { map }, value: f.max })),
      ),
    ];
  }
}

/** A histogram's samples from grouped aggregates: cumulative buckets, sum, count. */
function histogramValues(name: string, groups: Group<{ count: number; sumSeconds: number; buckets: number[] }>[]): PromValue[] {
  const values: PromValue[] = [];
  for (const { labels, acc } of groups) {
    let cumulative = 0;
    BUCKET_BOUNDS_S.forEach((le, i) => {
      cumulative += acc.buckets[i]!;
      values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: String(le) }, value: cumulative });
    });
    values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: acc.count });
    values.push({ metricName: `${name}_sum`, labels, value: acc.sumSeconds });
    values.push({ metricName: `${name}_count`, labels, value: acc.count });
  }
  return values;
}
