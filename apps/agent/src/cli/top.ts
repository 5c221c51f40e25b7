/** meshctl top (the busiest edges, live, fitted to the terminal) and meshctl edges (who talks to whom). */
import type { PairStat } from '../stats.js';
import type { CertsAnswer, StatView, Wire } from '../views.js';
import { tableLines } from './table.js';

type Stat = Wire<StatView>;

const fmtMs = (v: number | undefined) => (v === undefined ? '-' : v < 10 ? `${v.toFixed(2)}ms` : `${v.toFixed(1)}ms`);
const fmtPct = (v: number | undefined) => (v === undefined ? '-' : `${(v * 100).toFixed(2)}%`);

/** top's columns, most wanted first: the narrowest terminal keeps the first ones. */
const COLUMNS: { head: string; cell: (p: PairStat) => string; right?: boolean }[] = [
  { head: 'SOURCE', cell: (p) => p.source },
  { head: 'DESTINATION', cell: (p) => p.destination },
  { head: 'RPS', cell: (p) => p.rps.toFixed(1), right: true },
  { head: 'SUCCESS', cell: (p) => fmtPct(p.successRate), right: true },
  { head: 'P99', cell: (p) => fmtMs(p.p99Ms), right: true },
  { head: 'SERVICE', cell: (p) => p.service || '-' },
  { head: 'PROTOCOL', cell: (p) => p.protocol },
  { head: 'SIDE', cell: (p) => p.direction },
  { head: 'RPC', cell: (p) => p.rpc || '-' },
  { head: 'REQS', cell: (p) => String(p.requests), right: true },
  { head: 'P50', cell: (p) => fmtMs(p.p50Ms), right: true },
  { head: 'P95', cell: (p) => fmtMs(p.p95Ms), right: true },
];
/** The order they are shown in (stat's). */
const ORDER = ['SIDE', 'SOURCE', 'DESTINATION', 'SERVICE', 'PROTOCOL', 'RPC', 'REQS', 'RPS', 'SUCCESS', 'P50', 'P95', 'P99'];
const MIN_NAME = 12;

/** The busiest rows first, as many as fit `rows` lines (after the two header lines), with the columns that fit
 *  `cols` characters; names are shortened (…) before a column is dropped. */
export function topFrame(stat: Stat | undefined, error: string | undefined, cols: number, rows: number, everyS: number, now = new Date()): string[] {
  const head = `meshctl top  ${now.toISOString().slice(11, 19)}  ${stat ? `last ${stat.windowSeconds}s, ${stat.pairs.length} rows` : ''}  every ${everyS}s  q quits`;
  const lines = [error ? `${head}\nerror: ${error}` : head, ''].flatMap((l) => l.split('\n'));
  const pairs = [...(stat?.pairs ?? [])].sort((a, b) => b.rps - a.rps || a.source.localeCompare(b.source) || a.destination.localeCompare(b.destination));
  const shown = pairs.slice(0, Math.max(0, rows - lines.length - 1)) as PairStat[];
  if (!stat) return lines.map((l) => l.slice(0, cols));
  if (shown.length === 0) return [...lines, 'no requests seen yet'].map((l) => l.slice(0, cols));
  const fit = (n: number, nameMax: number) => {
    const chosen = COLUMNS.slice(0, n);
    const cut = (s: string) => (s.length > nameMax ? `${s.slice(0, nameMax - 1)}…` : s);
    const ordered = ORDER.map((h) => chosen.find((c) => c.head === h)).filter((c) => c !== undefined);
    const cells = [ordered.map((c) => c.head), ...shown.map((p) => ordered.map((c) => (c.head === 'SOURCE' || c.head === 'DESTINATION' ? cut(c.cell(p)) : c.cell(p))))];
    return tableLines(cells, { right: ordered.flatMap((c, i) => (c.right ? [i] : [])) });
  };
  const longest = Math.max(...shown.flatMap((p) => [p.source.length, p.destination.length]));
  let table: string[] = [];
  // Widest first: every column with whole names, then shorter names, then fewer columns.
  search: for (let n = COLUMNS.length; n >= 1; n--) {
    const floor = Math.min(MIN_NAME, longest);
    for (let nameMax = longest; ; nameMax = Math.max(floor, nameMax - 4)) {
      table = fit(n, nameMax);
      if (table.every((l) => l.length <= cols)) break search;
      if (nameMax === floor) break;
    }
  }
  return [...lines, ...table].map((l) => l.slice(0, cols));
}

export interface TopOptions {
  everyS: number;
  read: () => Promise<Stat>;
  input: NodeJS.ReadStream;
  output: NodeJS.WriteStream;
}

/** Runs until `q` (or Ctrl-C): the alternate screen, a frame every `everyS` and at each resize (SIGWINCH). */
export function top(o: TopOptions): Promise<number> {
  const { input, output } = o;
  let stat: Stat | undefined;
  let error: string | undefined;
  const draw = () => {
    const lines = topFrame(stat, error, output.columns || 80, output.rows || 24, o.everyS);
    output.write('\x1b[H' + lines.map((l) => `${l}\x1b[K`).join('\r\n') + '\x1b[J');
  };
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const refresh = async () => {
      try {
        stat = await o.read();
        error = undefined;
      } catch (err) {
        error = (err as Error).message;
      }
      if (done) return;
      draw();
      timer = setTimeout(() => void refresh(), o.everyS * 1000);
    };
    const quit = () => {
      done = true;
      clearTimeout(timer);
      output.off('resize', draw);
      input.off('data', onKey);
      input.setRawMode?.(false);
      input.pause();
      output.write('\x1b[?25h\x1b[?1049l');
      resolve(0);
    };
    const onKey = (b: Buffer) => {
      const k = b.toString();
      if (k === 'q' || k === 'Q' || k === '\x03') quit();
    };
    output.write('\x1b[?1049h\x1b[?25l');
    input.setRawMode?.(true);
    input.on('data', onKey);
    input.resume();
    // Node turns SIGWINCH into the stream's 'resize' event.
    output.on('resize', draw);
    draw();
    void refresh();
  });
}

/** Identity of each workload ("ns/name" or "name") from /v1/certs; empty when identities are off. */
function identities(certs: Wire<CertsAnswer> | undefined): Map<string, string> {
  const m = new Map<string, string>();
  if (!certs || 'error' in certs) return m;
  for (const w of certs.workloads) if (w.state !== 'pending') m.set(w.workload, w.id);
  return m;
}

/** Who talks to whom: one row per caller, callee and Service over the window (client-side rows, and server-side
 *  ones whose caller is outside the mesh's workloads), its protocols, and each side's identity when there is one. */
export function edgesTable(stat: Stat, certs: Wire<CertsAnswer> | undefined): string[][] {
  const ids = identities(certs);
  const id = (w: string) => ids.get(w) ?? ids.get(w.slice(w.indexOf('/') + 1)) ?? '-';
  const clients = new Set(stat.pairs.filter((p) => p.direction === 'client').map((p) => p.source));
  const rows = new Map<string, { p: (typeof stat.pairs)[number]; protocols: Set<string>; requests: number }>();
  for (const p of stat.pairs) {
    if ((p.direction === 'server' && clients.has(p.source)) || p.requests <= 0) continue;
    const k = `${p.direction}|${p.source}|${p.destination}|${p.service}`;
    const r = rows.get(k) ?? { p, protocols: new Set(), requests: 0 };
    r.protocols.add(p.protocol);
    r.requests += p.requests;
    rows.set(k, r);
  }
  const sorted = [...rows.values()].sort((a, b) => a.p.source.localeCompare(b.p.source) || a.p.destination.localeCompare(b.p.destination) || a.p.service.localeCompare(b.p.service));
  return [
    ['SOURCE', 'DESTINATION', 'SERVICE', 'PROTOCOLS', 'SOURCE IDENTITY', 'DESTINATION IDENTITY', 'REQS'],
    ...sorted.map(({ p, protocols, requests }) => [p.source, p.destination, p.service || '-', [...protocols].sort().join(','), id(p.source), id(p.destination), String(requests)]),
  ];
}
