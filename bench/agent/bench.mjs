// bench:agent: what the node agent (apps/agent, `mesh-agent`) costs to run. Its resident memory idle (one
// Service, one Workload) and with 1,000 Services / 10,000 endpoints / 100 HTTPRoutes (right after start, after a
// few reloads, and after a quiet spell); how long it takes to apply that config at start, and to apply a reload
// that changes one weight (configs: bench/agent/config.mjs; where the memory goes: bench/agent/profile.mjs); and,
// at scale (50,000 Services / 20,000 Workloads), how long a running agent takes to apply that config and how
// long /healthz takes to answer meanwhile.
// Each measurement runs a fresh agent with its own pin root, cgroup root and API port, and uninstalls its
// datapath afterwards (also when the bench fails or is interrupted). Writes bench/results/agent.json.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

import { cgroup2Mount } from '@mesh/bpf';

import { request } from 'node:http';

import { AGENT_BIN, agentArgs, agentSocket, exitReason, MESHCTL_BIN, waitReady } from '../../scripts/lib/agent.mjs';
import { agentApi, cleanup, header, median, onCleanup, quantile, root, round, writeResult } from '../lib.mjs';
import { bigConfig, idleConfig, SCALE, scaleConfig, SHAPE } from './config.mjs';

const cgroup2 = cgroup2Mount();

const params = {
  reps: 3,
  pinRoot: '/sys/fs/bpf/mesh-bench-agent',
  cgroupRoot: join(cgroup2, 'mesh-bench-agent'),
  host: '127.0.0.1',
  ...SHAPE,
  /** Seconds the agent runs after it is ready before the first reading. */
  settleS: 3,
  /** /metrics scrapes (1 s apart) before a reading. */
  scrapes: 3,
  /** Reloads of the 1k config, each changing one weight. */
  reloads: 3,
  /** After the reloads: seconds of quiet (a /metrics scrape every quietScrapeS, as Prometheus would), after
   *  which V8 has usually given back the heap it grew for parsing (its memory reducer is timer-driven). */
  quietS: 90,
  quietScrapeS: 15,
  /** The scale runs: SCALE's config applied to a running agent (from the idle config), /healthz probed meanwhile. */
  scale: { ...SCALE, reps: Number(process.env.SCALE_REPS ?? 3), probeEveryMs: 10, maxServices: 65_536, maxEndpoints: 262_144, maxPeers: 65_536 },
};
/** `--only scale`: the scale runs alone (see below). */
const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined;
const loadBefore = loadavg()[0];

// A previous run that was killed hard may have left its agent running: refuse (before any clean-up is registered,
// which would uninstall that agent's datapath); stop it by hand.
{
  const lock = `/run/mesh/agent${params.pinRoot.replace(/[^A-Za-z0-9_.-]/g, '_')}.pid`;
  const pid = existsSync(lock) ? readFileSync(lock, 'utf8').trim() : '';
  const cmd = pid && existsSync(`/proc/${pid}/cmdline`) ? readFileSync(`/proc/${pid}/cmdline`, 'utf8') : '';
  if (cmd.includes('mesh-agent')) throw new Error(`a mesh-agent (pid ${pid}) already runs on ${params.pinRoot} (${lock}): stop it first (kill ${pid})`);
}

const dir = mkdtempSync(join(tmpdir(), 'mesh-bench-agent-'));
onCleanup(() => rmSync(dir, { recursive: true, force: true }));
const configPath = join(dir, 'mesh.yaml');
/** Replaces the config the way editors and tools do: a temporary file renamed over it. */
function writeConfig(text) {
  const tmp = join(dir, '.mesh.yaml.tmp');
  writeFileSync(tmp, text);
  renameSync(tmp, configPath);
}

// --- the agent -------------------------------------------------------------------------------------------

async function freePort() {
  const s = createServer().listen(0, params.host);
  await once(s, 'listening');
  const { port } = s.address();
  s.close();
  await once(s, 'close');
  return port;
}
const port = await freePort();
const base = `http://${params.host}:${port}`;
const apiSocket = agentSocket(params.pinRoot);

function uninstall() {
  const r = spawnSync(process.execPath, [MESHCTL_BIN, 'uninstall', '--force', '--pin-root', params.pinRoot, '--cgroup-root', params.cgroupRoot], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`meshctl uninstall exited ${r.status}:\n${r.stdout}${r.stderr}`);
  if (existsSync(params.pinRoot) || existsSync(params.cgroupRoot)) throw new Error(`meshctl uninstall left ${params.pinRoot} or ${params.cgroupRoot} behind`);
}

let running; // the agent of the current measurement, for cleanup
onCleanup(() => {
  if (running && running.child.exitCode === null && running.child.signalCode === null) {
    running.child.kill('SIGKILL');
    spawnSync('sleep', ['0.2']); // let the kernel reap it before its pins are removed
  }
  if (existsSync(params.pinRoot) || existsSync(params.cgroupRoot)) uninstall();
});
// A previous run that was killed hard may have left its datapath pinned.
if (existsSync(params.pinRoot) || existsSync(params.cgroupRoot)) uninstall();

class Agent {
  constructor(extraArgs = []) {
    this.t0 = performance.now();
    this.child = spawn(AGENT_BIN, agentArgs({ config: configPath, listen: `${params.host}:${port}`, apiSocket, pinRoot: params.pinRoot, cgroupRoot: params.cgroupRoot }, extraArgs), {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    running = this;
    this.lines = []; // [{ at: performance.now() when read, log: parsed line }]
    this.tail = [];
    this.waiters = [];
    createInterface({ input: this.child.stderr }).on('line', (text) => {
      const at = performance.now();
      this.tail = [...this.tail.slice(-20), text];
      let log;
      try {
        log = JSON.parse(text);
      } catch {
        return;
      }
      this.lines.push({ at, log });
      for (const w of [...this.waiters]) if (w.pred(log)) w.resolve({ at, log });
    });
    this.exited = once(this.child, 'exit');
  }

  get pid() {
    return this.child.pid;
  }

  /** The first log line (past or future) that satisfies pred, with the time it was read. */
  waitLog(pred, what, timeoutMs = 60_000) {
    const seen = this.lines.find((l) => pred(l.log));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve: (x) => (clearTimeout(timer), this.waiters.splice(this.waiters.indexOf(w), 1), resolve(x)) };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`no "${what}" from the agent within ${timeoutMs} ms; its last lines:\n${this.tail.join('\n')}`));
      }, timeoutMs);
      this.waiters.push(w);
      this.exited.then(([code, sig]) => reject(new Error(`the agent exited (${code ?? sig}) before "${what}"; its last lines:\n${this.tail.join('\n')}`)));
    });
  }

  async ready() {
    const applied = await this.waitLog((l) => l.msg === 'config applied' || l.msg === 'config rejected', 'config applied');
    if (applied.log.msg !== 'config applied') throw new Error(`the agent rejected the config: ${JSON.stringify(applied.log.problems)}`);
    await waitReady(apiSocket, { timeoutMs: 30_000, intervalMs: 20, exited: () => exitReason(this.child), describe: () => `the agent's last lines:\n${this.tail.join('\n')}` });
    return { applied: applied.log, applyLogMs: round(applied.at - this.t0, 1), readyMs: round(performance.now() - this.t0, 1) };
  }

  /** GET /metrics `n` times, 1 s apart; returns the last text. */
  async scrape(n) {
    let text = '';
    for (let i = 0; i < n; i++) {
      if (i) await sleep(1000);
      const r = await fetch(`${base}/metrics`);
      text = await r.text();
      if (r.status !== 200) throw new Error(`/metrics answered ${r.status}: ${text.slice(0, 200)}`);
    }
    return text;
  }

  /** The control API (/v1/…), on the agent's unix socket. */
  json(path) {
    return agentApi(apiSocket, path);
  }

  /** /proc/PID/status memory lines, in MiB. */
  memory() {
    const st = readFileSync(`/proc/${this.pid}/status`, 'utf8');
    const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1]);
    const mb = (k) => round(kb(k) / 1024, 1);
    return { VmRSS: mb('VmRSS'), VmHWM: mb('VmHWM'), RssAnon: mb('RssAnon'), RssFile: mb('RssFile'), RssShmem: mb('RssShmem') };
  }

  async stop(timeoutMs = 60_000) {
    const t = performance.now();
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const [code, sig] = await this.exited;
    clearTimeout(timer);
    running = undefined;
    if (code !== 0) throw new Error(`the agent exited ${code ?? sig} on SIGTERM (expected 0); its last lines:\n${this.tail.join('\n')}`);
    uninstall();
    return round(performance.now() - t, 1);
  }
}

/** The agent's own view of its memory, from prom-client's default metrics on /metrics, in MiB. */
function nodeMemory(metricsText) {
  const val = (name) => {
    const m = new RegExp(`^${name} ([0-9.e+]+)`, 'm').exec(metricsText);
    return m ? round(Number(m[1]) / 2 ** 20, 1) : undefined;
  };
  const spaces = {};
  for (const m of metricsText.matchAll(/^nodejs_heap_space_size_used_bytes\{space="(\w+)"\} ([0-9.e+]+)/gm)) spaces[m[1]] = round(Number(m[2]) / 2 ** 20, 1);
  return {
    process_resident_memory: val('process_resident_memory_bytes'),
    heap_total: val('nodejs_heap_size_total_bytes'),
    heap_used: val('nodejs_heap_size_used_bytes'),
    external: val('nodejs_external_memory_bytes'),
    heap_space_used: spaces,
  };
}

// --- measurements ----------------------------------------------------------------------------------------

async function idleRun() {
  writeConfig(idleConfig());
  const agent = new Agent();
  const r = await agent.ready();
  await sleep(params.settleS * 1000);
  const text = await agent.scrape(params.scrapes);
  await sleep(1000);
  const mem = agent.memory();
  const node = nodeMemory(text);
  const stopMs = await agent.stop();
  return { rss_mb: mem.VmRSS, hwm_mb: mem.VmHWM, memory: mem, node, apply_ms: r.applied.ms, ready_ms: r.readyMs, stop_ms: stopMs };
}

async function bigRun(rep) {
  const text = bigConfig();
  writeConfig(text);
  const agent = new Agent();
  const r = await agent.ready();
  const a = r.applied;
  if (a.services !== params.services || a.serviceAddresses !== params.services || a.routes !== params.routes) {
    throw new Error(`expected ${params.services} services and ${params.routes} routes applied, the agent logged ${JSON.stringify(a)}`);
  }
  const notAccepted = agent.lines.filter((l) => l.log.msg === 'route not fully accepted');
  if (notAccepted.length) throw new Error(`${notAccepted.length} routes not accepted, e.g. ${JSON.stringify(notAccepted[0].log)}`);
  const status = rep === 0 ? await agent.json('/v1/status') : undefined;

  await sleep(params.settleS * 1000);
  const settledText = await agent.scrape(params.scrapes);
  await sleep(1000);
  const settled = agent.memory();
  const settledNode = nodeMemory(settledText);

  // Reloads: route-042's second backend weight 10 → 20, 30, … (one service entry changes each time).
  const reloads = [];
  for (let k = 1; k <= params.reloads; k++) {
    await sleep(1000);
    const gen = 1 + k;
    const next = bigConfig((i) => (i === 42 ? 10 + 10 * k : 10));
    const t = performance.now();
    writeConfig(next);
    const { at, log } = await agent.waitLog((l) => (l.msg === 'config applied' && l.generation === gen) || l.msg.startsWith('config rejected'), `config applied (generation ${gen})`, 30_000);
    if (log.msg !== 'config applied') throw new Error(`reload ${k} rejected: ${JSON.stringify(log.problems)}`);
    reloads.push({ apply_ms: log.ms, map_writes: log.mapWrites, wall_ms: round(at - t, 1) });
  }
  await sleep(2000);
  const afterText = await agent.scrape(params.scrapes);
  await sleep(1000);
  const after = agent.memory();
  const afterNode = nodeMemory(afterText);

  // Quiet: nothing but the odd scrape; the RSS series shows whether (and when) the heap shrinks back.
  const quiet = [];
  let quietText = afterText;
  for (let t = params.quietScrapeS; t <= params.quietS; t += params.quietScrapeS) {
    await sleep(params.quietScrapeS * 1000);
    quietText = await agent.scrape(1);
    const n = nodeMemory(quietText);
    quiet.push({ s: t, rss_mb: agent.memory().VmRSS, heap_total_mb: n.heap_total, heap_used_mb: n.heap_used });
  }
  const steady = agent.memory();
  const steadyNode = nodeMemory(quietText);
  const stopMs = await agent.stop();
  return {
    rss_mb: Math.max(settled.VmRSS, after.VmRSS),
    rss_mb_settled: settled.VmRSS,
    rss_mb_after_reloads: after.VmRSS,
    rss_mb_after_quiet: steady.VmRSS,
    hwm_mb: steady.VmHWM,
    memory: { settled, after_reloads: after, after_quiet: steady },
    node: { settled: settledNode, after_reloads: afterNode, after_quiet: steadyNode },
    quiet,
    apply_ms: a.ms,
    map_writes: a.mapWrites,
    config_applied_after_spawn_ms: r.applyLogMs,
    ready_ms: r.readyMs,
    reloads,
    stop_ms: stopMs,
    ...(status ? { maps: status.maps } : {}),
    configBytes: statSync(configPath).size,
  };
}

/**
 * /healthz probed every `everyMs` (open loop, a new connection each, as a liveness probe does) until stop():
 * each probe's time from send to the end of the answer, so a stalled event loop shows as the wait it caused.
 */
function probeHealthz(everyMs) {
  const samples = [];
  let failures = 0;
  let count = 0;
  const sent = () => count;
  const probe = () => {
    count++;
    const t = performance.now();
    const req = request({ host: params.host, port, path: '/healthz', agent: false, timeout: 60_000 }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? samples.push([t, performance.now() - t]) : failures++));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => failures++);
    req.end();
  };
  const timer = setInterval(probe, everyMs);
  return {
    /** Stops probing and waits for the answers still due. */
    async stop() {
      clearInterval(timer);
      for (let i = 0; i < 600 && samples.length + failures < sent(); i++) await sleep(100);
    },
    /** Figures of the probes sent from `from` (a performance.now() reading) on. */
    summary(from = 0) {
      const xs = samples.filter(([t]) => t >= from).map(([, ms]) => ms);
      const q = (x) => round(quantile(xs, x), 2);
      return { probes: xs.length, failures, p50_ms: q(0.5), p99_ms: q(0.99), max_ms: round(Math.max(...xs), 2) };
    },
  };
}

/** One scale run: the idle agent given SCALE's config (the apply probed), then one weight changed (probed). */
async function scaleRun() {
  const sp = params.scale;
  const bigText = scaleConfig(sp);
  writeConfig(idleConfig());
  // Identities off (--ca none): issuing 20,000 workloads' certificates is its own cost (bench:mtls), and it would
  // hide the apply this measures.
  const agent = new Agent(['--max-services', String(sp.maxServices), '--max-endpoints', String(sp.maxEndpoints), '--max-peers', String(sp.maxPeers), '--ca', 'none']);
  await agent.ready();
  const idleProbe = probeHealthz(sp.probeEveryMs);
  await sleep(2000);
  await idleProbe.stop();
  const idle = idleProbe.summary();

  const reload = async (text, gen) => {
    const probe = probeHealthz(sp.probeEveryMs);
    const cpu = agentCpuMs(agent.pid);
    const t = performance.now();
    writeConfig(text);
    const { at, log } = await agent.waitLog((l) => (l.msg === 'config applied' && l.generation === gen) || l.msg.startsWith('config rejected'), `config applied (generation ${gen})`, 600_000);
    const wall = at - t;
    await probe.stop();
    if (log.msg !== 'config applied') throw new Error(`the scale config was rejected: ${JSON.stringify(log.problems).slice(0, 2000)}`);
    return {
      // What the agent logged: parse (YAML, in steps), resolve (validate, endpoints, compile, in steps), then
      // cgroups, map writes and names: each the wall time it took with the event loop served in between.
      parse_ms: log.parseMs,
      resolve_ms: log.validateMs,
      write_ms: log.ms,
      apply_ms: round(log.validateMs + log.ms, 1),
      wall_ms: round(wall, 1),
      agent_cpu_ms: agentCpuMs(agent.pid) - cpu,
      // The event loop's thread's CPU time in resolve and write (the agent's log; 10 ms steps): the apply's own
      // work, less sensitive to the machine's load than its wall time.
      resolve_cpu_ms: log.validateCpuMs,
      write_cpu_ms: log.cpuMs,
      map_writes: log.mapWrites,
      service_addresses: log.serviceAddresses,
      workloads: log.workloads,
      // Probes sent while the agent resolved and applied the config (its log line's validateMs + ms before it),
      // and over the whole reload (from the rename: the 150 ms debounce and the YAML parse too).
      healthz: probe.summary(at - (log.validateMs + log.ms)),
      healthz_whole_reload: probe.summary(t),
    };
  };
  const big = await reload(bigText, 2);
  if (big.service_addresses !== sp.services || big.workloads !== sp.workloads + 0) throw new Error(`expected ${sp.services} service addresses and ${sp.workloads} workloads, the agent logged ${JSON.stringify(big)}`);
  await sleep(3000);
  // One weight: route 42's second backend 10 → 20, the rest of the 13 MB file unchanged.
  const oneText = bigText.replace(/name: r-s-00042,[^]*?weight: 90 \}, \{ name: s-\d+, port: 80, weight: 10/, (m) => `${m.slice(0, -2)}20`);
  if (oneText === bigText) throw new Error('the one-weight edit did not apply to the scale config');
  const one = await reload(oneText, 3);
  const stopMs = await agent.stop(120_000);
  return { idle_healthz: idle, apply: big, one_weight: one, stop_ms: stopMs, configBytes: Buffer.byteLength(bigText) };
}

/** User + system CPU time of a process so far, in ms (/proc/PID/stat, clock ticks of 10 ms). */
function agentCpuMs(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

/** Medians over scale runs of one reload's figures (`pick`: the apply or the one-weight reload). */
function scaleMedians(runs, pick) {
  const xs = runs.map(pick);
  const m = (f) => round(median(xs.map(f)), 1);
  return {
    parse_ms: m((x) => x.parse_ms), resolve_ms: m((x) => x.resolve_ms), write_ms: m((x) => x.write_ms), apply_ms: m((x) => x.apply_ms),
    wall_ms: m((x) => x.wall_ms), agent_cpu_ms: m((x) => x.agent_cpu_ms), resolve_cpu_ms: m((x) => x.resolve_cpu_ms), write_cpu_ms: m((x) => x.write_cpu_ms), map_writes: m((x) => x.map_writes),
    healthz: { probes: m((x) => x.healthz.probes), failures: m((x) => x.healthz.failures), p50_ms: m((x) => x.healthz.p50_ms), p99_ms: m((x) => x.healthz.p99_ms), max_ms: m((x) => x.healthz.max_ms) },
    healthz_whole_reload: { probes: m((x) => x.healthz_whole_reload.probes), p50_ms: m((x) => x.healthz_whole_reload.p50_ms), p99_ms: m((x) => x.healthz_whole_reload.p99_ms), max_ms: m((x) => x.healthz_whole_reload.max_ms) },
  };
}

/** The scale figures of a result file: the two results, their goals, the medians and the runs. */
function scaleResults(runs) {
  const apply = round(median(runs.map((x) => x.apply.apply_ms)), 1);
  const healthz = round(median(runs.map((x) => x.apply.healthz.p99_ms)), 1);
  return {
    results: { apply_ms_50k_services: apply, healthz_p99_ms_during_50k_apply: healthz },
    goals_scale: {
      apply_ms_50k_services: '≤ 2000',
      apply_met: apply <= 2000,
      healthz_p99_ms_during_50k_apply: '≤ 50',
      healthz_met: healthz <= 50,
      note: 'absolute times: read them with machine.loadavg1m (the machine may have been shared)',
    },
    medians: {
      idle_healthz: { p50_ms: round(median(runs.map((x) => x.idle_healthz.p50_ms)), 1), p99_ms: round(median(runs.map((x) => x.idle_healthz.p99_ms)), 1) },
      apply: scaleMedians(runs, (x) => x.apply),
      one_weight: scaleMedians(runs, (x) => x.one_weight),
      stop_ms: round(median(runs.map((x) => x.stop_ms)), 1),
    },
  };
}

// `--only scale`: the scale runs alone, their figures written into bench/results/agent.json beside the other
// parts' (kept as they are, with the header of their own run); `scale_run` holds this run's machine, kernel,
// commit and date. `--dry-run`: printed, not written (for trying a change).
if (only === 'scale') {
  try {
    const runs = [];
    for (let rep = 0; rep < params.scale.reps; rep++) {
      runs.push(await scaleRun());
      console.log(JSON.stringify(runs.at(-1), null, 1));
    }
    if (!process.argv.includes('--dry-run')) {
      const file = join(root, 'bench/results/agent.json');
      const prev = existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : { bench: 'agent', results: {} };
      const s = scaleResults(runs);
      const result = {
        ...prev,
        results: { ...prev.results, ...s.results },
        goals_scale: s.goals_scale,
        scale_run: { ...header('agent', loadBefore), params: params.scale, note: '--only scale: the scale figures (results.apply_ms_50k_services, results.healthz_p99_ms_during_50k_apply, goals_scale, medians.scale, raw.scale) are from this run; the others from the run of the top-level header' },
        medians: { ...prev.medians, scale: s.medians },
        raw: { ...prev.raw, scale: runs },
      };
      console.error(`wrote ${writeResult('agent', result)}: apply ${s.results.apply_ms_50k_services} ms, /healthz p99 ${s.results.healthz_p99_ms_during_50k_apply} ms during it; load ${result.scale_run.machine.loadavg1m.before} → ${result.scale_run.machine.loadavg1m.after}`);
    }
  } finally {
    cleanup();
  }
  process.exit(0);
}

/** For scale: a Node process that does nothing, read after the same settle time. */
async function bareNode() {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  onCleanup(() => child.kill('SIGKILL'));
  await sleep((params.settleS + params.scrapes + 1) * 1000);
  const st = readFileSync(`/proc/${child.pid}/status`, 'utf8');
  child.kill('SIGTERM');
  await once(child, 'exit');
  return round(Number(/^VmRSS:\s+(\d+)/m.exec(st)[1]) / 1024, 1);
}

const raw = { idle: [], big: [], bare_node: [], scale: [] };
try {
  for (let rep = 0; rep < params.reps; rep++) {
    raw.bare_node.push(await bareNode());
    raw.idle.push(await idleRun());
    console.error(`rep ${rep + 1}/${params.reps}: idle ${raw.idle.at(-1).rss_mb} MiB`);
    raw.big.push(await bigRun(rep));
    const b = raw.big.at(-1);
    console.error(`rep ${rep + 1}/${params.reps}: 1k services ${b.rss_mb_settled} MiB settled, ${b.rss_mb_after_reloads} MiB after reloads, ${b.rss_mb_after_quiet} MiB after ${params.quietS} s quiet; apply ${b.apply_ms} ms, one weight ${b.reloads[0].apply_ms} ms`);
  }
  for (let rep = 0; rep < params.scale.reps; rep++) {
    raw.scale.push(await scaleRun());
    const x = raw.scale.at(-1);
    console.error(`scale rep ${rep + 1}/${params.scale.reps}: apply ${x.apply.apply_ms} ms (parse ${x.apply.parse_ms} ms before it), /healthz p99 ${x.apply.healthz.p99_ms} ms during it; one weight: apply ${x.one_weight.apply_ms} ms`);
  }
} catch (err) {
  cleanup();
  throw err;
}

const med = (xs) => round(median(xs), 1);
const firstReloads = raw.big.map((b) => b.reloads[0]);
const allReloads = raw.big.flatMap((b) => b.reloads);
const results = {
  rss_mb_idle: med(raw.idle.map((x) => x.rss_mb)),
  rss_mb_1k_services: med(raw.big.map((x) => x.rss_mb)),
  apply_ms_1k_services: med(raw.big.map((x) => x.apply_ms)),
  apply_ms_50k_services: med(raw.scale.map((x) => x.apply.apply_ms)),
  healthz_p99_ms_during_50k_apply: med(raw.scale.map((x) => x.apply.healthz.p99_ms)),
};
const result = {
  ...header('agent', loadBefore),
  params: { ...params, maxServices: 'default (16384)', maxEndpoints: 'default (131072)' },
  config: {
    idle: 'one Service (127.20.0.1:8080, selector → the one Workload) and one Workload (127.30.0.1)',
    scale: `${params.scale.workloads} Workloads, ${params.scale.services} Services selecting them by label, ${params.scale.routes} HTTPRoutes (scaleConfig in bench/agent/config.mjs); applied to a running agent that had the idle config`,
    big:
      `${params.services} Services svc-0000… on 127.20.x.y:8080, each with one EndpointSlice of ${params.endpointsPerService} ready endpoints on 127.40.x.y:8080 ` +
      `(${params.services * params.endpointsPerService} distinct addresses); ${params.routes} HTTPRoutes, route i splitting svc-i 90/10 across svc-(100+2i) and svc-(101+2i); ` +
      'one Workload. Block-style YAML, one file, ' + `${raw.big[0].configBytes} bytes. Reload k changes route-042's second weight to 10+10k.`,
  },
  units:
    'MiB (VmRSS of /proc/PID/status ÷ 1024) for rss_*; ms for apply_* (the agent\'s own "config applied" ms: resolve + compile + map writes, ' +
    'not YAML parsing); wall_ms: from the rename of the config to the bench reading the "config applied" line (includes the 150 ms debounce and the YAML parse)',
  results,
  definitions: {
    rss_mb_idle: 'VmRSS of the agent with the idle config, ~7 s after ready (3 /metrics scrapes 1 s apart); median of reps',
    rss_mb_1k_services:
      'VmRSS of the agent with the 1k config: the larger of the reading ~7 s after ready (after 3 scrapes) and the reading ~3 s after ' +
      `${params.reloads} one-weight reloads (after 3 more scrapes); median of reps. medians.1k_services.rss_mb_after_quiet is the same agent ${params.quietS} s later`,
    apply_ms_1k_services: 'the "ms" of the agent\'s first "config applied" log line for the 1k config (validate + compile + map writes; YAML parsing is before it); median of reps',
    apply_ms_50k_services: 'scale runs: resolve (workload checks, endpoints, validation, compile) + write (cgroups, map writes, identity names) of the scale config applied to a running agent, from its "config applied" log line (validateMs + ms; YAML parsing is before it, parse_ms); median of reps',
    healthz_p99_ms_during_50k_apply: 'scale runs: p99 of /healthz probes (every 10 ms, a new connection each; send to end of answer) sent while the agent resolved and applied the scale config (the validateMs + ms of its "config applied" line, back from the line); medians.scale.apply.healthz_whole_reload: the same from the rename of the file (YAML parsing included); median of reps',
  },
  goals: { rss_mb_1k_services: '≤ 100', met: results.rss_mb_1k_services <= 100 },
  goals_scale: {
    apply_ms_50k_services: '≤ 2000',
    apply_met: results.apply_ms_50k_services <= 2000,
    healthz_p99_ms_during_50k_apply: '≤ 50',
    healthz_met: results.healthz_p99_ms_during_50k_apply <= 50,
    note: 'absolute times: read them with machine.loadavg1m (the machine may have been shared)',
  },
  reference: { rss_mb_bare_node: med(raw.bare_node), note: 'VmRSS of `node -e "setInterval(() => {}, 1000)"` after the same settle time: what Node itself costs' },
  medians: {
    idle: { rss_mb: results.rss_mb_idle, hwm_mb: med(raw.idle.map((x) => x.hwm_mb)), apply_ms: med(raw.idle.map((x) => x.apply_ms)), ready_ms: med(raw.idle.map((x) => x.ready_ms)) },
    '1k_services': {
      rss_mb: results.rss_mb_1k_services,
      rss_mb_settled: med(raw.big.map((x) => x.rss_mb_settled)),
      rss_mb_after_reloads: med(raw.big.map((x) => x.rss_mb_after_reloads)),
      rss_mb_after_quiet: med(raw.big.map((x) => x.rss_mb_after_quiet)),
      hwm_mb: med(raw.big.map((x) => x.hwm_mb)),
      apply_ms: results.apply_ms_1k_services,
      map_writes: med(raw.big.map((x) => x.map_writes)),
      ready_ms: med(raw.big.map((x) => x.ready_ms)),
    },
    scale: {
      idle_healthz: { p50_ms: med(raw.scale.map((x) => x.idle_healthz.p50_ms)), p99_ms: med(raw.scale.map((x) => x.idle_healthz.p99_ms)) },
      apply: scaleMedians(raw.scale, (x) => x.apply),
      one_weight: scaleMedians(raw.scale, (x) => x.one_weight),
      stop_ms: med(raw.scale.map((x) => x.stop_ms)),
    },
    one_weight_reload: {
      apply_ms: med(firstReloads.map((x) => x.apply_ms)),
      map_writes: med(firstReloads.map((x) => x.map_writes)),
      wall_ms: med(firstReloads.map((x) => x.wall_ms)),
      apply_ms_all_reloads: med(allReloads.map((x) => x.apply_ms)),
      wall_ms_all_reloads: med(allReloads.map((x) => x.wall_ms)),
    },
  },
  raw,
};
const file = writeResult('agent', result);
cleanup();

const m = result.medians;
console.log(`mesh-agent, median of ${params.reps} fresh agents each`);
console.log(`  idle (1 Service, 1 Workload):       RSS ${results.rss_mb_idle} MiB (peak ${m.idle.hwm_mb})`);
console.log(`  ${params.services} services / ${params.services * params.endpointsPerService} endpoints / ${params.routes} routes: RSS ${results.rss_mb_1k_services} MiB (settled ${m['1k_services'].rss_mb_settled}, after reloads ${m['1k_services'].rss_mb_after_reloads}, peak ${m['1k_services'].hwm_mb})  goal ≤ 100: ${result.goals.met ? 'met' : 'NOT met'}`);
console.log(`  after ${params.quietS} s quiet: RSS ${m['1k_services'].rss_mb_after_quiet} MiB; a bare Node process: ${result.reference.rss_mb_bare_node} MiB`);
console.log(`  apply at start: ${results.apply_ms_1k_services} ms (${m['1k_services'].map_writes} map writes); ready ${m['1k_services'].ready_ms} ms after spawn`);
console.log(`  one-weight reload: apply ${m.one_weight_reload.apply_ms} ms, ${m.one_weight_reload.map_writes} map writes, ${m.one_weight_reload.wall_ms} ms from rename to the log line`);
const sc = m.scale;
console.log(`  scale (${params.scale.services} services / ${params.scale.workloads} workloads / ${params.scale.routes} routes, ${raw.scale[0].configBytes} bytes): apply ${results.apply_ms_50k_services} ms (resolve ${sc.apply.resolve_ms} + write ${sc.apply.write_ms}; parse before it ${sc.apply.parse_ms} ms), goal ≤ 2000: ${result.goals_scale.apply_met ? 'met' : 'NOT met'}`);
console.log(`    /healthz during it: p50 ${sc.apply.healthz.p50_ms} ms, p99 ${results.healthz_p99_ms_during_50k_apply} ms, max ${sc.apply.healthz.max_ms} ms (idle p99 ${sc.idle_healthz.p99_ms} ms), goal ≤ 50: ${result.goals_scale.healthz_met ? 'met' : 'NOT met'}; over the whole reload (parse included): p99 ${sc.apply.healthz_whole_reload.p99_ms} ms`);
console.log(`    one weight: parse ${sc.one_weight.parse_ms} ms, apply ${sc.one_weight.apply_ms} ms, ${sc.one_weight.map_writes} map write(s); /healthz p99 ${sc.one_weight.healthz.p99_ms} ms; load ${result.machine.loadavg1m.before} → ${result.machine.loadavg1m.after}`);
console.log(`wrote ${file}`);
