// bench:mesh reports: the Markdown table (bench/results/mesh.md, also put into bench/README.md between markers)
// and the chart of the latency distributions (bench/results/mesh-latency.svg), plain SVG without dependencies.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';

export const LABELS = {
  direct: 'direct (no mesh)',
  mesh: 'mesh (eBPF: split + metrics)',
  mesh_mtls: 'mesh with mTLS (STRICT, data plane)',
  mesh_mtls_local: 'mesh with mTLS, same-node shortcut (STRICT, direct)',
  haproxy_http: 'HAProxy pair, HTTP',
  haproxy_tls: 'HAProxy pair, mutual TLS',
};
const COLORS = { direct: '#555555', mesh: '#1b9e77', mesh_mtls: '#e7298a', mesh_mtls_local: '#e6ab02', haproxy_http: '#d95f02', haproxy_tls: '#7570b3' };

const f = (x, d) => (x === undefined || x === null || Number.isNaN(x) ? '–' : x.toFixed(d));
const signed = (x, d) => (x === undefined ? '–' : `${x >= 0 ? '+' : '−'}${Math.abs(x).toFixed(d)}`);
const int = (x) => (x === undefined ? '–' : Math.round(x).toLocaleString('en-US'));

export function markdownTable(r) {
  const p = r.params;
  const lines = [];
  lines.push(
    `Latency: all arms at once, a fixed ${int(p.rate)} requests/s in all, each arm on its own ${p.connections} keep-alive connections, ${p.bodyBytes}-byte responses, ` +
      `the arms' requests interleaved one by one (${p.latencyRuns} runs of ${p.latencyS} s, every request). Throughput: closed loops of ${p.closedS} s, ` +
      `every arm up, the arms taking turns, ${p.closedRounds} rounds; medians. CPU and memory: ${p.reps} repetitions of each arm alone at ${int(p.rate)} requests/s for ${p.fixedS} s, ` +
      `the arms taking turns; medians.`,
  );
  lines.push('');
  lines.push('| arm | p50 ms | p90 ms | p99 ms | added p50 / p99 ms | max rps | vs direct | new conn/s | CPU ms per 1k req | RSS MiB |');
  lines.push('|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
  for (const [arm, a] of Object.entries(r.arms)) {
    const added = arm === 'direct' ? '–' : `${signed(a.added_p50_ms, 3)} / ${signed(a.added_p99_ms, 3)}`;
    lines.push(
      `| ${LABELS[arm] ?? arm} | ${f(a.p50_ms, 3)} | ${f(a.p90_ms, 3)} | ${f(a.p99_ms, 3)} | ${added} | ${int(a.rps)} | ${arm === 'direct' ? '1' : f(a.throughput_vs_direct, 3)} | ${int(a.new_connections_per_s)} | ${arm === 'direct' ? '0 (baseline)' : f(a.cpu_ms_per_1k, 1)} | ${arm === 'direct' ? '–' : f(a.rss_mb, 1)} |`,
    );
  }
  lines.push('');
  lines.push('| ratio (mesh or mesh_mtls ÷ …) | value | goal | met |');
  lines.push('|---|--:|--|--|');
  for (const [k, g] of Object.entries(r.goals)) lines.push(`| \`${k}\` | ${f(r.ratios[k], 3)} | ${g.goal} | ${g.met === null ? g.why : g.met ? 'yes' : '**no**'} |`);
  lines.push('');
  lines.push('CPU per 1,000 requests, ms (medians; the formula is in bench/README.md, bench:mesh, "Figures"):');
  lines.push('');
  lines.push('| arm | added at the fixed rate | = own processes | + Δ load generator, nginx, ksoftirqd | (BPF programs) | added at saturation |');
  lines.push('|---|--:|--:|--:|--:|--:|');
  for (const [arm, a] of Object.entries(r.arms)) {
    const c = a.cpu_components_ms_per_1k;
    lines.push(
      `| ${LABELS[arm] ?? arm} | ${arm === 'direct' ? '0' : f(a.cpu_ms_per_1k, 1)} | ${f(c.own, 1)} | ${arm === 'direct' ? `(${f(c.app_total, 1)} in all)` : signed(c.app_delta, 1)} | ${arm.startsWith('mesh') ? f(c.bpf, 2) : '–'} | ${arm === 'direct' ? '0' : f(a.saturated_cpu_ms_per_1k, 2)} |`,
    );
  }
  lines.push('');
  const m = r.memory;
  if (m.agent && m.haproxy_http) {
    const s = r.secondary_ratios;
    lines.push(
      `Memory at 10 pod pairs: the agent ${f(m.agent.rss_mb, 1)} MiB RSS against 10 × (${f(m.haproxy_http.client_proxy_mb, 1)} + ${f(m.haproxy_http.server_proxy_mb, 1)}) = ` +
        `${f(m.haproxy_http.ten_pairs_mb, 1)} MiB of HAProxy HTTP pairs${m.haproxy_tls ? ` (${f(m.haproxy_tls.ten_pairs_mb, 1)} MiB with TLS)` : ''}. ` +
        `The ratio counts the agent's BPF maps too (${f(m.agent.bpf_maps_mb, 1)} MiB of kernel memory); its RSS alone: ${f(s.memory_rss_only_vs_haproxy_10_pairs, 3)}; ` +
        `counting the proxies' shared file-backed pages once (${f(m.haproxy_http.ten_pairs_shared_files_mb, 1)} MiB): ${f(s.memory_vs_haproxy_10_pairs_shared_files, 3)}.`,
    );
    lines.push('');
  }
  const s2 = r.secondary_ratios;
  if (s2?.per_repetition && r.arms.mesh) {
    const list = (xs) => xs.map((x) => f(x, 3)).join(', ');
    lines.push(
      `Per latency run: added p99 ms, mesh ${list(s2.per_latency_run.mesh_added_p99_ms)}, HAProxy HTTP ${list(s2.per_latency_run.haproxy_http_added_p99_ms)}; ` +
        `\`added_p99_vs_haproxy_http\` ${list(s2.per_latency_run.added_p99_vs_haproxy_http)}. One step below the tail, \`added_p90_vs_haproxy_http\` = ${f(s2.added_p90_vs_haproxy_http, 3)}.`,
    );
    lines.push('');
    lines.push(
      `Throughput per round: mesh ÷ direct ${list(s2.per_round_throughput_vs_direct)}. ` +
        `Per repetition, each arm alone (against the direct arm of the same repetition): added p99 ms at the fixed rate, mesh ${list(s2.per_repetition.mesh_added_p99_ms)}, HAProxy HTTP ${list(s2.per_repetition.haproxy_http_added_p99_ms)} ` +
        `(from these runs' medians \`added_p99_vs_haproxy_http\` would be ${f(s2.sequential_added_p99_vs_haproxy_http, 3)}).`,
    );
    lines.push('');
  }
  if (r.noise) {
    lines.push(
      `Scheduling noise (the load generator's own sends against their schedule, median run): p50 ${f(r.noise.late_p50_ms, 3)} ms, p99 ${f(r.noise.late_p99_ms, 3)} ms, ` +
        `p99.9 ${f(r.noise.late_p999_ms, 3)} ms; ${f(100 * r.noise.sends_over_1ms_late, 2)} % of sends more than 1 ms late.`,
    );
    lines.push('');
  }
  const load = r.machine.loadavg1m;
  lines.push(
    `Run of ${r.date.slice(0, 16).replace('T', ' ')} UTC, commit ${r.commit.sha.slice(0, 10)}${r.commit.dirty ? ' (dirty)' : ''}, kernel ${r.kernel}, ` +
      `${r.machine.cores} × ${r.machine.cpu}, 1-minute load ${load.before} before / ${load.after} after, ${Math.round(r.duration_s)} s.`,
  );
  return lines.join('\n') + '\n';
}

export function latencySvg(r) {
  const W = 800;
  const H = 460;
  const m = { l: 70, r: 40, t: 50, b: 80 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const xMax = 4; // 99.99 %
  const xOf = (p) => m.l + (Math.min(xMax, Math.log10(1 / (1 - p))) / xMax) * pw;
  const all = Object.values(r.distribution).flatMap((d) => d.points.map((pt) => pt[1])).filter((v) => v > 0);
  const lo = Math.log10(Math.min(...all));
  const hi = Math.log10(Math.max(...all));
  const y0 = Math.floor(lo * 3) / 3;
  const y1 = Math.ceil(hi * 3) / 3;
  const yOf = (ms) => m.t + ph - ((Math.log10(ms) - y0) / (y1 - y0)) * ph;
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">Latency by percentile, all arms at once: ${r.params.rate.toLocaleString('en-US')} requests/s in all, ${r.params.connections} connections per arm, 1 KiB responses</text>`,
  );
  out.push(
    `<text x="${W / 2}" y="39" text-anchor="middle" fill="#555">every request of ${r.params.latencyRuns} runs × ${r.params.latencyS} s; ${r.date.slice(0, 10)}, ${r.commit.sha.slice(0, 10)}, kernel ${r.kernel}</text>`,
  );
  // y grid: 1-2-5 ticks in range
  for (let e = Math.floor(y0) - 1; e <= Math.ceil(y1); e++) {
    for (const k of [1, 2, 5]) {
      const v = k * 10 ** e;
      const lv = Math.log10(v);
      if (lv < y0 - 1e-9 || lv > y1 + 1e-9) continue;
      const y = yOf(v);
      out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="#e5e5e5"/>`);
      out.push(`<text x="${m.l - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end">${v >= 1 ? v : v.toPrecision(1)}</text>`);
    }
  }
  for (const [p, label] of [
    [0, '0%'],
    [0.5, '50%'],
    [0.9, '90%'],
    [0.99, '99%'],
    [0.999, '99.9%'],
    [0.9999, '99.99%'],
  ]) {
    const x = xOf(p);
    out.push(`<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${m.t}" y2="${m.t + ph}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${x.toFixed(1)}" y="${m.t + ph + 16}" text-anchor="middle">${label}</text>`);
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
  out.push(`<text x="${m.l + pw / 2}" y="${m.t + ph + 36}" text-anchor="middle">percentile (log scale of 1 / (1 − p))</text>`);
  out.push(`<text transform="translate(18 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">latency, ms (log scale)</text>`);
  let lx = m.l;
  for (const [arm, d] of Object.entries(r.distribution)) {
    const pts = d.points.map(([p, v]) => `${xOf(p).toFixed(1)},${yOf(v).toFixed(1)}`).join(' ');
    out.push(`<polyline points="${pts}" fill="none" stroke="${COLORS[arm] ?? '#000'}" stroke-width="2"/>`);
    const ly = H - 18;
    out.push(`<line x1="${lx}" x2="${lx + 24}" y1="${ly - 4}" y2="${ly - 4}" stroke="${COLORS[arm] ?? '#000'}" stroke-width="3"/>`);
    const text = `${LABELS[arm] ?? arm}`;
    out.push(`<text x="${lx + 30}" y="${ly}">${text}</text>`);
    lx += 40 + text.length * 6.6;
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

const BEGIN = '<!-- bench:mesh table: begin (written by bench/mesh/bench.mjs) -->';
const END = '<!-- bench:mesh table: end -->';
/** Replaces the table between the markers in the README; leaves the file alone if they are missing. */
export function updateReadme(file, md) {
  const text = readFileSync(file, 'utf8');
  const a = text.indexOf(BEGIN);
  const b = text.indexOf(END);
  if (a < 0 || b < a) {
    console.error(`${file}: no bench:mesh markers, table not updated`);
    return;
  }
  const next = `${text.slice(0, a + BEGIN.length)}\n${md}${text.slice(b)}`;
  if (next === text) return;
  writeFileSync(`${file}.tmp`, next);
  renameSync(`${file}.tmp`, file);
}
