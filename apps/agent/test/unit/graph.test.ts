// The page's graph (nodes, edges, observed share against weight, sparklines), meshctl top's frame fitted to a
// terminal, and meshctl edges' identities.
import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { edgesTable, topFrame } from '../../src/cli/top.js';
import { EdgeHistory, graphView } from '../../src/graph.js';
import type { PairStat } from '../../src/stats.js';
import { loadPage, UI_PAGE } from '../../src/ui.js';
import type { Applied } from '../../src/views.js';

const pair = (p: Partial<PairStat> & Pick<PairStat, 'source' | 'destination'>): PairStat => ({
  direction: 'client', service: '', protocol: 'HTTP/1.1', rpc: '', requests: 0, rps: 0, successRate: 1, p50Ms: 1, p95Ms: 2, p99Ms: 3, ...p,
});

const workload = (name: string, addr: string) => ({ name, namespace: 'default', serviceAccount: name, labels: {}, cgroup: `default/${name}`, addresses: [addr] });
const applied = {
  generation: 1, revision: 'r', at: '', writes: 0, routes: [],
  workloads: [workload('productpage', '127.0.2.1'), workload('reviews-v1', '127.0.1.1'), workload('reviews-v2', '127.0.1.2')],
  services: [
    { key: 'k', addr: '127.10.0.1', family: 4, port: 9080, proto: 'TCP', service: 'default/reviews', route: 'default/canary', backends: [
      { ref: 'reviews-v1', weight: 90, endpoints: [{ addr: '127.0.1.1', port: 9080 }] },
      { ref: 'reviews-v2', weight: 10, endpoints: [{ addr: '127.0.1.2', port: 9080 }] },
    ] },
  ],
} as unknown as Applied;

const demo = [
  pair({ source: 'default/productpage', destination: 'default/reviews-v1', service: 'reviews', requests: 360, rps: 36 }),
  pair({ source: 'default/productpage', destination: 'default/reviews-v2', service: 'reviews', requests: 40, rps: 4 }),
  pair({ direction: 'server', source: 'default/productpage', destination: 'default/reviews-v1', requests: 360, rps: 36 }),
  pair({ direction: 'server', source: '10.9.9.9', destination: 'default/reviews-v1', requests: 5, rps: 0.5 }),
];

describe('graphView', () => {
  it('an edge is marked mTLS when the agent runs mTLS and both ends are enrolled; undefined without mTLS', () => {
    const enrolledApplied = {
      ...applied,
      workloads: [
        { ...workload('productpage', '127.0.2.1'), labels: { 'mesh.dev/mtls': 'enabled' } },
        { ...workload('reviews-v1', '127.0.1.1'), labels: { 'istio.io/dataplane-mode': 'ambient' } },
        workload('reviews-v2', '127.0.1.2'),
      ],
    } as unknown as Applied;
    const byDest = (g: ReturnType<typeof graphView>) => Object.fromEntries(g.edges.filter((e) => e.source === 'workload:default/productpage').map((e) => [e.destination, e.mtls]));
    expect(byDest(graphView({ windowSeconds: 10, pairs: demo }, enrolledApplied, new EdgeHistory(), true))).toEqual({
      'workload:default/reviews-v1': true,
      // reviews-v2 is not enrolled: productpage's connections to it stay plaintext.
      'workload:default/reviews-v2': false,
    });
    // A caller outside the config is never in mTLS.
    expect(graphView({ windowSeconds: 10, pairs: demo }, enrolledApplied, new EdgeHistory(), true).edges.find((e) => e.source === 'peer:10.9.9.9')?.mtls).toBe(false);
    expect(Object.values(byDest(graphView({ windowSeconds: 10, pairs: demo }, enrolledApplied, new EdgeHistory(), false)))).toEqual([undefined, undefined]);
    // The page shows it, in the table and in each edge's spoken label.
    const page = readFileSync(UI_PAGE, 'utf8');
    expect(page).toMatch(/<th scope="col">mTLS<\/th>/);
    expect(page).toMatch(/mutual TLS/);
  });

  it('client rows are edges through their Service; a split edge carries its observed share and its weight', () => {
    const g = graphView({ windowSeconds: 10, pairs: demo }, applied, new EdgeHistory());
    expect(g.edges.map((e) => [e.source, e.via, e.destination, e.share, e.weight])).toEqual([
      ['workload:default/productpage', 'service:default/reviews', 'workload:default/reviews-v1', 0.9, 0.9],
      ['workload:default/productpage', 'service:default/reviews', 'workload:default/reviews-v2', 0.1, 0.1],
      // A caller outside the config shows as a peer, from the server's side; productpage's server row does not repeat its edge.
      ['peer:10.9.9.9', undefined, 'workload:default/reviews-v1', undefined, undefined],
    ]);
    expect(g.nodes.map((n) => n.id).sort()).toEqual(['peer:10.9.9.9', 'service:default/reviews', 'workload:default/productpage', 'workload:default/reviews-v1', 'workload:default/reviews-v2']);
  });

  it("a pair's rows of several protocols make one edge: requests summed, success weighted, the slowest p99, each row's sparkline added", () => {
    const h = new EdgeHistory(10_000, 3);
    const k1 = 'client|default/productpage|default/reviews-v1|reviews|HTTP/1.1|';
    const k2 = 'client|default/productpage|default/reviews-v1|reviews|gRPC|reviews.Reviews/Get';
    h.record(0, new Map());
    h.record(10_000, new Map([[k1, 100], [k2, 50]]));
    const rows = [
      pair({ source: 'default/productpage', destination: 'default/reviews-v1', service: 'reviews', requests: 30, rps: 3, successRate: 1, p99Ms: 5 }),
      pair({ source: 'default/productpage', destination: 'default/reviews-v1', service: 'reviews', protocol: 'gRPC', rpc: 'reviews.Reviews/Get', requests: 10, rps: 1, successRate: 0.5, p99Ms: 9 }),
    ];
    const g = graphView({ windowSeconds: 10, pairs: rows }, applied, h);
    expect(g.edges).toHaveLength(1);
    expect(g.edges[0]).toMatchObject({ protocols: ['HTTP/1.1', 'gRPC'], requests: 40, rps: 4, successRate: 35 / 40, p99Ms: 9, spark: [15] });
    expect(edgesTable({ windowSeconds: 10, pairs: rows }, undefined).slice(1)).toEqual([['default/productpage', 'default/reviews-v1', 'reviews', 'HTTP/1.1,gRPC', '-', '-', '40']]);
  });

  it('sparklines: requests per second between snapshots a step apart; a pair first seen counts from zero', () => {
    const h = new EdgeHistory(10_000, 3);
    const key = 'client|default/productpage|default/reviews-v1|reviews';
    h.record(0, new Map());
    h.record(5_000, new Map([[key, 999]])); // within the step: not kept
    h.record(10_000, new Map([[key, 100]]));
    h.record(20_000, new Map([[key, 300]]));
    h.record(30_000, new Map([[key, 300]]));
    h.record(40_000, new Map([[key, 400]]));
    // Three points kept: the oldest (0 → 10 s) dropped.
    expect(h.rates(key)).toEqual([20, 0, 10]);
    expect(h.rates('nobody')).toEqual([0, 0, 0]);
  });
});

describe('the page', () => {
  it('is one small file that loads nothing from elsewhere; its script and style are allowed by hash only', () => {
    const page = loadPage(UI_PAGE);
    expect(page.html.length).toBeLessThan(20_000);
    expect(page.html).not.toMatch(/(src|href)=["']?(https?:)?\/\//);
    expect(page.html).not.toMatch(/<script src|<link /);
    expect(page.headers['content-security-policy']).toMatch(/default-src 'none'; connect-src 'self'; script-src 'sha256-[A-Za-z0-9+/=]+'; style-src 'sha256-/);
    expect(readFileSync(UI_PAGE, 'utf8')).toContain('prefers-contrast');
  });
});

describe('meshctl top frame', () => {
  const stat = { windowSeconds: 10, pairs: demo };
  it('busiest first with every column when wide; fewer columns and shortened names when narrow; never wider than the terminal', () => {
    const wide = topFrame(stat, undefined, 140, 30, 2);
    expect(wide[2]).toMatch(/^SIDE\s+SOURCE\s+DESTINATION\s+SERVICE\s+PROTOCOL\s+RPC\s+REQS\s+RPS\s+SUCCESS\s+P50\s+P95\s+P99$/);
    expect(wide.slice(3).map((l) => l.split(/\s+/)[7])).toEqual(['36.0', '36.0', '4.0', '0.5']);
    const narrow = topFrame(stat, undefined, 50, 30, 2);
    expect(narrow[2]).toMatch(/^SOURCE\s+DESTINATION\s+RPS\s+SUCCESS\s+P99$/);
    expect(narrow.some((l) => l.includes('…'))).toBe(true);
    for (const cols of [20, 40, 60, 80, 100]) expect(topFrame(stat, undefined, cols, 30, 2).every((l) => l.length <= cols)).toBe(true);
    // As many rows as fit the height (two header lines and the table's).
    expect(topFrame(stat, undefined, 140, 5, 2)).toHaveLength(5);
  });
  it('an error is shown above the last rows', () => {
    expect(topFrame(stat, 'no answer', 140, 30, 2)[1]).toBe('error: no answer');
  });
});

describe('meshctl edges', () => {
  it("each side's SPIFFE ID from /v1/certs; '-' when identities are off", () => {
    const certs = { trustDomain: 't', ca: { mode: 'builtin', svidTtlSeconds: 1 }, bundle: [], workloads: [
      { workload: 'default/productpage', id: 'spiffe://t/ns/default/sa/productpage', state: 'valid' },
    ] } as never;
    const rows = edgesTable({ windowSeconds: 60, pairs: demo }, certs);
    expect(rows.slice(1).map((r) => [r[0], r[1], r[4], r[5]])).toEqual([
      ['10.9.9.9', 'default/reviews-v1', '-', '-'],
      ['default/productpage', 'default/reviews-v1', 'spiffe://t/ns/default/sa/productpage', '-'],
      ['default/productpage', 'default/reviews-v2', 'spiffe://t/ns/default/sa/productpage', '-'],
    ]);
    expect(edgesTable({ windowSeconds: 60, pairs: demo }, { error: 'workload identities are off' }).slice(1).every((r) => r[4] === '-' && r[5] === '-')).toBe(true);
  });
});
