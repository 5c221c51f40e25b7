/**
 * Rate, success rate and latency percentiles per workload pair and protocol over a recent window, for
 * `meshctl stat`: the kernel's aggregates (HTTP/1.x from its maps, HTTP/2 and gRPC decoded from its h2_events)
 * sampled (every 10 s, every 2 s while someone reads them, and at each query), kept for a minute, and
 * differenced. Percentiles are interpolated within histogram buckets, as Prometheus' histogram_quantile() does.
 */
import { BUCKET_BOUNDS_S, type H2HttpSample, type HttpSample, type IdentityResolver, type RpcSample } from '@mesh/metrics';

export type StatProtocol = 'HTTP/1.1' | 'HTTP/2' | 'gRPC';

/** What a sample reads: the HTTP/1.x aggregates, and the HTTP/2 and gRPC ones where HTTP/2 is decoded. */
export interface StatInput {
  http: HttpSample[];
  h2?: H2HttpSample[];
  rpc?: RpcSample[];
}

export interface PairStat {
  /** client: measured at the caller's socket; server: measured at the callee's. */
  direction: 'client' | 'server';
  source: string;
  destination: string;
  /** The Service the client dialled, where known. */
  service: string;
  protocol: StatProtocol;
  /** gRPC: the method called, "package.Service/Method" (_OTHER/_OTHER past the agent's cap); '' otherwise. */
  rpc: string;
  requests: number;
  rps: number;
  /**
   * Share of exchanges that succeeded; undefined with no requests in the window. HTTP: a response that is not
   * 5xx (nor unparsable, nor an HTTP/2 stream reset before its end). gRPC: a call that ended with grpc-status
   * OK (as Linkerd counts it: NOT_FOUND is a failure too).
   */
  successRate: number | undefined;
  p50Ms: number | undefined;
  p95Ms: number | undefined;
  p99Ms: number | undefined;
}

interface Agg {
  direction: 'client' | 'server';
  source: string;
  destination: string;
  service: string;
  protocol: StatProtocol;
  rpc: string;
  count: number;
  failures: number;
  buckets: number[];
}

interface Sample {
  /** performance.now() when taken: a monotonic clock, so a wall clock stepped back does not freeze the window. */
  at: number;
  pairs: Map<string, Agg>;
}

const NBUCKETS = BUCKET_BOUNDS_S.length + 1;

/** The q-quantile (0..1) of a non-cumulative histogram over BUCKET_BOUNDS_S (+Inf last), in seconds. */
export function quantile(q: number, buckets: number[]): number | undefined {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (total <= 0) return undefined;
  const rank = q * total;
  let cum = 0;
  for (let i = 0; i < buckets.length; i++) {
    const n = buckets[i]!;
    if (cum + n >= rank && n > 0) {
      if (i >= BUCKET_BOUNDS_S.length) return BUCKET_BOUNDS_S.at(-1); // the +Inf bucket: the last finite bound
      const lo = i === 0 ? 0 : BUCKET_BOUNDS_S[i - 1]!;
      const hi = BUCKET_BOUNDS_S[i]!;
      return lo + (hi - lo) * ((rank - cum) / n);
    }
    cum += n;
  }
  return BUCKET_BOUNDS_S.at(-1);
}

/** Sampling periods (ms): while nobody reads the stats, while someone does, and for how long after a query. */
const SAMPLING = { idleMs: 10_000, watchedMs: 2_000, watchMs: 120_000 };

export class PairStats {
  private readonly samples: Sample[] = [];
  private timer: NodeJS.Timeout | undefined;
  private opts = SAMPLING;
  /** The timer's period now; 0 when not started. */
  private everyMs = 0;
  private lastQuery = 0;
  private readonly listeners: ((at: number, totals: ReadonlyMap<string, number>) => void)[] = [];

  constructor(
    private readonly read: () => StatInput,
    private readonly resolver: () => IdentityResolver,
    private readonly keepMs = 65_000,
  ) {}

  /**
   * Samples every `idleMs` while nobody reads the stats, and every `watchedMs` for `watchMs` after a query:
   * an agent nobody watches stays nearly idle, and a query always ends its window with a fresh sample.
   */
  start(opts: { idleMs?: number; watchedMs?: number; watchMs?: number } = {}): void {
    this.opts = { idleMs: opts.idleMs ?? SAMPLING.idleMs, watchedMs: opts.watchedMs ?? SAMPLING.watchedMs, watchMs: opts.watchMs ?? SAMPLING.watchMs };
    this.sample();
    this.schedule(this.opts.idleMs);
  }

  private schedule(everyMs: number): void {
    if (this.everyMs === everyMs) return;
    clearInterval(this.timer);
    this.everyMs = everyMs;
    this.timer = setInterval(() => {
      this.sample();
      if (this.everyMs === this.opts.watchedMs && performance.now() - this.lastQuery > this.opts.watchMs) this.schedule(this.opts.idleMs);
    }, everyMs);
    this.timer.unref();
  }

  /** Calls `fn` after each sample with every pair's request total so far, keyed direction|source|destination|service. */
  onSample(fn: (at: number, totals: ReadonlyMap<string, number>) => void): void {
    this.listeners.push(fn);
  }

  stop(): void {
    clearInterval(this.timer);
    this.everyMs = 0;
  }

  /** Takes one sample now (also called by the timer). */
  sample(now = performance.now()): void {
    let input: StatInput;
    try {
      input = this.read();
    } catch {
      return; // a failed read leaves a gap, not a crash
    }
    const r = this.resolver();
    const pairs = new Map<string, Agg>();
    const add = (s: HttpSample | H2HttpSample | RpcSample, protocol: StatProtocol, rpc: string, failed: boolean) => {
      if (s.cgroupId === undefined) return;
      const local = r.local(s.cgroupId, s.port, s.direction);
      const peer = r.peer(s.remoteIp, s.port, s.direction);
      const localName = local ? `${local.namespace}/${local.workload}` : `cgroup-${s.cgroupId}`;
      const peerName = peer && peer.workload !== 'unknown' ? `${peer.namespace}/${peer.workload}` : s.remoteIp || 'unknown';
      const [source, destination] = s.direction === 'client' ? [localName, peerName] : [peerName, localName];
      const service = s.direction === 'client' ? (peer?.service ?? '') : (local?.service ?? '');
      const key = `${s.direction}|${source}|${destination}|${service}|${protocol}|${rpc}`;
      const a = pairs.get(key) ?? { direction: s.direction, source, destination, service, protocol, rpc, count: 0, failures: 0, buckets: new Array(NBUCKETS).fill(0) };
      a.count += s.count;
      if (failed) a.failures += s.count;
      s.buckets.forEach((b, i) => (a.buckets[i]! += b));
      pairs.set(key, a);
    };
    for (const s of input.http) add(s, 'HTTP/1.1', '', s.status === 0 || s.status >= 500);
    for (const s of input.h2 ?? []) add(s, 'HTTP/2', '', s.status === 0 || s.status >= 500 || s.errorType !== '');
    for (const s of input.rpc ?? []) add(s, 'gRPC', `${s.service}/${s.method}`, s.grpcStatus !== '0' || s.errorType !== '');
    this.samples.push({ at: now, pairs });
    if (this.listeners.length) {
      const totals = new Map([...pairs].map(([k, a]) => [k, a.count]));
      for (const fn of this.listeners) fn(now, totals);
    }
    while (this.samples.length > 1 && this.samples[0]!.at < now - this.keepMs) this.samples.shift();
  }

  /** Stats over the last `windowMs` (as much of it as has been sampled). */
  query(windowMs = 10_000): { windowSeconds: number; pairs: PairStat[] } {
    if (this.everyMs !== 0) {
      // A running sampler: end the window now, and sample often while someone is watching.
      this.lastQuery = performance.now();
      if (this.lastQuery - (this.samples.at(-1)?.at ?? -Infinity) >= 250) this.sample(this.lastQuery);
      this.schedule(this.opts.watchedMs);
    }
    const last = this.samples.at(-1);
    if (!last) return { windowSeconds: 0, pairs: [] };
    // The sample nearest to the window's start (timers drift a few ms, so "at or after" would lose a second).
    const target = last.at - windowMs;
    let base: Sample | undefined;
    for (const s of this.samples) {
      if (s === last) break;
      if (!base || Math.abs(s.at - target) < Math.abs(base.at - target)) base = s;
    }
    const seconds = base ? (last.at - base.at) / 1000 : 0;
    const pairs: PairStat[] = [];
    for (const [key, a] of last.pairs) {
      const b = base?.pairs.get(key);
      const count = Math.max(0, a.count - (b?.count ?? 0));
      const failures = Math.max(0, a.failures - (b?.failures ?? 0));
      const buckets = a.buckets.map((n, i) => Math.max(0, n - (b?.buckets[i] ?? 0)));
      const ms = (q: number) => {
        const s = quantile(q, buckets);
        return s === undefined ? undefined : Math.round(s * 1e6) / 1e3;
      };
      pairs.push({
        direction: a.direction,
        source: a.source,
        destination: a.destination,
        service: a.service,
        protocol: a.protocol,
        rpc: a.rpc,
        requests: count,
        rps: seconds > 0 ? Math.round((count / seconds) * 100) / 100 : 0,
        successRate: count > 0 ? (count - failures) / count : undefined,
        p50Ms: ms(0.5),
        p95Ms: ms(0.95),
        p99Ms: ms(0.99),
      });
    }
    pairs.sort(
      (x, y) =>
        byCodeUnit(x.direction, y.direction) ||
        byCodeUnit(x.source, y.source) ||
        byCodeUnit(x.destination, y.destination) ||
        byCodeUnit(x.protocol, y.protocol) ||
        byCodeUnit(x.rpc, y.rpc),
    );
    return { windowSeconds: Math.round(seconds * 10) / 10, pairs };
  }
}

/** Case-insensitive first (gRPC before HTTP/1.1, as before), then by code unit. Not localeCompare: that loads
 *  ICU's collation data (~2.7 MiB of RSS) on the first stats query. */
function byCodeUnit(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  return x < y ? -1 : x > y ? 1 : a < b ? -1 : a > b ? 1 : 0;
}
