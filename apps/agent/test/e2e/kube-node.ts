/**
 * A simulated Kubernetes node for e2e tests: the test API server, and pods as kubelet would run them: each a
 * network namespace and a cgroup in kubelet's layout (systemd driver, containerd) under the agent's cgroup
 * root, bound to this node on the server with its IP and Ready status. Backends web-a and web-b answer "a" and
 * "b" on their pod IP; the client pod has a veth to each (a point-to-point link stands in for the node's
 * routing), so the only way from the client to a backend is the address the agent's programs connect it to.
 * Service web (port 80) selects both backends; web-a and web-b one each; an HTTPRoute `split` may split web.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import {
  capturedOutput,
  createNetns,
  inCgroup,
  inNetns,
  KubeApiServer,
  type KubeObject,
  type Netns,
  run,
  vethPair,
  type VethPair,
  waitForLine,
} from '@mesh/testkit';

import { exitReason, waitReady } from '../../../../scripts/lib/agent.mjs';
import { AGENT_BIN, FIXTURES, type MeshEnv } from './harness.js';

export const NODE = 'node-e2e';
export const NS = 'shop';
const TRACE = join(FIXTURES, 'trace.mjs');
const BACKEND = join(FIXTURES, 'backend.mjs');

/** Pod IPs: backends on their own /30 with the client's end of the link (198.18.0.0/15 is for tests). */
const BACKENDS = [
  { name: 'a', ip: '198.18.7.2', peer: '198.18.7.1' },
  { name: 'b', ip: '198.18.8.2', peer: '198.18.8.1' },
] as const;

export interface KubeNode extends AsyncDisposable {
  server: KubeApiServer;
  env: MeshEnv;
  /** The cluster IP of Service web. */
  webIP(): string;
  /** An HTTPRoute splitting web over web-a and web-b. */
  route(weights: [number, number]): KubeObject;
  /** Starts the agent in Kubernetes mode; resolves once /readyz answers 200. */
  startAgent(): Promise<ChildProcess>;
  /** Load from the client pod to web's cluster IP, one new connection per request. */
  trace(rate: number, seconds: number): Trace;
  /** kubectl against the test API server; rejects on a non-zero exit. */
  kubectl(args: string[], stdin?: string): Promise<string>;
  close(): Promise<void>;
}

export interface Trace {
  child: ChildProcess;
  /** Answered requests so far: [ms since the epoch, body or "ERR why"]. */
  results(): [number, string][];
  /** Resolves when the load has ended. */
  done(): Promise<[number, string][]>;
}

export async function startKubeNode(env: MeshEnv): Promise<KubeNode> {
  const cleanup: (() => Promise<unknown>)[] = [];
  const close = async () => {
    await env.procs.close();
    for (const c of cleanup.reverse()) await c().catch(() => undefined);
  };
  try {
    const server = await KubeApiServer.start();
    cleanup.push(() => server.close());
    const kubeDir = env.tempDir('kubectl');
    server.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS, labels: { 'mesh.dev/enabled': 'true' } } });
    const svc = (name: string, selector: Record<string, string>) =>
      server.create({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: NS }, spec: { selector, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } });
    const web = svc('web', { app: 'web' });
    for (const b of BACKENDS) svc(`web-${b.name}`, { app: 'web', version: b.name });
    const slice = (svcName: string, ips: string[]) =>
      server.create({
        apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
        metadata: { name: `${svcName}-x1`, namespace: NS, labels: { 'kubernetes.io/service-name': svcName } },
        addressType: 'IPv4', endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })), ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      });
    slice('web', BACKENDS.map((b) => b.ip));
    for (const b of BACKENDS) slice(`web-${b.name}`, [b.ip]);

    /** A pod object bound here, and its cgroup made as kubelet (systemd driver) and containerd make it. */
    const pod = (name: string, ip: string, labels: Record<string, string>) => {
      const p = server.create({
        apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS, labels },
        spec: { nodeName: NODE, containers: [{ name: 'c', image: 'x', ports: [{ name: 'http', containerPort: 8080 }] }] },
        status: { phase: 'Running', qosClass: 'BestEffort', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] },
      });
      const dir = join(env.cgroupRoot, 'kubepods.slice/kubepods-besteffort.slice', `kubepods-besteffort-pod${p.metadata.uid!.replaceAll('-', '_')}.slice`, `cri-containerd-${'cd'.repeat(32)}.scope`);
      mkdirSync(dir, { recursive: true });
      return dir;
    };
    const client = await createNetns('kcli');
    cleanup.push(() => client.close());
    const clientCgroup = pod('client', BACKENDS[0].peer, { app: 'client' });
    const netns: Netns[] = [];
    for (const b of BACKENDS) {
      const ns = await createNetns(`kb${b.name}`);
      cleanup.push(() => ns.close());
      netns.push(ns);
      const link: VethPair = await vethPair(client, ns, { addrA: `${b.peer}/30`, addrB: `${b.ip}/30`, prefix: 'kv' });
      cleanup.push(() => link.close());
      const cg = pod(`web-${b.name}-1`, b.ip, { app: 'web', version: b.name });
      const [cmd, args] = inCgroup(cg, ...inNetns(ns, process.execPath, [BACKEND]));
      const child = env.procs.spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NAME: b.name, MESH_ADDRESS: b.ip, PORT: '8080' } });
      await waitForLine(child, /^listening /, 15_000);
    }

    const kubectl = async (args: string[], stdin?: string) => {
      const r = await run('kubectl', ['--kubeconfig', server.kubeconfigPath, '--cache-dir', join(kubeDir, 'cache'), '--request-timeout', '20s', ...args], { timeoutMs: 40_000, ...(stdin !== undefined && { input: stdin }) });
      if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
      return r.stdout;
    };

    const webIP = () => (web.spec as { clusterIP: string }).clusterIP;
    return {
      server,
      env,
      webIP,
      route: ([a, b]) => ({
        apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'split', namespace: NS },
        spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web', port: 80 }], rules: [{ backendRefs: [{ name: 'web-a', port: 80, weight: a }, { name: 'web-b', port: 80, weight: b }] }] },
      }),
      async startAgent() {
        const child = env.procs.spawn(
          AGENT_BIN,
          ['--kubeconfig', server.kubeconfigPath, '--node-name', NODE, '--listen', env.listen, '--api-socket', env.apiSocket, '--pin-root', env.pinRoot, '--cgroup-root', env.cgroupRoot, '--state-dir', env.stateDir],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        );
        await waitReady(env.apiSocket, { timeoutMs: 60_000, exited: () => exitReason(child), describe: () => capturedOutput(child).stderr });
        return child;
      },
      trace(rate, seconds) {
        const [cmd, args] = inCgroup(clientCgroup, ...inNetns(client, process.execPath, [TRACE]));
        const child = env.procs.spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, URL: `http://${webIP()}:80/`, RATE: String(rate), SECONDS: String(seconds) } });
        const results = () =>
          capturedOutput(child).stdout.split('\n').filter((l) => /^\d+ /.test(l)).map((l): [number, string] => {
            const i = l.indexOf(' ');
            return [Number(l.slice(0, i)), l.slice(i + 1)];
          });
        return {
          child,
          results,
          done: async () => {
            await waitForLine(child, /^done$/, seconds * 1000 + 60_000);
            return results();
          },
        };
      },
      kubectl,
      close,
      [Symbol.asyncDispose]: close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Counts of each answer among results in [from, to). */
export function tally(results: [number, string][], from = 0, to = Infinity): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [t, body] of results) if (t >= from && t < to) out[body] = (out[body] ?? 0) + 1;
  return out;
}
