// bench:mesh — the mesh against no mesh and against a proxy-per-pod mesh, side by side in one run, on the same
// servers and the same load. A topology of network namespaces (a client pod, two server pods v1/v2, veth pairs
// through a node namespace), nginx in each server pod, and four arms taking turns:
//   direct        client → server, nothing in the path;
//   mesh          client → service VIP, the agent's split and metrics programs attached (the agent runs only
//                 during this arm; between its runs it is stopped and the datapath uninstalled);
//   haproxy_http  client → HAProxy (client pod) → HAProxy (server pod) → server, HTTP mode, keep-alive;
//   haproxy_tls   the same with mutual TLS between the two proxies;
//   mesh_mtls     (BENCH_MESH_ARMS, instead of mesh) the mesh arm with the agent's --mtls: the three pods
//                 enrolled, STRICT, client → data plane → mutual TLS 1.3 tunnel → data plane → server.
// Each arm runs a fixed-rate load (latency, CPU, memory) and a closed-loop load (maximum throughput), with
// bench/mesh/loadgen.c. See bench/README.md ("bench:mesh") for what is measured and the formulas.
// Writes bench/results/mesh.json, mesh.md and mesh-latency.svg (and the table in bench/README.md).
//
// Modules: topology.mjs (parameters, names, pods, servers, cleanup), arms.mjs (each arm), measurement.mjs (the
// load generator and what is read around it), figures.mjs (the result file's figures), report.mjs (tables, chart).
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';

import { enableStats } from '@mesh/bpf';

import { AGENT_BIN } from '../../scripts/lib/agent.mjs';
import { cleanup, root, round } from '../lib.mjs';
import { arms, configureArms, meshConfig } from './arms.mjs';
import { figures, mergeMemory } from './figures.mjs';
import { allArmsPhase, load } from './measurement.mjs';
import { markdownTable, latencySvg, updateReadme } from './report.mjs';
import {
  ADDR, ARMS, certificates, curlFromClient, log, loadBefore, meshCg, memoryOnly, NS, params, pinRoot, plainCg, PORT, quick, run, startNginx, state, tmp, topology,
  uninstallMesh, untilOk, workloadCg,
} from './topology.mjs';

log(`topology ${Object.values(NS).join(', ')}; cgroups under ${meshCg}; pins under ${pinRoot}`);
topology();
const pki = certificates();
const configPath = join(tmp, 'mesh.yaml');
writeFileSync(configPath, meshConfig());
for (const [file, text] of [
  [configPath, undefined],
  [join(tmp, 'mesh-mtls-check.yaml'), meshConfig({ mtls: true })],
]) {
  if (text) writeFileSync(file, text);
  const check = run(process.execPath, [AGENT_BIN, '--config', file, '--check'], { allowFail: true });
  if (check.status !== 0) throw new Error(`the agent rejects the bench's config:\n${check.stdout}${check.stderr}`);
}
const port = await new Promise((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const p = s.address().port;
    s.close(() => resolve(p));
  });
});
configureArms({ port, configPath, pki });
mkdirSync(meshCg, { recursive: true });
mkdirSync(join(plainCg, 'client'), { recursive: true });
const nginx = {
  app: { v1: startNginx('v1', { port: PORT.app, cg: workloadCg('v1'), name: 'app' }), v2: startNginx('v2', { port: PORT.app, cg: workloadCg('v2'), name: 'app' }) },
  plain: { v1: startNginx('v1', { port: PORT.plain, cg: join(plainCg, 'v1'), name: 'plain' }), v2: startNginx('v2', { port: PORT.plain, cg: join(plainCg, 'v2'), name: 'plain' }) },
};
await untilOk(() => {
  for (const set of Object.values(nginx)) for (const p of Object.values(set)) if (!p.alive()) throw new Error(`exited: ${p.describe()}`);
  for (const port of [PORT.app, PORT.plain]) {
    curlFromClient(`http://${ADDR.v1}:${port}/`);
    curlFromClient(`http://${ADDR.v2}:${port}/`);
  }
}, 'nginx did not answer');
for (const set of Object.values(nginx)) {
  for (const p of Object.values(set)) if (readFileSync(`/proc/${p.pid}/comm`, 'utf8').trim() !== 'nginx') throw new Error(`pid ${p.pid} is not nginx`);
}
/** The servers an arm's requests reach, by the roles the CPU figures use. */
const serverProcs = (set) => ({ nginx_v1: nginx[set].v1.pid, nginx_v2: nginx[set].v2.pid });

const raw = Object.fromEntries(ARMS.map((a) => [a, []]));
const latencies = Object.fromEntries(ARMS.map((a) => [a, []]));
const latencyRuns = [];
const closedRuns = [];
const newConnRuns = [];
const order = [];
try {
  for (let rep = 0; rep < params.reps; rep++) {
    // Rotate the order each repetition: every arm takes every position, so drift hits all alike.
    const repOrder = ARMS.map((_, i) => ARMS[(i + rep) % ARMS.length]);
    order.push(repOrder);
    for (const arm of repOrder) {
      const a = arms[arm];
      const session = await a.start();
      try {
        const procs = { ...serverProcs(a.servers), ...session.procs };
        const cg = a.cgroup?.();
        // The kernel's BPF run-time statistics only during the mesh arm's fixed-rate run (they cost a little).
        if (session.progs) state.stats = enableStats();
        let fixed;
        try {
          fixed = await load(arm, a.targets(), { rate: params.rate, durationS: params.fixedS, warmupS: params.fixedWarmupS }, procs, session.progs, cg);
        } finally {
          state.stats?.close();
          state.stats = undefined;
        }
        const checked = (await session.check?.(fixed)) ?? {};
        raw[arm].push({ rep, fixed, checks: checked });
        log(`rep ${rep + 1}/${params.reps} ${arm.padEnd(12)} fixed ${fixed.rps} rps p50 ${fixed.p50_us} µs p99 ${fixed.p99_us} µs (late sends ${fixed.late_sends})`);
      } finally {
        await session.stop();
      }
    }
  }
  if (!memoryOnly) await allArmsPhase({ serverProcs, latencies, latencyRuns, closedRuns, newConnRuns });
} catch (err) {
  cleanup();
  throw err;
}
for (const set of Object.values(nginx)) for (const p of Object.values(set)) await p.stop();
uninstallMesh(false); // the servers are gone: the cgroups go too
cleanup();

const result = figures({ raw, latencies, latencyRuns, closedRuns, newConnRuns, order });
if (memoryOnly) {
  const file = join(quick ? join(root, 'build/bench/mesh-quick') : join(root, 'bench/results'), 'mesh.json');
  const merged = mergeMemory(existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {}, result);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(`${file}.tmp`, JSON.stringify(merged, null, 2) + '\n');
  renameSync(`${file}.tmp`, file);
  console.log(JSON.stringify({ file, memory_vs_haproxy_10_pairs: merged.ratios.memory_vs_haproxy_10_pairs, memory: merged.memory_run.memory }, null, 2));
  process.exit(0);
}

const outDir = quick ? join(root, 'build/bench/mesh-quick') : join(root, 'bench/results');
mkdirSync(outDir, { recursive: true });
const write = (name, text) => {
  const f = join(outDir, name);
  writeFileSync(`${f}.tmp`, text);
  renameSync(`${f}.tmp`, f);
  return f;
};
const md = markdownTable(result);
write('mesh.json', JSON.stringify(result, null, 2) + '\n');
// A run of the mTLS arms (direct, mesh_mtls, haproxy_tls) is recorded into bench/results/mesh.json beside the
// default run's figures, under mesh_mtls_dedicated or mesh_mtls_pooled (the tunnel the data plane took): its own header (machine, kernel, commit), parameters, arms and ratios.
// A run with mesh_mtls_local (the same-node shortcut) goes under mesh_mtls_local.
const mtlsArm = ARMS.find((a) => a === 'mesh_mtls' || a === 'mesh_mtls_local');
if (mtlsArm && process.env.BENCH_MESH_RECORD_MTLS === '1') {
  const taken = params.mtlsTunnelTaken;
  const key = mtlsArm === 'mesh_mtls_local' ? 'mesh_mtls_local' : `mesh_mtls_${taken.tunnel}`;
  const file = join(root, 'bench/results/mesh.json');
  const doc = JSON.parse(readFileSync(file, 'utf8'));
  const { machine, kernel, node, commit, date, duration_s, params: p, topology: t, units, arms: a, ratios, goals, noise, new_connection_runs, closed_loop_runs, latency_runs } = result;
  const pick = (o, keys) => Object.fromEntries(keys.filter((k) => o[k] !== undefined).map((k) => [k, o[k]]));
  doc[key] = {
    tunnel: mtlsArm === 'mesh_mtls_local'
      ? 'none: the same-node shortcut (direct connections)'
      : `${taken.tunnel} (${taken.tunnel === 'pooled' ? 'streams over reused TLS connections' : 'one TLS connection per application connection'}; --mtls-tunnel-mode ${params.mtlsTunnel}, the data plane's choice: ${taken.choice})`,
    machine, kernel, node, commit, date, duration_s, params: p, topology: pick(t, [mtlsArm, 'new_connections', 'haproxy', 'latency_phase']), units,
    arms: a, ratios: pick(ratios, Object.keys(ratios).filter((k) => k.includes('mtls'))), goals: pick(goals, Object.keys(goals).filter((k) => k.includes('mtls'))),
    noise, new_connection_runs, closed_loop_runs, latency_runs,
  };
  writeFileSync(`${file}.tmp`, JSON.stringify(doc, null, 2) + '\n');
  renameSync(`${file}.tmp`, file);
  console.error(`recorded the mTLS arms' figures in ${file} (${key})`);
}
write('mesh.md', md);
write('mesh-latency.svg', latencySvg(result));
if (!quick) updateReadme(join(root, 'bench/README.md'), md);

console.log(md);
if (loadBefore > 0.5) console.log(`note: the 1-minute load was ${round(loadBefore, 2)} at the start: other work shared the machine; its tails are in these figures`);
