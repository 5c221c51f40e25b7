// `npm run demo:kubernetes`: the mesh on a simulated Kubernetes node. Starts the test API server of
// @mesh/testkit (HTTPS, client certificates; no real kube-apiserver runs on these machines), applies
// manifests.yaml with the machine's kubectl, runs the pods as kubelet would (each a network namespace and a
// cgroup in kubelet's systemd layout under the agent's cgroup root, bound to the node with its IP), starts
// mesh-agent in Kubernetes mode, and sends one new connection per request from productpage to the reviews
// Service's cluster IP. Half-way it patches the HTTPRoute from 90/10 to 50/50 with kubectl and shows the split
// move. Removes everything it made (also on Ctrl-C, SIGTERM or an error). Exit status 0 only when the split
// followed the route both times and no request failed.
//
// Environment: DEMO_SECONDS (20), DEMO_RATE (40 new connections/s), DEMO_LISTEN (127.0.0.1:15098, /metrics),
// DEMO_PIN_ROOT (/sys/fs/bpf/mesh-kube-demo), DEMO_CGROUP_ROOT (<cgroup2 mount>/mesh-kube-demo).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { AGENT_BIN, agentApi, exitReason, MESHCTL_BIN, waitReady } from '../../scripts/lib/agent.mjs';

const HERE = import.meta.dirname;
const REPO = resolve(HERE, '../..');
const SERVER = join(REPO, 'examples/single-host/server.mjs');
const CLIENT = join(REPO, 'examples/single-host/client.mjs');
const MANIFESTS = join(HERE, 'manifests.yaml');
const TESTKIT = join(REPO, 'build/testkit');
const NODE_NAME = 'demo-node';
const NS = 'bookinfo';
// Pod addresses (198.18.0.0/15 is for tests): each reviews pod on a point-to-point link from productpage's
// namespace, which stands in for the node's routing: only the address the mesh picks reaches a version.
const PODS = [
  { name: 'reviews-v1-0', version: 'v1', ip: '198.18.90.2', peer: '198.18.90.1' },
  { name: 'reviews-v2-0', version: 'v2', ip: '198.18.91.2', peer: '198.18.91.1' },
];

class DemoError extends Error {}

function settings() {
  const int = (name, def, min, max) => {
    const raw = process.env[name] ?? String(def);
    const v = Number(raw);
    if (!Number.isInteger(v) || v < min || v > max) throw new DemoError(`${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}`);
    return v;
  };
  const listen = process.env.DEMO_LISTEN || '127.0.0.1:15098';
  const m = /^(127\.\d+\.\d+\.\d+):(\d+)$/.exec(listen);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new DemoError(`DEMO_LISTEN must be a loopback HOST:PORT (127.0.0.0/8), got ${JSON.stringify(listen)}`);
  const cgroup2 = readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')).find((f) => f[2] === 'cgroup2')?.[1];
  if (!cgroup2) throw new DemoError('no cgroup2 file system is mounted (see /proc/mounts)');
  const pinRoot = process.env.DEMO_PIN_ROOT || '/sys/fs/bpf/mesh-kube-demo';
  return {
    seconds: int('DEMO_SECONDS', 20, 6, 600),
    rate: int('DEMO_RATE', 40, 5, 500),
    listen,
    pinRoot,
    cgroupRoot: process.env.DEMO_CGROUP_ROOT || join(cgroup2, 'mesh-kube-demo'),
    socket: `/run/mesh/${basename(pinRoot)}.sock`,
  };
}

const say = (line = '') => process.stdout.write(`${line}\n`);
const step = (title) => say(`\n== ${title}`);

/** Removes a cgroup directory and the ones below it, deepest first (each must be empty of processes). */
function removeCgroupTree(dir) {
  if (!existsSync(dir)) return;
  for (const d of readdirSync(dir, { withFileTypes: true })) if (d.isDirectory()) removeCgroupTree(join(dir, d.name));
  try {
    rmdirSync(dir);
  } catch {
    // busy: reported by the check at the end
  }
}

async function main() {
  const s = settings();
  if (process.getuid?.() !== 0) throw new DemoError('run as root: the agent loads BPF programs, and the pods are network namespaces and cgroups');
  for (const [what, path] of [['the agent (npm run build)', join(REPO, 'apps/agent/dist/app.js')], ['kubectl', '/usr/bin/kubectl']]) {
    if (!existsSync(path) && !(what === 'kubectl' && spawnSync('kubectl', ['version', '--client'], { stdio: 'ignore' }).status === 0)) throw new DemoError(`${what} not found (${path})`);
  }
  if (existsSync(s.pinRoot) || existsSync(s.cgroupRoot)) {
    throw new DemoError(`${s.pinRoot} or ${s.cgroupRoot} exists: another demo is running, or one was killed. Remove what is left with:\n  node ${MESHCTL_BIN} uninstall --force --pin-root ${s.pinRoot} --cgroup-root ${s.cgroupRoot}`);
  }

  // The test API server is TypeScript in @mesh/testkit: compiled once here (no TS loader ships with Node 20).
  const tsc = spawnSync(process.execPath, [join(REPO, 'node_modules/typescript/bin/tsc'), '-p', join(REPO, 'packages/testkit/tsconfig.build.json')], { encoding: 'utf8' });
  if (tsc.status !== 0) throw new DemoError(`compiling @mesh/testkit failed:\n${tsc.stdout}${tsc.stderr}`);
  const { KubeApiServer } = await import(join(TESTKIT, 'kube/index.js'));
  const { createNetns, inNetns, vethPair } = await import(join(TESTKIT, 'netns.js'));
  const { inCgroup } = await import(join(TESTKIT, 'cgroup.js'));
  const { ProcessTracker, capturedOutput, run, stopProcess, waitForLine } = await import(join(TESTKIT, 'proc.js'));

  const procs = new ProcessTracker('demo:kubernetes');
  const cleanups = [];
  const stateDir = mkdtempSync(join(tmpdir(), 'mesh-kube-demo-state-'));
  cleanups.push(async () => rmSync(stateDir, { recursive: true, force: true }));
  let agent;
  const cleanup = async () => {
    step('cleaning up');
    // The client and the pods first, the agent next (its pins stay), then uninstall removes pins and cgroups.
    for (const c of procs.children.filter((c) => c !== agent)) await stopProcess(c);
    if (agent) await stopProcess(agent);
    await procs.close();
    const un = await run(process.execPath, [MESHCTL_BIN, 'uninstall', '--force', '--pin-root', s.pinRoot, '--cgroup-root', s.cgroupRoot]);
    say(`meshctl uninstall --force: ${(un.stdout + un.stderr).trim().replace(/\n/g, '; ')}`);
    removeCgroupTree(s.cgroupRoot);
    for (const c of cleanups.reverse()) await c().catch((e) => say(`cleanup: ${e.message}`));
    const left = [s.pinRoot, s.cgroupRoot, s.socket].filter((p) => existsSync(p));
    say(left.length ? `left behind: ${left.join(', ')}` : 'nothing left behind');
    return left.length === 0;
  };
  let interrupted = false;
  const abort = new AbortController();
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.once(sig, () => {
      interrupted = true;
      abort.abort(new DemoError('interrupted'));
    });
  }
  const checkInterrupt = () => {
    if (interrupted) throw new DemoError('interrupted');
  };

  let ok = false;
  try {
    step('the API server');
    const server = await KubeApiServer.start();
    cleanups.push(() => server.close());
    say(`test API server ${server.url} (HTTPS, client certificates); kubeconfig ${server.kubeconfigPath}`);
    // Asynchronous: the API server answers from this process's event loop.
    const kubectl = async (args, shown = true) => {
      const r = await run('kubectl', ['--kubeconfig', server.kubeconfigPath, '--cache-dir', join(stateDir, 'kubectl-cache'), '--request-timeout', '20s', ...args], { timeoutMs: 40_000 });
      if (r.code !== 0) throw new DemoError(`kubectl ${args.join(' ')}: ${r.stderr}`);
      if (shown) say(`$ kubectl ${args.join(' ')}\n${r.stdout.trimEnd()}`);
      return r.stdout;
    };

    step('kubectl apply: the namespace, the Services, the HTTPRoute (90/10)');
    await kubectl(['apply', '-f', MANIFESTS]);
    checkInterrupt();

    step(`node ${NODE_NAME}: pods as kubelet runs them (network namespace + cgroup under ${s.cgroupRoot})`);
    mkdirSync(s.cgroupRoot);
    const client = await createNetns('kdemo');
    cleanups.push(() => client.close());
    /** The scheduler binds the pod here, kubelet makes its cgroup (systemd driver, containerd) and reports its IP. */
    const runPod = (name, ip, labels) => {
      const pod = server.create({
        apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS, labels },
        spec: { nodeName: NODE_NAME, containers: [{ name: 'app', image: 'example/app', ports: [{ name: 'http', containerPort: 9080 }] }] },
        status: {
          phase: 'Running', qosClass: 'BestEffort', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }],
          containerStatuses: [{ name: 'app', ready: true, started: true, restartCount: 0, image: 'example/app', imageID: '', state: { running: { startedAt: new Date().toISOString().replace(/\.\d+Z$/, 'Z') } } }],
        },
      });
      const cgroup = join('kubepods.slice/kubepods-besteffort.slice', `kubepods-besteffort-pod${pod.metadata.uid.replaceAll('-', '_')}.slice`, `cri-containerd-${'0d'.repeat(32)}.scope`);
      mkdirSync(join(s.cgroupRoot, cgroup), { recursive: true });
      say(`pod ${NS}/${name}  ip ${ip}  cgroup ${cgroup}`);
      return join(s.cgroupRoot, cgroup);
    };
    for (const p of PODS) {
      const ns = await createNetns(`kd-${p.version}-pod`);
      cleanups.push(() => ns.close());
      const link = await vethPair(client, ns, { addrA: `${p.peer}/30`, addrB: `${p.ip}/30`, prefix: 'kd' });
      cleanups.push(() => link.close());
      const cg = runPod(p.name, p.ip, { app: 'reviews', version: p.version });
      const [cmd, args] = inCgroup(cg, ...inNetns(ns, process.execPath, [SERVER]));
      const child = procs.spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, VERSION: p.version, MESH_ADDRESS: p.ip, PORT: '9080' } });
      await waitForLine(child, /listening/, 15_000);
    }
    const clientCgroup = runPod('productpage-0', PODS[0].peer, { app: 'productpage' });
    // The endpoint controller's part: a slice per Service, from the pods it selects.
    const slice = (svc, pods) => server.create({
      apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
      metadata: { name: `${svc}-demo`, namespace: NS, labels: { 'kubernetes.io/service-name': svc } },
      addressType: 'IPv4', endpoints: pods.map((p) => ({ addresses: [p.ip], conditions: { ready: true }, nodeName: NODE_NAME })),
      ports: [{ name: 'http', port: 9080, protocol: 'TCP' }],
    });
    slice('reviews', PODS);
    for (const p of PODS) slice(`reviews-${p.version}`, [p]);
    await kubectl(['get', 'pods,services,endpointslices', '-n', NS]);
    checkInterrupt();

    step('mesh-agent in Kubernetes mode');
    agent = procs.spawn(AGENT_BIN, ['--kubeconfig', server.kubeconfigPath, '--node-name', NODE_NAME, '--listen', s.listen, '--api-socket', s.socket, '--pin-root', s.pinRoot, '--cgroup-root', s.cgroupRoot, '--state-dir', stateDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    say(`mesh-agent --kubeconfig ${server.kubeconfigPath} --node-name ${NODE_NAME} --cgroup-root ${s.cgroupRoot}`);
    await waitReady(s.socket, { timeoutMs: 60_000, exited: () => exitReason(agent), signal: abort.signal, describe: () => capturedOutput(agent).stderr });
    const status = await agentApi(s.socket, '/v1/status');
    say(`ready: source ${status.source}, watches ${status.sourceHealth?.healthy ? 'up' : 'down'}`);
    const ms = await run(process.execPath, [MESHCTL_BIN, '--api-socket', s.socket, 'services']);
    say(ms.stdout.trimEnd());

    const vip = server.get({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'reviews', namespace: NS } }).spec.clusterIP;
    step(`productpage → reviews (${vip}:9080), ${s.rate} new connections/s for ${s.seconds} s; the route patched to 50/50 half-way`);
    const [cmd, args] = inCgroup(clientCgroup, ...inNetns(client, process.execPath, [CLIENT]));
    const load = procs.spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, URL: `http://${vip}:9080/reviews`, RATE: String(s.rate), SECONDS: String(s.seconds) } });
    const patchAt = Math.floor(s.seconds / 2);
    const lines = () => capturedOutput(load).stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    let shown = 0;
    let prev = { ok: 0, failed: 0, byVersion: {} };
    const periods = { before: { v1: 0, v2: 0 }, after: { v1: 0, v2: 0 } };
    let failed = 0;
    for (const deadline = Date.now() + (s.seconds + 30) * 1000; ;) {
      checkInterrupt();
      const ls = lines();
      for (; shown < ls.length; shown++) {
        const l = ls[shown];
        const d = (v) => (l.byVersion[v] ?? 0) - (prev.byVersion[v] ?? 0);
        const [v1, v2] = [d('v1'), d('v2')];
        const sec = shown + 1;
        failed = l.failed;
        say(`${l.done ? 'end' : `${String(sec).padStart(3)} s`}  v1 ${String(v1).padStart(3)}  v2 ${String(v2).padStart(3)}  (v2 ${v1 + v2 ? Math.round((100 * v2) / (v1 + v2)) : 0}%)  failed ${l.failed}`);
        // The second after the patch is in neither period: the change lands within it.
        if (!l.done && sec <= patchAt) Object.assign(periods.before, { v1: periods.before.v1 + v1, v2: periods.before.v2 + v2 });
        if (!l.done && sec > patchAt + 1) Object.assign(periods.after, { v1: periods.after.v1 + v1, v2: periods.after.v2 + v2 });
        prev = l;
        if (sec === patchAt) {
          await kubectl(['patch', 'httproute', 'reviews', '-n', NS, '--type=merge', '-p', JSON.stringify({ spec: { rules: [{ backendRefs: [{ name: 'reviews-v1', port: 9080, weight: 50 }, { name: 'reviews-v2', port: 9080, weight: 50 }] }] } })]);
        }
      }
      if (ls.at(-1)?.done) break;
      if (Date.now() > deadline) throw new DemoError('the client did not finish');
      await sleep(100);
    }

    step('result');
    const share = (p) => (p.v1 + p.v2 ? p.v2 / (p.v1 + p.v2) : 0);
    const [b, a] = [share(periods.before), share(periods.after)];
    say(`before the patch (90/10): v2 ${(100 * b).toFixed(1)}% of ${periods.before.v1 + periods.before.v2}`);
    say(`after the patch  (50/50): v2 ${(100 * a).toFixed(1)}% of ${periods.after.v1 + periods.after.v2}`);
    say(`failed requests: ${failed}`);
    // Wide bounds: a few hundred connections per period; the exact check is the e2e tests' (3 sigma).
    ok = b > 0.02 && b < 0.25 && a > 0.3 && a < 0.7 && failed === 0;
    say(ok ? 'the split followed the route: ok' : 'the split did NOT follow the route');
  } finally {
    const clean = await cleanup();
    ok &&= clean;
  }
  return ok;
}

main().then(
  (ok) => process.exit(ok ? 0 : 1),
  (err) => {
    process.stderr.write(`demo:kubernetes: ${err instanceof DemoError ? err.message : err.stack}\n`);
    process.exit(1);
  },
);
