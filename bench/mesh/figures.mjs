// bench:mesh's figures: from the runs' raw readings to the result file's arms, ratios against the goals,
// secondary ratios, the latency distribution and the machine's noise (formulas: bench/README.md, "bench:mesh").
import { performance } from 'node:perf_hooks';

import { header, median, round } from '../lib.mjs';
import { haproxyVersion } from './arms.mjs';
import { pctMs } from './measurement.mjs';
import { ADDR, ARMS, DP, loadBefore, params, PORT, quick, run, t0 } from './topology.mjs';

/** The result file's content from what the run collected. */
export function figures({ raw, latencies, latencyRuns, closedRuns, newConnRuns = [], order }) {
  const OWN = { direct: [], mesh: ['agent'], mesh_mtls: ['agent', 'dataplane'], mesh_mtls_local: ['agent', 'dataplane'], haproxy_http: ['haproxy_client', 'haproxy_v1', 'haproxy_v2'], haproxy_tls: ['haproxy_client', 'haproxy_v1', 'haproxy_v2'] };
  const APP = ['loadgen', 'nginx_v1', 'nginx_v2', 'ksoftirqd'];
  const sum = (obj, keys) => keys.reduce((a, k) => a + (obj[k] ?? 0), 0);
  const per1k = (ms, requests) => (ms * 1000) / requests;
  const med = (xs, d = 3) => round(median(xs), d);

  // CPU per repetition, each arm against the direct arm of the same repetition.
  const cpuRows = {};
  for (const arm of ARMS) {
    cpuRows[arm] = raw[arm].map((r) => {
      const f = r.fixed;
      const direct = raw.direct?.find((d) => d.rep === r.rep)?.fixed;
      const own = per1k(sum(f.cpu_ms, OWN[arm]), f.requests);
      const app = per1k(sum(f.cpu_ms, APP), f.requests);
      const appDirect = direct ? per1k(sum(direct.cpu_ms, APP), direct.requests) : app;
      const bpf = per1k(Object.values(f.bpf).reduce((a, b) => a + b.ms, 0), f.requests);
      return {
        own_ms_per_1k: own,
        app_ms_per_1k: app,
        app_delta_ms_per_1k: app - appDirect,
        bpf_ms_per_1k: bpf,
        softirq_ms_per_1k: per1k(f.system_ms.softirq, f.requests),
        softirq_delta_ms_per_1k: per1k(f.system_ms.softirq, f.requests) - (direct ? per1k(direct.system_ms.softirq, direct.requests) : 0),
        machine_busy_ms_per_1k: per1k(f.system_ms.busy, f.requests),
        // The mesh's programs run inside the app processes: never count less than their measured run time.
        cpu_ms_per_1k: arm === 'direct' ? 0 : own + (arm.startsWith('mesh') ? Math.max(app - appDirect, bpf) : app - appDirect),
      };
    });
  }
  // The same at saturation: each closed-loop run against the direct arm's run of the same round (BPF stats off).
  const saturatedRows = {};
  for (const arm of ARMS) {
    saturatedRows[arm] = closedRuns
      .filter((c) => c.arm === arm)
      .map((c) => {
        const d = closedRuns.find((x) => x.arm === 'direct' && x.round === c.round);
        return arm === 'direct' ? 0 : per1k(sum(c.cpu_ms, OWN[arm]), c.requests) + per1k(sum(c.cpu_ms, APP), c.requests) - (d ? per1k(sum(d.cpu_ms, APP), d.requests) : 0);
      });
  }
  const closedOf = (arm) => closedRuns.filter((c) => c.arm === arm);
  /** Every request of the latency phase per arm, sorted (ns). */
  const sortedLatencies = Object.fromEntries(ARMS.map((a) => [a, Float64Array.from(latencies[a]).sort()]));
  const rssOf = (arm, roles) => median(raw[arm].map((r) => sum(Object.fromEntries(Object.entries(r.fixed.memory).map(([k, v]) => [k, v.rss])), roles)));
  const results = {};
  for (const arm of ARMS) {
    const fx = raw[arm].map((r) => r.fixed);
    const c = cpuRows[arm];
    const all = sortedLatencies[arm];
    results[arm] = {
      // Latency: the latency phase (all arms at once, interleaved), every request of its runs.
      p50_ms: pctMs(all, 0.5),
      p90_ms: pctMs(all, 0.9),
      p99_ms: pctMs(all, 0.99),
      p999_ms: pctMs(all, 0.999),
      latency_requests: all.length,
      // The same from the arm's own fixed-rate runs (one arm at a time): medians over the repetitions.
      sequential: {
        p50_ms: med(fx.map((f) => f.p50_us / 1000), 4),
        p90_ms: med(fx.map((f) => f.p90_us / 1000), 4),
        p99_ms: med(fx.map((f) => f.p99_us / 1000), 4),
      },
      rps: med(closedOf(arm).map((r) => r.rps), 0),
      /** One connection per request, closed loop: requests (= new connections) per second, medians. */
      new_connections_per_s: newConnRuns.some((r) => r.arm === arm) ? med(newConnRuns.filter((r) => r.arm === arm).map((r) => r.rps), 0) : undefined,
      new_connections_p99_ms: newConnRuns.some((r) => r.arm === arm) ? med(newConnRuns.filter((r) => r.arm === arm).map((r) => r.p99_us / 1000), 3) : undefined,
      cpu_ms_per_1k: med(c.map((x) => x.cpu_ms_per_1k), 2),
      rss_mb: round(rssOf(arm, OWN[arm]), 1),
      fixed_rate_rps: med(fx.map((f) => f.rps), 1),
      closed_loop_p99_ms: med(closedOf(arm).map((r) => r.p99_us / 1000), 4),
      saturated_cpu_ms_per_1k: med(saturatedRows[arm], 2),
      cpu_components_ms_per_1k: {
        own: med(c.map((x) => x.own_ms_per_1k), 2),
        app_delta: med(c.map((x) => x.app_delta_ms_per_1k), 2),
        bpf: med(c.map((x) => x.bpf_ms_per_1k), 3),
        app_total: med(c.map((x) => x.app_ms_per_1k), 2),
        softirq_system: med(c.map((x) => x.softirq_ms_per_1k), 2),
        softirq_system_delta: med(c.map((x) => x.softirq_delta_ms_per_1k), 2),
        machine_busy: med(c.map((x) => x.machine_busy_ms_per_1k), 2),
      },
    };
  }
  for (const arm of ARMS) {
    if (arm === 'direct' || !results.direct) continue;
    const r = results[arm];
    r.added_p50_ms = round(r.p50_ms - results.direct.p50_ms, 4);
    r.added_p90_ms = round(r.p90_ms - results.direct.p90_ms, 4);
    r.added_p99_ms = round(r.p99_ms - results.direct.p99_ms, 4);
    r.sequential.added_p99_ms = round(r.sequential.p99_ms - results.direct.sequential.p99_ms, 4);
    r.throughput_vs_direct = round(r.rps / results.direct.rps, 3);
  }
  const memory = {};
  for (const arm of ['haproxy_http', 'haproxy_tls'].filter((a) => results[a])) {
    const client = rssOf(arm, ['haproxy_client']);
    const server = (rssOf(arm, ['haproxy_v1']) + rssOf(arm, ['haproxy_v2'])) / 2;
    const anon = (role) => median(raw[arm].map((r) => r.fixed.memory[role].anon));
    memory[arm] = {
      client_proxy_mb: round(client, 2),
      server_proxy_mb: round(server, 2),
      per_pod_pair_mb: round(client + server, 2),
      ten_pairs_mb: round(10 * (client + server), 1),
      /** Stricter: the file-backed pages (binary, libraries) that the proxies of a node share counted once. */
      ten_pairs_shared_files_mb: round(
        10 * (anon('haproxy_client') + (anon('haproxy_v1') + anon('haproxy_v2')) / 2) + Math.max(...['haproxy_client', 'haproxy_v1', 'haproxy_v2'].map((role) => median(raw[arm].map((r) => r.fixed.memory[role].file)))),
        1,
      ),
    };
  }
  if (results.mesh) {
    memory.agent = {
      rss_mb: results.mesh.rss_mb,
      anon_mb: round(median(raw.mesh.map((r) => r.fixed.memory.agent.anon)), 1),
      bpf_maps_mb: med(raw.mesh.map((r) => r.checks.bpf_maps_mb), 2),
      /** Part of the RSS: BPF maps mapped into the agent (the HTTP/2 ring buffer, its data pages mapped twice),
       *  the same pages as their bytes_memlock: counted once, in bpf_maps_mb. */
      bpf_mapped_in_rss_mb: med(raw.mesh.map((r) => r.fixed.memory.agent.bpf_mapped ?? 0), 2),
      config: `the bench's 3 Workloads, 3 Services and 1 HTTPRoute, plus ${params.extraPodPairs} more pod pairs (a client and a server Workload and a Service each)`,
    };
  }
  const ratio = (a, b) => (a === undefined || b === undefined || !b ? undefined : round(a / b, 3));
  /** What the mesh adds over what a proxy adds: a ratio only when the proxy's addition is above zero. When the
   *  direct arm's own percentile came out above the proxy arm's, the run's noise exceeded the differences and no
   *  ratio of the two would mean anything (two negative numbers give a large positive one). */
  const addedRatio = (a, b) => (b === undefined || b <= 0 ? undefined : ratio(a, b));
  const ratios = {
    added_p99_vs_haproxy_http: addedRatio(results.mesh?.added_p99_ms, results.haproxy_http?.added_p99_ms),
    throughput_vs_direct: results.mesh?.throughput_vs_direct,
    cpu_vs_haproxy_http: ratio(results.mesh?.cpu_ms_per_1k, results.haproxy_http?.cpu_ms_per_1k),
    /** The agent's whole cost: its RSS and the kernel memory of its maps (memlock), which the proxies do not have. */
    memory_vs_haproxy_10_pairs: ratio(memory.agent && memory.agent.rss_mb - memory.agent.bpf_mapped_in_rss_mb + memory.agent.bpf_maps_mb, memory.haproxy_http?.ten_pairs_mb),
  };
  // The mTLS arm against the HAProxy pair in mutual TLS (issue 18, Done when 6).
  if (results.mesh_mtls) {
    ratios.added_p99_mtls_vs_haproxy_tls = addedRatio(results.mesh_mtls.added_p99_ms, results.haproxy_tls?.added_p99_ms);
    ratios.cpu_mtls_vs_haproxy_tls = ratio(results.mesh_mtls.cpu_ms_per_1k, results.haproxy_tls?.cpu_ms_per_1k);
    ratios.throughput_mtls_vs_haproxy_tls = ratio(results.mesh_mtls.rps, results.haproxy_tls?.rps);
    ratios.new_connections_mtls_vs_haproxy_tls = ratio(results.mesh_mtls.new_connections_per_s, results.haproxy_tls?.new_connections_per_s);
  }
  // The same-node shortcut against no mesh (issue 20, Done when 5).
  if (results.mesh_mtls_local) ratios.throughput_mtls_local_vs_direct = ratio(results.mesh_mtls_local.rps, results.direct?.rps);
  const goals = {
    added_p99_vs_haproxy_http:
      ratios.added_p99_vs_haproxy_http === undefined && results.haproxy_http?.added_p99_ms !== undefined
        ? { goal: '≤ 0.3', met: null, why: `not measurable in this run: the direct arm's p99 (${results.direct.p99_ms} ms) was not below the HAProxy pair's (${results.haproxy_http.p99_ms} ms)` }
        : { goal: '≤ 0.3', met: ratios.added_p99_vs_haproxy_http !== undefined && ratios.added_p99_vs_haproxy_http <= 0.3 },
    throughput_vs_direct: { goal: '≥ 0.95', met: ratios.throughput_vs_direct !== undefined && ratios.throughput_vs_direct >= 0.95 },
    cpu_vs_haproxy_http: { goal: '≤ 0.25', met: ratios.cpu_vs_haproxy_http !== undefined && ratios.cpu_vs_haproxy_http <= 0.25 },
    memory_vs_haproxy_10_pairs: { goal: '≤ 0.25', met: ratios.memory_vs_haproxy_10_pairs !== undefined && ratios.memory_vs_haproxy_10_pairs <= 0.25 },
  };
  if (results.mesh_mtls) {
    const goal = (k, text, ok) => (goals[k] = ratios[k] === undefined ? { goal: text, met: null, why: 'not measurable in this run (an arm missing, or the direct arm\'s p99 not below the other\'s)' } : { goal: text, met: ok(ratios[k]) });
    goal('added_p99_mtls_vs_haproxy_tls', '≤ 0.5', (x) => x <= 0.5);
    goal('cpu_mtls_vs_haproxy_tls', '≤ 0.5', (x) => x <= 0.5);
    goal('throughput_mtls_vs_haproxy_tls', '≥ 1.5', (x) => x >= 1.5);
    goal('new_connections_mtls_vs_haproxy_tls', '≥ 0.5', (x) => x >= 0.5);
  }
  if (results.mesh_mtls_local) {
    const k = 'throughput_mtls_local_vs_direct';
    goals[k] = ratios[k] === undefined ? { goal: '≥ 0.9', met: null, why: 'not measurable in this run (no direct arm)' } : { goal: '≥ 0.9', met: ratios[k] >= 0.9 };
  }
  // The mesh arm's goals mean nothing in a run without it.
  for (const k of Object.keys(goals)) if (!results.mesh && !k.includes('mtls')) delete goals[k];
  const byRep = (arm, rep) => raw[arm]?.find((r) => r.rep === rep);
  const perRep = (fn) => (results.direct ? raw.direct.map((d) => fn(d.rep)).filter((x) => x !== undefined).map((x) => round(x, 3)) : []);
  const secondary = {
    /** p90 sits below the machine's scheduling noise (see noise), p99 does not: the same ratio one step lower. */
    added_p90_vs_haproxy_http: addedRatio(results.mesh?.added_p90_ms, results.haproxy_http?.added_p90_ms),
    /** Each closed-loop round's own throughput ratio (mesh ÷ direct of the same round): the spread. */
    per_round_throughput_vs_direct: [...new Set(closedRuns.map((c) => c.round))]
      .map((n) => {
        const m = closedRuns.find((c) => c.arm === 'mesh' && c.round === n);
        const d = closedRuns.find((c) => c.arm === 'direct' && c.round === n);
        return m && d ? round(m.rps / d.rps, 3) : undefined;
      })
      .filter((x) => x !== undefined),
    /** Each latency run's own figures (all arms at once): the spread of the ratio the goal is on. */
    per_latency_run: {
      mesh_added_p99_ms: latencyRuns.filter((r) => r.arms.mesh && r.arms.direct).map((r) => round(r.arms.mesh.p99_ms - r.arms.direct.p99_ms, 4)),
      haproxy_http_added_p99_ms: latencyRuns.filter((r) => r.arms.haproxy_http && r.arms.direct).map((r) => round(r.arms.haproxy_http.p99_ms - r.arms.direct.p99_ms, 4)),
      added_p99_vs_haproxy_http: latencyRuns
        .filter((r) => r.arms.mesh && r.arms.haproxy_http && r.arms.direct)
        .map((r) => addedRatio(r.arms.mesh.p99_ms - r.arms.direct.p99_ms, r.arms.haproxy_http.p99_ms - r.arms.direct.p99_ms)),
    },
    /** The same ratio from the arms' own fixed-rate runs, one arm at a time (medians over the repetitions). */
    sequential_added_p99_vs_haproxy_http: addedRatio(results.mesh?.sequential.added_p99_ms, results.haproxy_http?.sequential.added_p99_ms),
    /** Each repetition's own figures (each arm against the direct arm of the same repetition): the spread. */
    per_repetition: {
      mesh_added_p99_ms: perRep((i) => byRep('mesh', i) && (byRep('mesh', i).fixed.p99_us - byRep('direct', i).fixed.p99_us) / 1000),
      haproxy_http_added_p99_ms: perRep((i) => byRep('haproxy_http', i) && (byRep('haproxy_http', i).fixed.p99_us - byRep('direct', i).fixed.p99_us) / 1000),
      mesh_added_p90_ms: perRep((i) => byRep('mesh', i) && (byRep('mesh', i).fixed.p90_us - byRep('direct', i).fixed.p90_us) / 1000),
      haproxy_http_added_p90_ms: perRep((i) => byRep('haproxy_http', i) && (byRep('haproxy_http', i).fixed.p90_us - byRep('direct', i).fixed.p90_us) / 1000),
    },
    added_p99_vs_haproxy_tls: addedRatio(results.mesh?.added_p99_ms, results.haproxy_tls?.added_p99_ms),
    cpu_vs_haproxy_tls: ratio(results.mesh?.cpu_ms_per_1k, results.haproxy_tls?.cpu_ms_per_1k),
    saturated_cpu_vs_haproxy_http: ratio(results.mesh?.saturated_cpu_ms_per_1k, results.haproxy_http?.saturated_cpu_ms_per_1k),
    memory_vs_haproxy_tls_10_pairs: ratio(memory.agent?.rss_mb, memory.haproxy_tls?.ten_pairs_mb),
    memory_rss_only_vs_haproxy_10_pairs: ratio(memory.agent?.rss_mb, memory.haproxy_http?.ten_pairs_mb),
    memory_vs_haproxy_10_pairs_shared_files: ratio(memory.agent?.rss_mb, memory.haproxy_http?.ten_pairs_shared_files_mb),
  };

  // The latency distribution of every arm (every request of the latency phase), for the chart.
  // Percentiles 1 %, 5 %, then evenly spaced on a log scale of 1 / (1 − p) up to 99.99 % (20 points a decade).
  const GRID = [0.01, 0.05, ...Array.from({ length: 80 }, (_, k) => round(1 - 10 ** (-(k + 1) / 20), 6))];
  const distribution = {};
  for (const arm of ARMS) {
    const s = sortedLatencies[arm];
    distribution[arm] = { requests: s.length, points: GRID.filter((p) => s.length * (1 - p) >= 1).map((p) => [p, pctMs(s, p)]) };
  }

  // The machine's scheduling noise as the load generator saw it: how late its sends were against the schedule.
  const allFixed = [...ARMS.flatMap((a) => raw[a].map((r) => r.fixed)), ...latencyRuns];
  const noise = {
    what: 'lateness of the fixed-rate sends against their schedule (the load generator waking up late), all runs: median of the per-run figures, and the worst run',
    late_p50_ms: med(allFixed.map((f) => f.late_p50_us / 1000), 4),
    late_p99_ms: med(allFixed.map((f) => f.late_p99_us / 1000), 4),
    late_p999_ms: med(allFixed.map((f) => f.late_p999_us / 1000), 4),
    worst_late_p99_ms: round(Math.max(...allFixed.map((f) => f.late_p99_us / 1000)), 4),
    sends_over_1ms_late: round(allFixed.reduce((a, f) => a + f.late_sends, 0) / allFixed.reduce((a, f) => a + f.requests, 0), 4),
  };

  const result = {
    ...header('mesh', loadBefore),
    quick,
    duration_s: round((performance.now() - t0) / 1000, 1),
    params: { ...params, tools: { haproxy: haproxyVersion, nginx: run('nginx', ['-v']).stderr.trim(), loadgen: 'bench/mesh/loadgen.c' }, order },
    topology: {
      namespaces: 'node (ip_forward) with veth pairs to pod-client 198.18.1.2, pod-v1 198.18.2.2, pod-v2 198.18.3.2; routes for 198.18.0.0/15 only, through the node',
      servers: `two nginx 1.22 in each server pod, one process each, ${params.bodyBytes}-byte body, pinned to CPU ${params.serverCpu}: on port ${PORT.app} inside the pod's workload cgroup (the mesh arm's), on port ${PORT.plain} in a cgroup outside the mesh's (the direct and proxy arms'); the same configuration otherwise`,
      direct: `connections dial the servers directly (port ${PORT.plain}): 14 of 16 to v1, 2 to v2 (closed loop: all to v1)`,
      mesh: `connections dial the VIP ${ADDR.vip}:80, split ${params.split.v1}/${params.split.v2} per connection by the agent's programs (closed loop: the VIP of Service server-v1, ${ADDR.vipV1}:80); the load generator's sockets are in the client workload's cgroup; the agent runs (unpinned) only during this arm's runs and the latency phase`,
      mesh_mtls: `the mesh arm's path with the agent started with --mtls in the node's namespace: client, v1, v2 enrolled (mesh.dev/mtls), PeerAuthentication STRICT for namespace default; the data plane (native/dataplane) listens on ${DP.addr} (an address of the node's namespace) and reaches the servers from ${DP.inboundSource}; both tunnel ends are this node's data plane (one process); CPU counts the agent's and the data plane's threads`,
      mesh_mtls_local: `the mesh_mtls arm's agent with the same-node shortcut on (its default; mesh_mtls runs with --no-mtls-local-shortcut): the client's connections to v1 and v2 (all pods are on this node) are left alone by the capture and let in by STRICT as an allowed local pair: no data plane, no TLS; CPU counts the agent's and the data plane's threads`,
      new_connections: `closed loops of ${params.closedS} s with one connection per request (Connection: close, a blocking connect for each), ${params.connections} at once, the arms taking turns, ${params.newConnRounds} rounds; medians`,
      haproxy: `HAProxy ${haproxyVersion.split(' ')[2]}: client-side proxy in pod-client on 127.0.0.1:${PORT.outbound} (CPU ${params.clientCpu}), mode http, roundrobin ${params.split.v1}/${params.split.v2} per request over the server-side proxies on <pod>:${PORT.inbound} (CPU ${params.serverCpu}), which forward to nginx on 127.0.0.1:${PORT.plain} (closed loop: a second frontend, 127.0.0.1:${PORT.outboundV1}, to v1 alone); nbthread 1, http-reuse always, keep-alive both ways; TLS arm: the same 100 ports higher, mutual TLS (ECDSA P-256, a throwaway CA) between the proxies, server name verified`,
      latency_phase: `after the repetitions, every arm up at once and one load generator loading all of them, ${params.rate} requests/s in all, each arm on its own ${params.connections} connections, the arms' requests interleaved one by one (in a de Bruijn order: every arm's request follows every pair of arms' equally often); ${params.latencyRuns} runs of ${params.latencyS} s; the direct and proxy arms' sockets in cgroups outside the mesh's`,
    },
    units:
      'latency: ms, from the write() of a request to the read() that completes its response, every request of the latency phase (all arms at once; sequential: the arm\'s own fixed-rate runs, medians over the repetitions); rps: closed-loop requests per second (against v1 alone); cpu_ms_per_1k: CPU ms added over the direct arm per 1,000 requests in the fixed-rate run (saturated_cpu_ms_per_1k: in the closed-loop run), see bench/README.md; rss_mb: MiB, VmRSS of the arm\'s own processes (the agent; the three proxies) at the end of the fixed-rate run; raw cpu_ms: CPU ms per process over the measured window (schedstat); raw system_ms: /proc/stat, tick-sampled, whole machine',
    arms: results,
    ratios,
    goals,
    secondary_ratios: secondary,
    noise,
    memory,
    distribution,
    latency_runs: latencyRuns,
    closed_loop_runs: closedRuns,
    new_connection_runs: newConnRuns,
    raw,
  };
  return result;
}

/** A memory-only run (BENCH_MESH_ONLY=memory) merged into the last full run's result: the memory figures it
 *  measured replace the full run's, every other field stays the full run's (its header describes those);
 *  `memory_run` carries this run's own header, parameters and readings. */
export function mergeMemory(full, mem) {
  const out = structuredClone(full);
  const set = (path, value) => {
    let o = out;
    for (const k of path.slice(0, -1)) o = o[k] ??= {};
    o[path.at(-1)] = value;
  };
  const replaced = [
    ['memory', 'agent'],
    ['memory', 'haproxy_http'],
    ['arms', 'mesh', 'rss_mb'],
    ['arms', 'haproxy_http', 'rss_mb'],
    ['ratios', 'memory_vs_haproxy_10_pairs'],
    ['goals', 'memory_vs_haproxy_10_pairs'],
    ['secondary_ratios', 'memory_rss_only_vs_haproxy_10_pairs'],
    ['secondary_ratios', 'memory_vs_haproxy_10_pairs_shared_files'],
  ];
  for (const path of replaced) set(path, path.reduce((o, k) => o?.[k], mem));
  const { bench, machine, kernel, node, commit, date, duration_s: durationS, params: p } = mem;
  out.memory_run = {
    bench,
    machine,
    kernel,
    node,
    commit,
    date,
    duration_s: durationS,
    params: { reps: p.reps, rate: p.rate, fixedS: p.fixedS, agentSettleS: p.agentSettleS, extraPodPairs: p.extraPodPairs, arms: p.arms },
    replaced: replaced.map((path) => path.join('.')),
    memory: mem.memory,
    raw: Object.fromEntries(Object.entries(mem.raw).map(([arm, runs]) => [arm, runs.map((r) => ({ rep: r.rep, memory: r.fixed.memory, bpf_maps_mb: r.checks.bpf_maps_mb }))])),
  };
  return out;
}
