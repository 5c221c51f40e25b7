/**
 * End-to-end harness: the agent and meshctl started as a user starts them (node bin/…), each test in its own
 * pin root, cgroup root, control socket and metrics port, so suites run side by side and never touch a real
 * installation. Cleanup
 * (also on failure): stop what the test started, then `meshctl uninstall --force` of its own roots.
 */
import type { ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { afterEach } from 'vitest';
import { tryLockExclusive } from '@mesh/bpf';
import { cgroup2Mount, capturedOutput, ProcessTracker, stopProcess, uniqueName, waitForLine } from '@mesh/testkit';

import { uninstall } from '../../src/datapath.js';
import { defaultSvidDir } from '../../src/identity-defaults.js';
import { AGENT_BIN, agentApi, agentArgs, agentGet, agentSocket, exitReason, MESHCTL_BIN, waitReady, type HttpResult } from '../../../../scripts/lib/agent.mjs';

export { AGENT_BIN, MESHCTL_BIN, type HttpResult };

export const EXAMPLES = resolve(import.meta.dirname, '../../../../examples/single-host');
export const FIXTURES = resolve(import.meta.dirname, '../fixtures');

/** A free TCP port on 127.0.0.1 (bound and released). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Where test processes claim address blocks; 127.110-199 is used by no fixed address of the tests. */
const NET_CLAIMS = '/run/mesh-test-nets';
const NET_FIRST = 110;
const NET_LAST = 199;

/**
 * A 127.N.0.0/16 block of this process's own, as "127.N": claimed with a flock on /run/mesh-test-nets/127.N,
 * held until the process exits (the kernel drops it then, kill -9 included), so that checkouts running the e2e
 * tests at once, and test files of one run, never share addresses.
 */
export function testNet(): string {
  mkdirSync(NET_CLAIMS, { recursive: true });
  for (let n = NET_FIRST; n <= NET_LAST; n++) {
    const fd = openSync(join(NET_CLAIMS, `127.${n}`), 'a');
    if (tryLockExclusive(fd)) return `127.${n}`; // fd stays open: the claim lasts as long as the process
    closeSync(fd);
  }
  throw new Error(`no free address block: 127.${NET_FIRST}-${NET_LAST} are all claimed by running tests (${NET_CLAIMS})`);
}

export function httpGet(host: string, port: number, path: string, timeoutMs = 3000): Promise<HttpResult> {
  return agentGet({ host, port }, path, timeoutMs);
}

/** GET over a unix socket (the agent's control socket). */
export function socketGet(socketPath: string, path: string, timeoutMs = 3000): Promise<HttpResult> {
  return agentGet({ socketPath }, path, timeoutMs);
}

/** Value of one sample in Prometheus text, selected by name and labels (all given labels must match). */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number[] {
  const out: number[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    out.push(Number(line.slice(line.lastIndexOf(' ') + 1)));
  }
  return out;
}

export const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

export interface Agent {
  child: ChildProcess;
  /** Structured log lines so far, parsed. */
  logs(): Record<string, unknown>[];
}

export class MeshEnv implements AsyncDisposable {
  readonly name = uniqueName('e2e', 20);
  readonly pinRoot = `/sys/fs/bpf/${this.name}`;
  readonly cgroupRoot = join(cgroup2Mount(), this.name);
  readonly configDir = mkdtempSync(join(tmpdir(), `${this.name}-`));
  /** The agent's state (its built-in CA), never the node's /var/lib/mesh. */
  readonly stateDir = mkdtempSync(join(tmpdir(), `${this.name}-state-`));
  readonly procs = new ProcessTracker(this.name);
  /** The agent's control socket (its default for this pin root). */
  readonly apiSocket = agentSocket(this.pinRoot);
  /** The agent's SVID files for the data plane (its default for this pin root). */
  readonly svidDir = defaultSvidDir(this.pinRoot);
  port = 0;
  private readonly tempDirs: string[] = [];

  static async create(): Promise<MeshEnv> {
    const env = new MeshEnv();
    env.port = await freePort();
    return env;
  }

  get listen(): string {
    return `127.0.0.1:${this.port}`;
  }

  get configPath(): string {
    return join(this.configDir, 'mesh.yaml');
  }

  /** Writes the config atomically (write + rename), as editors and config tools do. */
  writeConfig(yaml: string, file = 'mesh.yaml'): void {
    const tmp = join(this.configDir, `.${file}.tmp`);
    writeFileSync(tmp, yaml);
    renameSync(tmp, join(this.configDir, file)); // the agent never reads a half-written file
  }

  /** mesh-agent's arguments; run it as `AGENT_BIN` itself (its shebang carries the node flags it wants). */
  agentArgs(extra: string[] = []): string[] {
    return agentArgs({ config: this.configDir, listen: this.listen, apiSocket: this.apiSocket, pinRoot: this.pinRoot, cgroupRoot: this.cgroupRoot, stateDir: this.stateDir }, extra);
  }

  /** Starts mesh-agent and waits until /readyz answers 200 on its control socket (or the agent exits). `wrap`: a
   *  command that execs the agent (e.g. nsenter into a node's network namespace). */
  async startAgent(extra: string[] = [], wrap: string[] = []): Promise<Agent> {
    const [cmd, ...args] = [...wrap, AGENT_BIN, ...this.agentArgs(extra)];
    const child = this.procs.spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const agent: Agent = {
      child,
      logs: () =>
        capturedOutput(child)
          .stderr.split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as Record<string, unknown>),
    };
    await waitReady(this.apiSocket, { timeoutMs: 20_000, exited: () => exitReason(child), describe: () => capturedOutput(child).stderr });
    return agent;
  }

  /** Runs meshctl to completion. */
  meshctl(args: string[], timeoutMs = 20_000) {
    return this.procs.run(process.execPath, [MESHCTL_BIN, '--api-socket', this.apiSocket, ...args], { timeoutMs });
  }

  /** Starts `meshctl run --workload W -- cmd…` in the background. */
  meshRun(workload: string, cmd: string[], env: Record<string, string> = {}): ChildProcess {
    return this.procs.spawn(process.execPath, [MESHCTL_BIN, '--api-socket', this.apiSocket, 'run', '--workload', workload, '--', ...cmd], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
  }

  /** A directory of the test's own, removed at close (after the processes stopped). */
  tempDir(what: string): string {
    const dir = mkdtempSync(join(tmpdir(), `${this.name}-${what}-`));
    this.tempDirs.push(dir);
    return dir;
  }

  /** A JSON document of the agent's control API (/v1/…), from its socket. */
  api<T = unknown>(path: string): Promise<T> {
    return agentApi<T>(this.apiSocket, path);
  }

  metrics(): Promise<string> {
    return httpGet('127.0.0.1', this.port, '/metrics').then((r) => r.body);
  }

  /** Stops every process started with meshRun() (meshctl forwards SIGTERM to its command). */
  async stopWorkloads(): Promise<void> {
    await Promise.all(this.procs.children.filter((c) => !c.spawnargs.includes(AGENT_BIN)).map((c) => stopProcess(c)));
  }

  async close(): Promise<void> {
    // Workloads (meshctl run) first, then the agent; the datapath last.
    await this.stopWorkloads();
    await this.procs.close();
    uninstall(this.pinRoot, this.cgroupRoot);
    rmSync(this.configDir, { recursive: true, force: true });
    rmSync(this.stateDir, { recursive: true, force: true });
    rmSync(dirname(this.svidDir), { recursive: true, force: true });
    for (const d of this.tempDirs) rmSync(d, { recursive: true, force: true });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * A config like the demo's on addresses of its own (`net` = "127.N", from testNet()): workloads web-a (N.0.1), web-b (N.0.2) and
 * client (N.0.3); Service web (VIP N.1.1:8080) split by an HTTPRoute over web-a and web-b with `weights`.
 */
export function splitConfig(net: string, weights: [number, number], extra = ''): string {
  const workload = (name: string, app: string, version: string, addr: string) => `apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: ${name}, labels: { app: ${app}, version: ${version} } }
spec: { addresses: [${addr}] }
---
`;
  const service = (name: string, vip: string, selector: string) => `apiVersion: v1
kind: Service
metadata: { name: ${name} }
spec: { clusterIP: ${vip}, selector: ${selector}, ports: [{ port: 8080 }] }
---
`;
  return (
    workload('web-a', 'web', 'a', `${net}.0.1`) +
    workload('web-b', 'web', 'b', `${net}.0.2`) +
    workload('client', 'client', 'x', `${net}.0.3`) +
    service('web', `${net}.1.1`, '{ app: web }') +
    service('web-a', `${net}.1.2`, '{ app: web, version: a }') +
    service('web-b', `${net}.1.3`, '{ app: web, version: b }') +
    `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web-split }
spec:
  parentRefs: [{ kind: Service, name: web, port: 8080 }]
  rules:
    - backendRefs:
        - { name: web-a, port: 8080, weight: ${weights[0]} }
        - { name: web-b, port: 8080, weight: ${weights[1]} }
` +
    extra
  );
}

/** A Workload no Service selects, with `n` addresses (IPv6 documentation range: config only, no traffic). */
export function manyAddresses(n: number): string {
  const addrs: string[] = [];
  for (let i = 0; i < n; i++) addrs.push(`2001:db8::${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}`);
  return `---
apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: many, labels: { app: many } }
spec: { addresses: [${addrs.join(', ')}] }
`;
}

export const BACKEND = join(FIXTURES, 'backend.mjs');
export const LOAD = join(FIXTURES, 'load.mjs');

/** Starts backends web-a and web-b (answering "a" and "b", and with `fixtureEnv`'s variables, e.g. FAIL_EVERY)
 *  through meshctl run and waits until both listen. */
export async function startBackends(env: MeshEnv, fixtureEnv: { a?: Record<string, string>; b?: Record<string, string> } = {}): Promise<void> {
  const a = env.meshRun('web-a', [process.execPath, BACKEND], { NAME: 'a', ...fixtureEnv.a });
  const b = env.meshRun('web-b', [process.execPath, BACKEND], { NAME: 'b', ...fixtureEnv.b });
  await Promise.all([waitForLine(a, /^listening /, 10_000), waitForLine(b, /^listening /, 10_000)]);
}

export interface LoadResult {
  sent: number;
  ok: number;
  failed: number;
  byBody: Record<string, number>;
  errors: string[];
}

/** Runs the fixed-rate load from the client workload through the VIP and returns its summary. */
export async function runLoad(env: MeshEnv, net: string, rate: number, seconds: number, onStarted?: () => void): Promise<LoadResult> {
  const child = env.meshRun('client', [process.execPath, LOAD], { URL: `http://${net}.1.1:8080/`, RATE: String(rate), SECONDS: String(seconds) });
  await waitForLine(child, /^started$/, 10_000);
  onStarted?.();
  const line = await waitForLine(child, /^\{.*\}$/, seconds * 1000 + 30_000);
  return JSON.parse(line[0]) as LoadResult;
}

export interface PromSample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface Prometheus {
  port: number;
  /** An instant query through the HTTP API (/api/v1/query); rejects on an error status, naming the query. */
  query(q: string): Promise<PromSample[]>;
}

/** Starts Debian's Prometheus (stopped with the env's processes) scraping the env's agent every second, and waits
 *  for its first successful scrape. */
export async function startPrometheus(env: MeshEnv): Promise<Prometheus> {
  const dir = env.tempDir('prom');
  const port = await freePort();
  writeFileSync(
    join(dir, 'prometheus.yml'),
    `global: { scrape_interval: 1s, evaluation_interval: 1s }\nscrape_configs:\n  - job_name: mesh\n    static_configs: [{ targets: ['${env.listen}'] }]\n`,
  );
  env.procs.spawn('prometheus', [
    `--config.file=${join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  const query = async (q: string) => {
    const r = await httpGet('127.0.0.1', port, `/api/v1/query?query=${encodeURIComponent(q)}`);
    if (r.status !== 200) throw new Error(`query ${q}: ${r.status} ${r.body}`);
    return (JSON.parse(r.body) as { data: { result: PromSample[] } }).data.result;
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    const up = await query('up{job="mesh"}').catch(() => []);
    if (up[0]?.value[1] === '1') return { port, query };
    if (Date.now() > deadline) throw new Error(`Prometheus did not scrape the agent within 30 s: ${JSON.stringify(up)}`);
    await sleep(250);
  }
}

/** For a describe block: returns a function that makes a MeshEnv for the current test, closed after it (also
 *  when it fails). */
export function meshEnvPerTest(): () => Promise<MeshEnv> {
  let env: MeshEnv | undefined;
  afterEach(async () => {
    await env?.close();
    env = undefined;
  });
  return async () => (env = await MeshEnv.create());
}
