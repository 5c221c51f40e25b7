/**
 * The service graph the agent's page draws (GET /graph.json on the metrics listener, read-only): workloads and
 * services as nodes, each client→server pair the kernel measured as an edge with its rate, success rate and
 * p99, and, where a Service is split, the share each edge observed against the weight the config gives it; a
 * few minutes of each edge's rate for its sparkline.
 */
import { enrolled } from './enrol.js';
import type { PairStat } from './stats.js';
import type { Applied, StatView } from './views.js';

export interface GraphNode {
  /** "workload:ns/name", "service:ns/name" or "peer:ADDRESS" (a peer outside the config). */
  id: string;
  kind: 'workload' | 'service' | 'peer';
  name: string;
  namespace: string;
}

export interface GraphEdge {
  id: string;
  /** Node ids. */
  source: string;
  destination: string;
  /** The Service node the client dialled, when known. */
  via: string | undefined;
  /** HTTP/1.1, HTTP/2, gRPC: those seen on this pair in the window. */
  protocols: string[];
  requests: number;
  rps: number;
  successRate: number | undefined;
  p50Ms: number | undefined;
  p99Ms: number | undefined;
  /** Of the requests this source sent through `via`, the share this edge carried; only for split Services. */
  share: number | undefined;
  /** The share the config's weights give this edge's destination. */
  weight: number | undefined;
  /** Requests per second over the last minutes, oldest first, one point per `sparkStepSeconds`. */
  spark: number[];
  /** Carried in mutual TLS: both ends are workloads enrolled in mTLS (docs/mtls.md); undefined when the agent
   *  does not run mTLS. */
  mtls: boolean | undefined;
}

export interface GraphView {
  windowSeconds: number;
  sparkStepSeconds: number;
  nodes: GraphNode[];
  edges: GraphEdge[];
}

/** Per pair (PairStats' key), request totals at most every `stepMs`, for `points` steps. */
export class EdgeHistory {
  private readonly snaps: { at: number; totals: ReadonlyMap<string, number> }[] = [];

  constructor(
    readonly stepMs = 10_000,
    readonly points = 30,
  ) {}

  /** Called after each stats sample; keeps one snapshot per step. */
  record(at: number, totals: ReadonlyMap<string, number>): void {
    const last = this.snaps.at(-1);
    if (last && at - last.at < this.stepMs * 0.95) return;
    this.snaps.push({ at, totals });
    while (this.snaps.length > this.points + 1) this.snaps.shift();
  }

  /** Requests per second between consecutive snapshots; a pair absent from a snapshot had sent nothing yet. */
  rates(key: string): number[] {
    const out: number[] = [];
    for (let i = 1; i < this.snaps.length; i++) {
      const [a, b] = [this.snaps[i - 1]!, this.snaps[i]!];
      const n = Math.max(0, (b.totals.get(key) ?? 0) - (a.totals.get(key) ?? 0));
      out.push(Math.round((n / ((b.at - a.at) / 1000)) * 100) / 100);
    }
    return out;
  }
}

/** PairStats' key of a row (as onSample's totals are keyed). */
const rowKey = (p: PairStat) => `${p.direction}|${p.source}|${p.destination}|${p.service}|${p.protocol}|${p.rpc}`;

/**
 * The graph of one stats window. Client-side rows are the edges (they know the Service dialled); a server-side
 * row becomes an edge only when its caller is outside the config, where no client row exists. A pair's rows of
 * several protocols (HTTP/1.1, HTTP/2, each gRPC method) make one edge: their requests summed, their success
 * weighted by requests, the slowest row's p50 and p99.
 */
export function graphView(stat: StatView, applied: Applied | undefined, history: EdgeHistory, mtlsOn = false): GraphView {
  const workloads = new Map<string, string>(); // address → ns/name
  const known = new Set<string>();
  const inMtls = new Set<string>();
  for (const w of applied?.workloads ?? []) {
    known.add(`${w.namespace}/${w.name}`);
    if (mtlsOn && enrolled(w)) inMtls.add(`${w.namespace}/${w.name}`);
    for (const a of w.addresses) workloads.set(a, `${w.namespace}/${w.name}`);
  }
  const nodes = new Map<string, GraphNode>();
  const node = (kind: GraphNode['kind'], full: string): string => {
    const id = `${kind}:${full}`;
    if (!nodes.has(id)) {
      const slash = full.indexOf('/');
      nodes.set(id, { id, kind, namespace: slash < 0 ? '' : full.slice(0, slash), name: slash < 0 ? full : full.slice(slash + 1) });
    }
    return id;
  };
  const nodeOf = (name: string) => node(known.has(name) ? 'workload' : 'peer', name);
  for (const w of known) node('workload', w);

  // Services by short name (what the stats carry) and namespace: the expected share of each destination.
  const services = new Map<string, Applied['services'][number]>();
  for (const s of applied?.services ?? []) services.set(s.service, s);
  const serviceFor = (short: string, ns: string) => services.get(`${ns}/${short}`) ?? [...services.values()].find((s) => s.service.endsWith(`/${short}`));
  const expected = (svc: Applied['services'][number], destination: string): number => {
    const total = svc.backends.reduce((a, b) => a + b.weight, 0);
    if (!total) return 0;
    let share = 0;
    for (const b of svc.backends) {
      if (!b.endpoints.length) continue;
      const mine = b.endpoints.filter((e) => workloads.get(e.addr) === destination).length;
      share += (b.weight / total) * (mine / b.endpoints.length);
    }
    return share;
  };

  const edges = new Map<string, GraphEdge & { ok: number; keys: string[] }>();
  const split = new Map<string, GraphEdge[]>(); // source|via → its edges through a split Service
  for (const p of stat.pairs) {
    if (p.direction === 'server' && known.has(p.source)) continue;
    const id = `${p.direction}|${p.source}|${p.destination}|${p.service}`;
    const max = (a: number | undefined, b: number | undefined) => (a === undefined ? b : b === undefined ? a : Math.max(a, b));
    const had = edges.get(id);
    if (had) {
      had.requests += p.requests;
      had.rps = Math.round((had.rps + p.rps) * 100) / 100;
      had.ok += (p.successRate ?? 0) * p.requests;
      had.successRate = had.requests > 0 ? had.ok / had.requests : undefined;
      had.p50Ms = max(had.p50Ms, p.p50Ms);
      had.p99Ms = max(had.p99Ms, p.p99Ms);
      if (!had.protocols.includes(p.protocol)) had.protocols.push(p.protocol);
      had.keys.push(rowKey(p));
      continue;
    }
    const ns = p.source.includes('/') ? p.source.split('/')[0]! : (p.destination.split('/')[0] ?? '');
    const svc = p.service ? serviceFor(p.service, ns) : undefined;
    const via = p.service ? node('service', svc?.service ?? `${ns}/${p.service}`) : undefined;
    const e = {
      id,
      source: nodeOf(p.source),
      destination: nodeOf(p.destination),
      via,
      protocols: [p.protocol],
      requests: p.requests,
      rps: p.rps,
      successRate: p.successRate,
      p50Ms: p.p50Ms,
      p99Ms: p.p99Ms,
      share: undefined,
      weight: svc && svc.backends.length > 1 ? expected(svc, p.destination) : undefined,
      spark: [],
      mtls: mtlsOn ? inMtls.has(p.source) && inMtls.has(p.destination) : undefined,
      ok: (p.successRate ?? 0) * p.requests,
      keys: [rowKey(p)],
    };
    edges.set(id, e);
    if (e.weight !== undefined) split.set(`${e.source}|${via}`, [...(split.get(`${e.source}|${via}`) ?? []), e]);
  }
  for (const group of split.values()) {
    const total = group.reduce((a, e) => a + e.requests, 0);
    for (const e of group) e.share = total > 0 ? e.requests / total : undefined;
  }
  const out: GraphEdge[] = [...edges.values()].map(({ ok: _ok, keys, ...e }) => {
    const rates = keys.map((k) => history.rates(k));
    return { ...e, spark: rates[0]!.map((_, i) => Math.round(rates.reduce((a, r) => a + r[i]!, 0) * 100) / 100) };
  });
  out.sort((a, b) => b.rps - a.rps || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)); // not localeCompare: ICU's data costs RSS
  return { windowSeconds: stat.windowSeconds, sparkStepSeconds: history.stepMs / 1000, nodes: [...nodes.values()], edges: out };
}
