// The README's first command (`npm run demo` runs it after set-up and build): starts mesh-agent with this
// directory's mesh.yaml in a pin root, cgroup root and API port of its own, starts the two reviews versions
// and a bounded client through `meshctl run`, shows every 5 s the split and the rate, errors and duration the
// kernel measured, compares the client's own counts with the kernel's at the end, and removes everything it
// made (also on Ctrl-C, SIGTERM or an error). Exit status 0 only when all of that worked.
//
// Environment: DEMO_SECONDS (30), DEMO_RATE (40 requests/s), DEMO_LISTEN (127.0.0.1:15099, /metrics),
// DEMO_PIN_ROOT (/sys/fs/bpf/mesh-demo), DEMO_CGROUP_ROOT (<cgroup2 mount>/mesh-demo), DEMO_CONFIG (mesh.yaml here).
// The agent's control API (meshctl's) is its unix socket, /run/mesh/<pin root's name>.sock.
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, openSync, closeSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { cgroup2Mount } from '@mesh/bpf';
import { BUCKET_BOUNDS_S } from '@mesh/metrics';

import { tableLines } from '../../apps/agent/dist/cli/table.js';
import { quantile } from '../../apps/agent/dist/stats.js';
import { AGENT_BIN, agentArgs, agentGet, agentSocket, MESHCTL_BIN, waitReady } from '../../scripts/lib/agent.mjs';

const HERE = import.meta.dirname;
const SERVER = join(HERE, 'server.mjs');
const CLIENT = join(HERE, 'client.mjs');

const AGENT_LOCK_DIR = '/run/mesh';
const TICK_S = 5;
const SERVICE = 'reviews';
const CLIENT_WORKLOAD = 'productpage';
// How the canary differs: slower, and a 503 now and then.
const VERSIONS = {
  'reviews-v1': { VERSION: 'v1', DELAY_MS: '0', ERROR_EVERY: '0' },
  'reviews-v2': { VERSION: 'v2', DELAY_MS: '30', ERROR_EVERY: '10' },
};

class DemoError extends Error {}

// ---------------------------------------------------------------------------------------------- settings

function settings() {
  const int = (name, def, min, max) => {
    const raw = process.env[name] ?? String(def);
    const v = Number(raw);
    if (!Number.isInteger(v) || v < min || v > max) throw new DemoError(`${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}`);
    return v;
  };
  const seconds = int('DEMO_SECONDS', 30, 1, 600);
  const rate = int('DEMO_RATE', 40, 1, 500);
  const listen = process.env.DEMO_LISTEN || '127.0.0.1:15099';
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listen);
  if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535) throw new DemoError(`DEMO_LISTEN must be HOST:PORT, got ${JSON.stringify(listen)}`);
  const host = m[1] ?? m[2];
  if (!(host === '::1' || host === 'localhost' || /^127\.\d+\.\d+\.\d+$/.test(host))) {
    throw new DemoError(`DEMO_LISTEN must be a loopback address (127.0.0.0/8 or [::1]), got ${listen}`);
  }
  let cgroup2;
  try {
    cgroup2 = cgroup2Mount();
  } catch (err) {
    throw new DemoError(err.message);
  }
  const pinRoot = resolve(process.env.DEMO_PIN_ROOT || '/sys/fs/bpf/mesh-demo');
  const cgroupRoot = resolve(process.env.DEMO_CGROUP_ROOT || join(cgroup2, 'mesh-demo'));
  if (!pinRoot.startsWith('/sys/fs/bpf/')) throw new DemoError(`DEMO_PIN_ROOT must be a directory under /sys/fs/bpf, got ${pinRoot}`);
  if (!cgroupRoot.startsWith(`${cgroup2}/`)) throw new DemoError(`DEMO_CGROUP_ROOT must be a directory under the cgroup v2 mount ${cgroup2}, got ${cgroupRoot}`);
  const config = resolve(process.env.DEMO_CONFIG || join(HERE, 'mesh.yaml'));
  if (!existsSync(config)) throw new DemoError(`config ${config} does not exist`);
  // The agent's default for this pin root: root's, mode 0660.
  const socket = agentSocket(pinRoot);
  return { seconds, rate, listen, host, port: Number(m[3]), pinRoot, cgroupRoot, config, socket };
}

/** Refuses (before touching anything) when the port is taken or the roots exist: another demo may own them. */
async function preflight(s) {
  for (const [what, path] of [
    ['pin root', s.pinRoot],
    ['cgroup root', s.cgroupRoot],
  ]) {
    if (existsSync(path)) {
      throw new DemoError(
        `the demo's ${what} ${path} already exists: another demo is running, or one was killed before it could clean up.\n` +
          `  If none is running, remove what is left with: node ${shown(MESHCTL_BIN)} uninstall --force --pin-root ${s.pinRoot} --cgroup-root ${s.cgroupRoot}\n` +
          `  or run this demo elsewhere: DEMO_PIN_ROOT=… DEMO_CGROUP_ROOT=…`,
      );
    }
  }
  const err = await new Promise((done) => {
    const srv = createServer();
    srv.once('error', (e) => done(e));
    srv.listen(s.port, s.host, () => srv.close(() => done(undefined)));
  });
  if (err) {
    throw new DemoError(
      `cannot use ${s.listen} for the agent's /metrics (${err.code ?? err.message})${err.code === 'EADDRINUSE' ? ': something (another demo?) listens there' : ''}.\n` +
        `  Pick another address: DEMO_LISTEN=127.0.0.1:PORT`,
    );
  }
}

// ------------------------------------------------------------------------------------------------ output

const out = (line = '') => process.stdout.write(line + '\n');
const shown = (p) => {
  const r = relative(process.cwd(), p);
  return r === '' || r.startsWith('..') || isAbsolute(r) ? p : r;
};
const pct = (v) => (v === undefined || Number.isNaN(v) ? '-' : `${(v * 100).toFixed(1)}%`);
const pct2 = (v) => (v === undefined || Number.isNaN(v) ? '-' : `${(v * 100).toFixed(2)}%`);
const ms = (v) => (v === undefined ? '-' : v < 10 ? `${v.toFixed(2)}ms` : v < 100 ? `${v.toFixed(1)}ms` : `${v.toFixed(0)}ms`);
const bar = (share, width = 20) => {
  const n = Math.round((share ?? 0) * width);
  return '█'.repeat(n) + '░'.repeat(width - n);
};

/** Columns of fixed width, so that rows printed seconds apart line up: [title, width, 'l' | 'r']. */
function fixedColumns(spec) {
  const width = spec.map(([title, w]) => Math.max(w, title.length));
  const row = (cells) => '  ' + cells.map((c, i) => (spec[i][2] === 'r' ? String(c).padStart(width[i]) : String(c).padEnd(width[i]))).join('  ').trimEnd();
  return { header: row(spec.map(([title]) => title)), row };
}

/** Rows of cells as indented lines, columns padded (meshctl's formatter); `right` lists the columns aligned right. */
const table = (rows, right = []) => tableLines(rows, { right, indent: '  ' });

// ---------------------------------------------------------------------------------------------- http, metrics

/** GET from the agent: the control API (/v1/…) on its unix socket, /metrics on its TCP address. */
function get(s, path, timeoutMs = 3000) {
  return agentGet(path.startsWith('/v1/') ? { socketPath: s.socket } : { host: s.host, port: s.port }, path, timeoutMs);
}

async function getJson(s, path) {
  const r = await get(s, path);
  if (r.status !== 200) throw new DemoError(`the agent answered ${r.status} for ${path}: ${r.body.trim()}`);
  return JSON.parse(r.body);
}

/** Samples of one metric from Prometheus text: [{labels, value}]. */
function samples(text, name) {
  const res = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const labels = {};
    for (const m of line.slice(name.length + 1, line.lastIndexOf('}')).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]] = m[2];
    res.push({ labels, value: Number(line.slice(line.lastIndexOf(' ') + 1)) });
  }
  return res;
}

/** What the kernel counted for calls from the client workload to the service, per destination workload. */
function kernelCounts(text) {
  const from = (l) => l.source_workload === CLIENT_WORKLOAD && l.destination_service === SERVICE;
  const byDest = {};
  const byStatus = {};
  const slot = (d) => (byDest[d] ??= { count: 0, failures: 0, buckets: new Map() });
  for (const { labels, value } of samples(text, 'http_client_request_duration_seconds_count')) {
    if (!from(labels)) continue;
    const d = slot(labels.destination_workload);
    d.count += value;
    const status = labels.http_response_status_code;
    if (!(Number(status) > 0 && Number(status) < 500)) d.failures += value;
    byStatus[status] = (byStatus[status] ?? 0) + value;
  }
  for (const { labels, value } of samples(text, 'http_client_request_duration_seconds_bucket')) {
    if (!from(labels)) continue;
    const le = labels.le === '+Inf' ? Infinity : Number(labels.le);
    const b = slot(labels.destination_workload).buckets;
    b.set(le, (b.get(le) ?? 0) + value);
  }
  for (const d of Object.values(byDest)) {
    // /metrics has cumulative buckets; the quantile takes each bucket's own count.
    const cum = [...BUCKET_BOUNDS_S, Infinity].map((le) => d.buckets.get(le) ?? 0);
    const own = cum.map((n, i) => n - (i ? cum[i - 1] : 0));
    const q = (p) => {
      const v = quantile(p, own);
      return v === undefined ? undefined : v * 1000;
    };
    d.p50Ms = q(0.5);
    d.p99Ms = q(0.99);
  }
  return { byDest, byStatus, total: Object.values(byDest).reduce((a, d) => a + d.count, 0) };
}

// ---------------------------------------------------------------------------------------------- processes

/** A child in its own process group (Ctrl-C reaches only the demo, which stops the children in order). */
class Child {
  constructor(name, cmd, args, { env, logFile, stdout = 'file' }) {
    this.name = name;
    this.lines = [];
    this.log = createWriteStream(logFile, { flags: 'a' });
    const fd = openSync(logFile, 'a');
    this.proc = spawn(cmd, args, {
      detached: true,
      env: { ...process.env, ...env },
      stdio: ['ignore', stdout === 'pipe' ? 'pipe' : fd, fd],
    });
    closeSync(fd);
    this.pgid = this.proc.pid;
    this.exited = new Promise((done) => {
      this.proc.once('error', (e) => done({ code: null, signal: null, error: e }));
      this.proc.once('exit', (code, signal) => done({ code, signal }));
    });
    this.exited.then((r) => (this.result = r));
    if (this.proc.stdout) {
      let partial = '';
      this.proc.stdout.setEncoding('utf8');
      this.proc.stdout.on('data', (chunk) => {
        this.log.write(chunk);
        const parts = (partial + chunk).split('\n');
        partial = parts.pop();
        for (const l of parts) this.lines.push(l);
        this.onLine?.();
      });
      this.proc.stdout.on('end', () => {
        if (partial) this.lines.push(partial);
        this.onLine?.();
      });
    }
  }

  get running() {
    return this.result === undefined;
  }

  /** Resolves with the first line matching re; rejects when the child exits or after timeoutMs. */
  waitForLine(re, timeoutMs) {
    return new Promise((done, fail) => {
      const timer = setTimeout(() => finish(() => fail(new DemoError(`${this.name} printed no line matching ${re} within ${timeoutMs / 1000} s`))), timeoutMs);
      const finish = (f) => {
        clearTimeout(timer);
        this.onLine = undefined;
        f();
      };
      this.onLine = () => {
        const l = this.lines.find((x) => re.test(x));
        if (l !== undefined) finish(() => done(l));
      };
      this.exited.then((r) => finish(() => fail(new DemoError(`${this.name} exited (${r.error?.message ?? r.code ?? r.signal}) before it printed a line matching ${re}`))));
      this.onLine();
    });
  }

  signal(sig) {
    try {
      process.kill(-this.pgid, sig); // the whole group: meshctl and the command it runs
    } catch {
      // ESRCH: already gone
    }
  }

  /** True while any process of its group exists. */
  groupAlive() {
    try {
      process.kill(-this.pgid, 0);
      return true;
    } catch {
      return false;
    }
  }

  /** SIGTERM, SIGKILL after graceMs; resolves once the group is empty. */
  async stop(graceMs) {
    if (this.pgid === undefined) return;
    this.signal('SIGTERM');
    const deadline = Date.now() + graceMs;
    while (this.groupAlive() && Date.now() < deadline) await sleep(25);
    if (this.groupAlive()) {
      this.signal('SIGKILL');
      const hard = Date.now() + 5000;
      while (this.groupAlive() && Date.now() < hard) await sleep(25);
    }
    await Promise.race([this.exited, sleep(2000)]);
    this.log.end();
  }
}

// ---------------------------------------------------------------------------------------------- the demo

const state = { started: false, children: [], agent: undefined, workloadPids: new Set(), logDir: undefined, interrupted: undefined };
const abort = new AbortController();

/** Sleeps, but wakes (throwing) on Ctrl-C / SIGTERM / a child dying. */
function wait(msOrPromise) {
  const p = typeof msOrPromise === 'number' ? sleep(Math.max(0, msOrPromise)) : msOrPromise;
  return new Promise((done, fail) => {
    const onAbort = () => fail(abort.signal.reason);
    if (abort.signal.aborted) return onAbort();
    abort.signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        abort.signal.removeEventListener('abort', onAbort);
        done(v);
      },
      (e) => {
        abort.signal.removeEventListener('abort', onAbort);
        fail(e);
      },
    );
  });
}

/** Every pid in the workloads' cgroups now (to check at the end that none is left). */
function recordWorkloadPids(s) {
  const walk = (d) => {
    try {
      for (const p of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) state.workloadPids.add(Number(p));
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
    } catch {
      // gone meanwhile
    }
  };
  walk(s.cgroupRoot);
}

function pidAlive(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const st = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return st !== 'Z' && st !== 'X';
  } catch {
    return false;
  }
}

async function startAgent(s) {
  const agentLog = join(state.logDir, 'agent.log');
  const roots = { config: s.config, listen: s.listen, apiSocket: s.socket, pinRoot: s.pinRoot, cgroupRoot: s.cgroupRoot, stateDir: join(state.logDir, 'state') };
  const agent = new Child('mesh-agent', AGENT_BIN, agentArgs(roots), { logFile: agentLog });
  state.agent = agent;
  state.children.push(agent);
  agent.exited.then((r) => {
    if (!state.stopping) abort.abort(new DemoError(`mesh-agent exited unexpectedly (${r.error?.message ?? r.code ?? r.signal}); its log: ${agentLog}`));
  });
  try {
    // An agent that exits meanwhile aborts the demo (above), which ends the wait.
    await waitReady(s.socket, { timeoutMs: 30_000, intervalMs: 100, signal: abort.signal });
  } catch (err) {
    throw err instanceof DemoError ? err : new DemoError(`${err.message}; its log: ${agentLog}`);
  }
  return agent;
}

function meshRun(s, workload, cmd, env, stdout = 'pipe') {
  const child = new Child(workload, process.execPath, [MESHCTL_BIN, '--api-socket', s.socket, 'run', '--workload', workload, '--', ...cmd], {
    env,
    logFile: join(state.logDir, `${workload}.log`),
    stdout,
  });
  state.children.push(child);
  return child;
}

async function demo(s) {
  await preflight(s);
  state.logDir = mkdtempSync(join(tmpdir(), 'mesh-demo-'));
  state.started = true;

  out(`mesh demo: a ${SERVICE} service split across two versions, measured in the kernel`);
  out();
  await startAgent(s);
  const status = await getJson(s, '/v1/status');
  const { services } = await getJson(s, '/v1/services');
  const { workloads } = await getJson(s, '/v1/workloads');
  const svc = services.find((x) => x.service.endsWith(SERVICE) && x.route);
  if (!svc) throw new DemoError(`the config has no Service ${SERVICE} with an HTTPRoute`);
  const backends = svc.backends.map((b) => ({ ...b, workload: b.ref.replace(/^.*\//, '').replace(/:\d+$/, '') }));
  for (const b of backends) {
    if (!VERSIONS[b.workload]) throw new DemoError(`unexpected backend ${b.ref} of ${SERVICE} (the demo knows ${Object.keys(VERSIONS).join(', ')})`);
    if (!workloads.some((w) => w.name === b.workload)) throw new DemoError(`no Workload ${b.workload} in ${s.config}`);
  }
  const clientWl = workloads.find((w) => w.name === CLIENT_WORKLOAD);
  if (!clientWl) throw new DemoError(`no Workload ${CLIENT_WORKLOAD} in ${s.config}`);
  const url = `http://${svc.address}/${SERVICE}`;

  const rows = [
    ['config', shown(s.config)],
    ['agent', `mesh-agent ${status.version}, pid ${status.pid}, its log in ${join(state.logDir, 'agent.log')}`],
    ['metrics', `http://${s.listen}/metrics (Prometheus text)`],
    ['graph', `http://${s.listen}/ (the service graph, live, in a browser)`],
    ['control', `${s.socket} (meshctl's API: root only)`],
    ['pins', s.pinRoot],
    ['cgroups', s.cgroupRoot],
    ['service', `${SERVICE} ${svc.address} → ${backends.map((b) => `${b.workload} ${Math.round(b.share * 100)}%`).join(', ')} (HTTPRoute ${svc.route})`],
  ];
  for (const r of table(rows)) out(r);
  out();

  // Servers: one per backend, each in its workload's cgroup through meshctl run.
  for (const b of backends) {
    for (const ep of b.endpoints) {
      const [host, port] = [ep.slice(0, ep.lastIndexOf(':')), Number(ep.slice(ep.lastIndexOf(':') + 1))];
      const busy = await new Promise((done) => {
        const srv = createServer();
        srv.once('error', (e) => done(e.code ?? e.message));
        srv.listen(port, host, () => srv.close(() => done(undefined)));
      });
      if (busy) throw new DemoError(`${ep}, where ${b.workload} should listen, is not free (${busy}): is another demo running?`);
    }
  }
  const servers = backends.map((b) => {
    const v = VERSIONS[b.workload];
    const port = b.endpoints[0]?.split(':').pop() ?? '9080';
    const child = meshRun(s, b.workload, [process.execPath, SERVER], { ...v, PORT: port });
    child.exited.then((r) => {
      if (!state.stopping) abort.abort(new DemoError(`${b.workload} exited unexpectedly (${r.code ?? r.signal}); its output: ${join(state.logDir, `${b.workload}.log`)}`));
    });
    return { b, v, child };
  });
  for (const { child } of servers) await wait(child.waitForLine(/listening on/, 15_000));
  for (const { b, v } of servers) {
    const how = [v.DELAY_MS !== '0' && `+${v.DELAY_MS} ms per request`, v.ERROR_EVERY !== '0' && `503 on every ${v.ERROR_EVERY}th`].filter(Boolean);
    out(`  started ${b.workload.padEnd(12)} node server.mjs on ${b.endpoints.join(', ')} (VERSION=${v.VERSION}${how.length ? `, ${how.join(', ')}` : ''})`);
  }

  const client = meshRun(s, CLIENT_WORKLOAD, [process.execPath, CLIENT], { URL: url, RATE: String(s.rate), SECONDS: String(s.seconds) });
  const t0 = Date.now();
  client.exited.then((r) => {
    if (!state.stopping && r.code !== 0) abort.abort(new DemoError(`the client exited with ${r.code ?? r.signal}; its output: ${join(state.logDir, `${CLIENT_WORKLOAD}.log`)}`));
  });
  out(`  started ${CLIENT_WORKLOAD.padEnd(12)} node client.mjs: ${s.rate} requests/s to ${url} for ${s.seconds} s, one connection each`);
  await wait(500);
  recordWorkloadPids(s);

  const ctl = `node ${shown(MESHCTL_BIN)} --api-socket ${s.socket}`;
  out();
  out(`While it runs, from another shell (as root):`);
  out(`  curl -s http://${s.listen}/metrics | grep ^http_client_request_duration_seconds_count`);
  out(`  ${ctl} stat       # the table below, for every workload pair and side`);
  out(`  ${ctl} top        # the same, busiest first, live (q quits)`);
  out(`  ${ctl} services   # VIPs, backends, weights`);
  out(`  ${ctl} status     # programs, links, map fill`);
  out();
  out(`Every ${TICK_S} s, the last ${TICK_S} s of ${CLIENT_WORKLOAD} → ${SERVICE} as the kernel measured them at the client's sockets`);
  const names = backends.map((b) => b.workload);
  const live = fixedColumns([
    ['TIME', 5, 'r'],
    ['BACKEND', Math.max(...names.map((n) => n.length)), 'l'],
    ['SHARE', 6, 'r'],
    ['', 20, 'l'],
    ['REQS', 5, 'r'],
    ['RPS', 6, 'r'],
    ['SUCCESS', 8, 'r'],
    ['P50', 8, 'r'],
    ['P99', 8, 'r'],
  ]);
  out(`(the agent's /v1/stat; percentiles are interpolated within the kernel's histogram buckets, as histogram_quantile does):`);
  out();
  out(live.header);
  for (let k = 1; k * TICK_S <= s.seconds; k++) {
    await wait(t0 + k * TICK_S * 1000 - Date.now());
    // The agent samples the kernel every 2 s and starts the window at the sample nearest to now − window: the
    // rates are over the window it reports, which is within a second of TICK_S.
    const stat = await getJson(s, `/v1/stat?window=${TICK_S}`);
    const pairs = stat.pairs.filter((p) => p.direction === 'client' && p.source.endsWith(`/${CLIENT_WORKLOAD}`));
    const total = pairs.reduce((a, p) => a + p.requests, 0);
    names.forEach((n, i) => {
      const p = pairs.find((x) => x.destination.endsWith(`/${n}`));
      const share = total ? (p?.requests ?? 0) / total : undefined;
      out(live.row([i === 0 ? `${k * TICK_S}s` : '', n, pct(share), bar(share), p?.requests ?? 0, (p?.rps ?? 0).toFixed(1), pct2(p?.successRate), ms(p?.p50Ms), ms(p?.p99Ms)]));
    });
  }

  const done = await wait(client.exited);
  if (done.code !== 0) throw new DemoError(`the client exited with ${done.code ?? done.signal}`);
  const finalLine = client.lines.find((l) => l.includes('"done":true'));
  if (!finalLine) throw new DemoError(`the client printed no summary line; its output: ${join(state.logDir, `${CLIENT_WORKLOAD}.log`)}`);
  const seen = JSON.parse(finalLine);
  const elapsed = (Date.now() - t0) / 1000;

  // The kernel counts a request when its response has gone through the client's socket; poll briefly.
  let kernel;
  for (let i = 0; i < 30; i++) {
    kernel = kernelCounts((await get(s, '/metrics')).body);
    if (kernel.total >= seen.ok) break;
    await wait(100);
  }
  return summary(s, seen, kernel, backends, elapsed);
}

function summary(s, seen, kernel, backends, elapsed) {
  out();
  out(`Done: the client made ${seen.sent} requests in ${elapsed.toFixed(1)} s (${seen.ok} answered, ${seen.failed} failed to connect or timed out).`);
  out(`Its own counts (from the response bodies) against the kernel's (http_client_request_duration_seconds_count at /metrics):`);
  out();
  const rows = [['BACKEND', 'CLIENT', 'KERNEL', 'SHARE', 'WEIGHT', 'SUCCESS', 'P50', 'P99', '']];
  let allMatch = seen.failed === 0;
  for (const b of backends) {
    const v = VERSIONS[b.workload].VERSION;
    const c = seen.byVersion[v] ?? 0;
    const k = kernel.byDest[b.workload] ?? { count: 0, failures: 0 };
    const match = c === k.count;
    allMatch &&= match;
    rows.push([b.workload, c, k.count, pct(kernel.total ? k.count / kernel.total : undefined), `${Math.round(b.share * 100)}%`, pct2(k.count ? (k.count - k.failures) / k.count : undefined), ms(k.p50Ms), ms(k.p99Ms), match ? 'match' : 'DIFFER']);
  }
  const other = Object.keys(kernel.byDest).filter((d) => !backends.some((b) => b.workload === d));
  for (const d of other) {
    allMatch = false;
    rows.push([d, 0, kernel.byDest[d].count, '', '', '', '', '', 'DIFFER']);
  }
  const totalMatch = seen.ok === kernel.total;
  allMatch &&= totalMatch;
  const failures = Object.values(kernel.byDest).reduce((a, d) => a + d.failures, 0);
  rows.push(['total', seen.ok, kernel.total, '', '', pct2(kernel.total ? (kernel.total - failures) / kernel.total : undefined), '', '', totalMatch ? 'match' : 'DIFFER']);
  for (const l of table(rows, [1, 2, 3, 4, 5, 6, 7])) out(l);
  out();
  const statuses = [...new Set([...Object.keys(seen.byStatus), ...Object.keys(kernel.byStatus)])].sort();
  const statusRows = [['STATUS', 'CLIENT', 'KERNEL', '']];
  for (const st of statuses) {
    const c = seen.byStatus[st] ?? 0;
    const k = kernel.byStatus[st] ?? 0;
    allMatch &&= c === k;
    statusRows.push([st, c, k, c === k ? 'match' : 'DIFFER']);
  }
  for (const l of table(statusRows, [1, 2])) out(l);
  out();

  // The split is random per connection: a binomial count, so compare within 3 sigma of the weight.
  const first = backends[0];
  const n = kernel.total;
  const got = kernel.byDest[first.workload]?.count ?? 0;
  const sigma3 = 3 * Math.sqrt(n * first.share * (1 - first.share));
  const within = n > 0 && Math.abs(got - n * first.share) <= sigma3;
  out(
    `split: ${first.workload} got ${pct(n ? got / n : undefined)} of ${n} connections; its weight is ${Math.round(first.share * 100)}%, ` +
      `so ${Math.round(n * first.share)} ± ${Math.ceil(sigma3)} (3 sigma) was expected: ${within ? 'within' : 'OUTSIDE'}.`,
  );
  out(allMatch ? `counts: the kernel counted exactly what the client saw, per backend and per status.` : `counts: the kernel's counts DIFFER from the client's (see above).`);
  return allMatch;
}

async function cleanup(s) {
  state.stopping = true;
  const steps = [];
  const workloads = state.children.filter((c) => c !== state.agent);
  // The client and servers first (their cgroups must be empty before they can go), then the agent.
  await Promise.all(workloads.map((c) => c.stop(3000)));
  const stopped = workloads.map((c) => c.name);
  if (state.agent) {
    await state.agent.stop(10_000);
    const r = state.agent.result;
    stopped.push(`then mesh-agent${r?.code === 0 ? ' (the datapath stays pinned until uninstall)' : ` (exit ${r?.code ?? r?.signal})`}`);
  }
  if (stopped.length) steps.push(['stopped', stopped.join(', ')]);
  const un = await new Promise((done) => {
    const p = spawn(process.execPath, [MESHCTL_BIN, '--api-socket', s.socket, 'uninstall', '--force', '--pin-root', s.pinRoot, '--cgroup-root', s.cgroupRoot], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let text = '';
    p.stdout.on('data', (c) => (text += c));
    p.stderr.on('data', (c) => (text += c));
    const timer = setTimeout(() => p.kill('SIGKILL'), 20_000);
    p.on('error', (e) => done({ code: null, text: e.message }));
    p.on('close', (code) => {
      clearTimeout(timer);
      done({ code, text: text.trim() });
    });
  });
  steps.push(['uninstall', `meshctl uninstall --force: ${un.text.replace(/\n/g, '; ')}`]);

  const left = [];
  if (existsSync(s.pinRoot)) left.push(s.pinRoot);
  if (existsSync(s.cgroupRoot)) left.push(s.cgroupRoot);
  if (existsSync(s.socket)) left.push(s.socket);
  for (const c of state.children) if (c.groupAlive()) left.push(`process group ${c.pgid} (${c.name})`);
  for (const pid of state.workloadPids) if (pidAlive(pid)) left.push(`pid ${pid}`);
  // The agent's pid file (one agent per pin root) goes when it stops, or with uninstall.
  const agentPid = state.agent?.proc.pid;
  if (agentPid !== undefined && existsSync(AGENT_LOCK_DIR)) {
    for (const f of readdirSync(AGENT_LOCK_DIR)) {
      const path = join(AGENT_LOCK_DIR, f);
      try {
        if (readFileSync(path, 'utf8').trim() === String(agentPid)) left.push(path);
      } catch {
        // not a file, or gone meanwhile
      }
    }
  }
  const ok = left.length === 0 && un.code === 0;
  steps.push([
    'left',
    ok
      ? `nothing: ${s.pinRoot} and ${s.cgroupRoot} are gone, all ${state.children.length + state.workloadPids.size} processes exited`
      : `LEFT BEHIND: ${left.join(', ') || `(meshctl uninstall exited ${un.code})`}`,
  ]);
  out();
  out('Cleaning up:');
  for (const l of table(steps)) out(l);
  return ok;
}

async function main() {
  if (process.geteuid?.() !== 0) {
    process.stderr.write('demo: the mesh loads eBPF programs and moves processes between cgroups: run it as root (e.g. sudo npm run demo).\n');
    return 1;
  }
  let s;
  try {
    s = settings();
  } catch (err) {
    process.stderr.write(`demo: ${err.message}\n`);
    return 1;
  }
  const onSignal = (sig) => {
    if (state.stopping) return void process.stderr.write(`demo: ${sig}: still cleaning up, a moment…\n`);
    state.interrupted = sig;
    process.stderr.write(`\ndemo: ${sig}: stopping and cleaning up…\n`);
    abort.abort(new DemoError(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);

  let ok = false;
  let clean = true;
  let failed = false;
  try {
    ok = await demo(s);
  } catch (err) {
    ok = false;
    failed = !state.interrupted;
    if (!state.interrupted) process.stderr.write(`${state.started ? '\n' : ''}demo: ${err instanceof DemoError ? err.message : (err?.stack ?? err)}\n`);
  } finally {
    if (state.started) {
      try {
        clean = await cleanup(s);
      } catch (err) {
        clean = false;
        process.stderr.write(`demo: cleanup failed: ${err?.stack ?? err}\n`);
      }
    }
  }
  const success = ok && clean && !state.interrupted;
  if (state.logDir) {
    // Kept when something went wrong; a clean run, or a clean stop on Ctrl-C, leaves nothing behind.
    if (success || (state.interrupted && clean && !failed)) rmSync(state.logDir, { recursive: true, force: true });
    else out(`Logs kept in ${state.logDir} (agent.log: the agent's JSON lines; one file per workload).`);
  }
  if (state.interrupted) return state.interrupted === 'SIGINT' ? 130 : state.interrupted === 'SIGTERM' ? 143 : 129;
  return success ? 0 : 1;
}

process.exitCode = await main();
