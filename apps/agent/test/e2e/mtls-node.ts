// One mTLS node for e2e tests (the topology of mtls.test.ts): an agent with --mtls on loopback addresses of a
// block of 127/8 claimed by testNet(), an enrolled client and an enrolled STRICT server workload, the data plane
// started by the agent; helpers to load it and to read both metric endpoints. Stops the data plane (a session of
// its own, outliving agents) at close.
import { existsSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChildProcess } from 'node:child_process';

import { autogroupNice, threadsOf, waitForLine } from '@mesh/testkit';

import { scrapeDataplane } from '../../src/dataplane.js';
import { type Agent, FIXTURES, freePort, MeshEnv, sample, sum, testNet } from './harness.js';

export const MARKER = 'BODY-MARKER-7c2e';
export const PATH = '/secret-path-41fd';

export const nodeConfig = (a: { client: string; server: string }) => `apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: client, labels: { app: client, mesh.dev/mtls: enabled } }
spec: { serviceAccount: client, addresses: [${a.client}] }
---
apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: server, labels: { app: server, mesh.dev/mtls: enabled } }
spec: { serviceAccount: server, addresses: [${a.server}], ports: [{ name: http, port: 8080 }] }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: server-mtls }
spec: { selector: { matchLabels: { app: server } }, mtls: { mode: STRICT } }
`;

export interface LoadResult {
  sent: number;
  ok: number;
  failed: number;
  errors: string[];
  /** With `times`: per request [start, end (epoch ms), 1 = ok / 0 = failed]. */
  times?: [number, number, number][];
}

export interface KeepAliveResult extends LoadResult {
  conns: { localPort: number; ok: number; failed: number; closed: boolean }[];
}

/** Waits until `f` holds (polling), failing with `what` after `ms`. */
export async function until(what: string, f: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await f().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** The data plane's pid from its pid file in `runDir` (undefined before one started). */
export function dataplanePidIn(runDir: string): number | undefined {
  try {
    return (JSON.parse(readFileSync(join(runDir, 'dataplane.pid'), 'utf8')) as { pid: number }).pid;
  } catch {
    return undefined;
  }
}

/** Stops a node: its processes, then its data plane — which runs in a session of its own (it outlives agents), so
 *  it is stopped by its recorded pid once the agent (which would start it again) is gone; read before the run
 *  directory goes — then the environment. */
export async function stopNode(env: MeshEnv | undefined, runDir: string): Promise<void> {
  const pid = dataplanePidIn(runDir);
  await env?.procs.close();
  if (pid !== undefined) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  await env?.close();
}

export class MtlsNode {
  readonly net = testNet();
  readonly server = `${this.net}.0.1`;
  readonly client = `${this.net}.0.3`;
  readonly dataplane = `${this.net}.0.100`;
  readonly inboundSource = `${this.net}.0.6`;
  env!: MeshEnv;
  agent!: Agent;
  statsAddr = '';
  runDir = '';
  agentArgs: string[] = [];
  agentWrap: string[] = [];

  /** Starts the agent (with `extraArgs`; `wrap`: a command that execs it, see MeshEnv.startAgent — given the new
   *  node's environment, it may name its paths; `beforeAgent`: run just before the agent starts) and the server
   *  workload; resolves once both workloads are enrolled. */
  static async start(extraArgs: string[] = [], wrap: (env: MeshEnv) => string[] = () => [], beforeAgent?: (n: MtlsNode) => void, serverEnv: Record<string, string> = {}): Promise<MtlsNode> {
    const n = new MtlsNode();
    n.env = await MeshEnv.create();
    n.agentWrap = wrap(n.env);
    n.runDir = n.env.tempDir('run');
    n.statsAddr = `127.0.0.1:${await freePort()}`;
    n.env.writeConfig(nodeConfig(n));
    // Client and server are workloads of this one node: the tests using it exercise the tunnel between them, so
    // the same-node shortcut (mtls-local.test.ts) is off.
    n.agentArgs = ['--mtls', '--mtls-outbound', `${n.dataplane}:15001`, '--mtls-tunnel', `${n.dataplane}:15008`, '--mtls-inbound-source', n.inboundSource, '--mtls-stats', n.statsAddr, '--run-dir', n.runDir, '--no-mtls-local-shortcut', ...extraArgs];
    beforeAgent?.(n);
    n.agent = await n.env.startAgent(n.agentArgs, n.agentWrap);
    const server = n.env.meshRun('server', [process.execPath, join(FIXTURES, 'backend.mjs')], { NAME: MARKER, PORT: '8080', ...serverEnv });
    await waitForLine(server, /^listening/, 30_000);
    await until('both workloads enrolled', async () => sum(sample(await n.env.metrics(), 'mesh_mtls_enrolled_workloads')) === 2, 60_000);
    return n;
  }

  /** `kill -9` of the agent, then a new one with the same arguments (it adopts the running data plane). */
  async restartAgent(): Promise<void> {
    const old = this.agent.child;
    old.kill('SIGKILL');
    await until('agent gone', async () => old.exitCode !== null || old.signalCode !== null, 10_000);
    this.agent = await this.env.startAgent(this.agentArgs, this.agentWrap);
  }

  get url(): string {
    return `http://${this.server}:8080${PATH}`;
  }

  dpStats = async (): Promise<string> => (await scrapeDataplane(this.statsAddr)).text;

  /** The data plane's pid from its pid file (undefined before one started). */
  dataplanePid(): number | undefined {
    return dataplanePidIn(this.runDir);
  }

  /** The data plane's CPU priority: each thread's nice value, and its session's autogroup's (undefined where the
   *  kernel does not schedule by autogroup). */
  dataplanePriority(): { threads: number[]; autogroup?: number } {
    const pid = this.dataplanePid();
    if (pid === undefined) throw new Error('no data plane pid file');
    const threads = threadsOf(pid).map((t) => t.nice);
    const autogroup = autogroupNice(pid);
    return { threads, ...(autogroup !== undefined ? { autogroup } : {}) };
  }

  /** New connections from the client workload: RATE per second for SECONDS (fixtures/load.mjs). */
  load(rate: number, seconds: number, times = false): { child: ChildProcess; result: Promise<LoadResult> } {
    const child = this.env.meshRun('client', [process.execPath, join(FIXTURES, 'load.mjs')], { URL: this.url, RATE: String(rate), SECONDS: String(seconds), TIMES: times ? '1' : '0' });
    const result = waitForLine(child, /^\{.*"sent".*$/, seconds * 1000 + 120_000).then((m) => JSON.parse(m[0]) as LoadResult);
    return { child, result };
  }

  /** CONNS long-lived connections from the client workload (fixtures/keepalive.mjs); `started` resolves once
   *  every one answered its first request. */
  keepAlive(conns: number, intervalMs: number, seconds: number): { started: Promise<unknown>; result: Promise<KeepAliveResult> } {
    const child = this.env.meshRun('client', [process.execPath, join(FIXTURES, 'keepalive.mjs')], { URL: this.url, CONNS: String(conns), INTERVAL_MS: String(intervalMs), SECONDS: String(seconds) });
    const started = waitForLine(child, /^started$/, 60_000);
    const result = waitForLine(child, /^\{.*"sent".*$/, seconds * 1000 + 120_000).then((m) => JSON.parse(m[0]) as KeepAliveResult);
    return { started, result };
  }

  /** dumpcap on lo with `filter`, into a file of the test's; stop() returns the capture's bytes. */
  async capture(filter: string): Promise<{ stop: () => Promise<Buffer> }> {
    const file = join(this.env.tempDir('pcap'), 'cap.pcap');
    const cap = this.env.procs.spawn('dumpcap', ['-q', '-i', 'lo', '-f', filter, '-w', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    await until('dumpcap started', async () => existsSync(file), 20_000);
    await sleep(500);
    return {
      stop: async () => {
        await sleep(500);
        cap.kill('SIGINT');
        await until('dumpcap stopped', async () => cap.exitCode !== null || cap.signalCode !== null, 20_000);
        return readFileSync(file);
      },
    };
  }

  async close(): Promise<void> {
    await stopNode(this.env, this.runDir);
    // Cgroups a test made below the root for the agent or the data plane (uninstall leaves a root that holds them).
    const rmdir = (d: string) => {
      try {
        rmdirSync(d);
      } catch {
        /* gone already */
      }
    };
    for (const d of [...this.extraCgroups].reverse()) rmdir(d);
    if (this.extraCgroups.length > 0 && this.env) rmdir(this.env.cgroupRoot);
  }

  /** Directories below the cgroup root a test made itself (deepest last): removed at close, after the processes. */
  readonly extraCgroups: string[] = [];
}
