// Transparent mTLS across two nodes, each a network namespace with its own agent (and data plane, pin root,
// cgroup subtree), joined by a veth pair: the link between the nodes. Pods are a network namespace and a cgroup
// (meshctl run), joined to their node by a veth, as bench:mesh builds them. A client pod on node A calls a
// Service whose endpoint is a server pod on node B: the split picks the endpoint, A's kernel sends the connection
// to A's data plane, the tunnel carries it in TLS over the link to B's, which connects to the server pod from its
// inbound source. The agents share one CA and know each other's tunnel by its address on the link.
import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { afterAll, beforeAll, expect, it } from 'vitest';
import { capturedOutput, createNetns, describePrivileged, vethPair, waitForExit, waitForLine, type Netns, type VethPair } from '@mesh/testkit';

import { FIXTURES, MeshEnv, sample, socketGet, sum } from './harness.js';

const MARKER = 'TWO-NODES-MARKER-81c2';
const PATH = '/two-nodes-path-4be0';
const REQUESTS = 1000;
const CLIENT_ID = 'spiffe://cluster.local/ns/default/sa/client';
const SERVER_ID = 'spiffe://cluster.local/ns/default/sa/server';
const TUNNEL_PORT = 15008;
const STATS = '127.0.0.1:15020'; // inside each node's namespace
// Addresses exist only inside the namespaces this test makes.
const LINK = { a: '10.77.0.1', b: '10.77.0.2' };
const POD_NET = { a: '10.77.1', b: '10.77.2' }; // .1 the node's end of the pod's veth, .2 the pod
const CLIENT = `${POD_NET.a}.2`;
const SERVER = `${POD_NET.b}.2`;
const VIP = '10.77.100.1';
const NODES = {
  'node-a': { link: LINK.a, pod: `${POD_NET.a}.1` },
  'node-b': { link: LINK.b, pod: `${POD_NET.b}.1` },
} as const;
type Node = keyof typeof NODES;

const CONFIG = `apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: client, labels: { app: client, mesh.dev/mtls: enabled } }
spec: { serviceAccount: client, nodeName: node-a, addresses: [${CLIENT}] }
---
apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: server, labels: { app: server, mesh.dev/mtls: enabled } }
spec: { serviceAccount: server, nodeName: node-b, addresses: [${SERVER}], ports: [{ name: http, port: 8080 }] }
---
apiVersion: v1
kind: Service
metadata: { name: server }
spec: { clusterIP: ${VIP}, selector: { app: server }, ports: [{ port: 80, targetPort: 8080 }] }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: strict }
spec: { mtls: { mode: STRICT } }
`;

/** argv running `cmd` in network namespace `ns` only: `ip netns exec` would also remount /sys, hiding the bpffs
 *  and cgroup2 mounts below it that the agent and meshctl run need. */
const inNet = (ns: Netns, ...argv: string[]): string[] => ['nsenter', `--net=${ns.path}`, ...argv];

describePrivileged('transparent mTLS between two nodes (network namespaces joined by a veth)', () => {
  const envs: Partial<Record<Node, MeshEnv>> = {};
  const nodeNs: Partial<Record<Node, Netns>> = {};
  const pods: Netns[] = [];
  const veths: VethPair[] = [];
  let link: VethPair;
  let clientPod: Netns;
  const runDirs: string[] = [];

  async function until(what: string, f: () => Promise<boolean>, ms = 60_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!(await f().catch(() => false))) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(100);
    }
  }
  /** The agent's /metrics, from its control socket (its TCP address is inside the node's namespace). */
  const agentMetrics = async (node: Node) => (await socketGet(envs[node]!.apiSocket, '/metrics', 10_000)).body;
  /** The data plane's stats, from inside the node's namespace. */
  const dataplaneStats = async (node: Node) => (await nodeNs[node]!.execChecked('curl', ['-sS', '--max-time', '10', `http://${STATS}/metrics`], { timeoutMs: 20_000 })).stdout;

  beforeAll(async () => {
    for (const node of Object.keys(NODES) as Node[]) nodeNs[node] = await createNetns('mtn');
    link = await vethPair(nodeNs['node-a']!, nodeNs['node-b']!, { prefix: 'ml', addrA: `${LINK.a}/24`, addrB: `${LINK.b}/24` });
    veths.push(link);
    // A pod per node: its namespace, a veth to the node, a route to the other node's pods through its node.
    const pod = async (node: Node, net: string, other: string, peer: string) => {
      const ns = await createNetns('mtp');
      pods.push(ns);
      veths.push(await vethPair(nodeNs[node]!, ns, { prefix: 'mp', addrA: `${net}.1/24`, addrB: `${net}.2/24` }));
      await ns.execChecked('ip', ['route', 'add', '10.77.0.0/16', 'via', `${net}.1`]);
      await nodeNs[node]!.execChecked('ip', ['route', 'add', `${other}.0/24`, 'via', peer]);
      await nodeNs[node]!.execChecked('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
      return ns;
    };
    clientPod = await pod('node-a', POD_NET.a, POD_NET.b, LINK.b);
    const serverPod = await pod('node-b', POD_NET.b, POD_NET.a, LINK.a);

    const peers = Object.entries(NODES).flatMap(([n, a]) => ['--mtls-node', `${n}=${a.link}:${TUNNEL_PORT}`]);
    let stateDir: string | undefined;
    for (const [node, a] of Object.entries(NODES) as [Node, (typeof NODES)[Node]][]) {
      const env = (envs[node] = await MeshEnv.create());
      const runDir = env.tempDir('run');
      runDirs.push(runDir);
      env.writeConfig(CONFIG);
      // One CA for the mesh: node B's agent reads the root node A's made.
      stateDir ??= env.stateDir;
      await env.startAgent([
        '--state-dir', stateDir, '--node-name', node, '--mtls', '--mtls-outbound', `${a.pod}:15001`, '--mtls-tunnel', `${a.link}:${TUNNEL_PORT}`,
        '--mtls-inbound-source', a.pod, '--mtls-stats', STATS, '--run-dir', runDir, ...peers,
      ], inNet(nodeNs[node]!));
    }
    const server = envs['node-b']!.meshRun('server', inNet(serverPod, process.execPath, join(FIXTURES, 'backend.mjs')), { NAME: MARKER, PORT: '8080' });
    await waitForLine(server, /^listening/, 60_000);
    for (const node of Object.keys(NODES) as Node[]) {
      await until(`the ${node} workload enrolled`, async () => sum(sample(await agentMetrics(node), 'mesh_mtls_enrolled_workloads')) === 1);
    }
  }, 300_000);

  afterAll(async () => {
    const pids = runDirs.flatMap((d) => {
      try {
        return [(JSON.parse(readFileSync(join(d, 'dataplane.pid'), 'utf8')) as { pid: number }).pid];
      } catch {
        return [];
      }
    });
    for (const env of Object.values(envs)) await env.stopWorkloads();
    for (const env of Object.values(envs)) await env.procs.close();
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const env of Object.values(envs)) await env.close();
    for (const v of veths) await v.close().catch(() => {});
    for (const ns of [...pods, ...Object.values(nodeNs)]) await ns.close();
  }, 120_000);

  it(`a client pod on node A calls a Service whose endpoint is on node B: ${REQUESTS} of ${REQUESTS} succeed, the link holds TLS only, both kernels count them`, async () => {
    const pcapDir = envs['node-a']!.tempDir('pcap');
    const capFile = join(pcapDir, 'link.pcap');
    // Everything on node A's end of the link, unfiltered: what is not TLS to the tunnel port shows up too.
    const cap: ChildProcess = nodeNs['node-a']!.spawn('dumpcap', ['-q', '-i', link.nameA, '-w', capFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    await until('dumpcap started', async () => existsSync(capFile), 30_000);
    await sleep(500);
    const before = { a: await agentMetrics('node-a'), b: await agentMetrics('node-b'), dpB: await dataplaneStats('node-b') };

    const hey = envs['node-a']!.meshRun('client', inNet(clientPod, 'hey', '-n', String(REQUESTS), '-c', '10', '-t', '30', `http://${VIP}:80${PATH}`));
    const code = await waitForExit(hey, 240_000);
    const report = capturedOutput(hey).stdout;
    expect({ code, stderr: capturedOutput(hey).stderr }).toMatchObject({ code: 0 });
    // hey's summary: every response a 200, no error line.
    expect(report, report).toMatch(new RegExp(`\\[200\\]\\s+${REQUESTS} responses`));
    expect(report, report).not.toMatch(/Error distribution/);

    await sleep(500);
    cap.kill('SIGINT');
    await until('dumpcap stopped', async () => cap.exitCode !== null || cap.signalCode !== null, 30_000);
    const pcap = readFileSync(capFile);
    expect(pcap.indexOf(PATH)).toBe(-1);
    expect(pcap.indexOf(MARKER)).toBe(-1);
    // Every IP packet on the link (but IPv6's own neighbour discovery) is TCP to or from the tunnel port, and those
    // with a payload are TLS records.
    const frames = async (filter: string) =>
      (await nodeNs['node-a']!.execChecked('tshark', ['-r', capFile, '-d', `tcp.port==${TUNNEL_PORT},tls`, '-Y', filter], { timeoutMs: 120_000 })).stdout.split('\n').filter(Boolean);
    expect(await frames(`(ip or ipv6) and not tcp.port == ${TUNNEL_PORT} and not icmpv6`)).toEqual([]);
    // A payload that is not a TLS record, nor part of one tshark reassembled in a later frame (a retransmission
    // repeats bytes tshark dissected already).
    expect(await frames('tcp.len > 0 and not tls and not tcp.reassembled_in and not tcp.analysis.retransmission')).toEqual([]);
    expect((await frames('tls.record')).length).toBeGreaterThan(0);

    const after = { a: await agentMetrics('node-a'), b: await agentMetrics('node-b'), dpB: await dataplaneStats('node-b') };
    const delta = (k: 'a' | 'b' | 'dpB', f: (t: string) => number) => f(after[k]) - f(before[k]);
    // The kernels: the client's requests measured at its socket on A, the server's at its socket on B.
    expect(delta('a', (t) => sum(sample(t, 'http_client_request_duration_seconds_count')))).toBe(REQUESTS);
    expect(delta('b', (t) => sum(sample(t, 'http_server_request_duration_seconds_count')))).toBe(REQUESTS);
    // B's data plane saw the client's identity on every tunnelled connection (hey keeps its connections open).
    const authorized = (t: string) => sum(sample(t, 'mesh_dataplane_inbound_authorized_total', { source_principal: CLIENT_ID, destination_principal: SERVER_ID }));
    expect(delta('dpB', authorized)).toBeGreaterThan(0);
    const captured = (t: string) => sum(sample(t, 'mesh_mtls_captures_total', { result: 'captured' }));
    expect(delta('a', captured)).toBe(delta('dpB', authorized));
    // One tunnel connection on the link per captured connection.
    const streams = async (filter: string) =>
      new Set((await nodeNs['node-a']!.execChecked('tshark', ['-r', capFile, '-Y', filter, '-T', 'fields', '-e', 'tcp.stream'], { timeoutMs: 120_000 })).stdout.split('\n').filter(Boolean)).size;
    expect(await streams(`tcp.flags.syn == 1 and tcp.flags.ack == 0 and tcp.dstport == ${TUNNEL_PORT}`)).toBe(delta('a', captured));
  }, 300_000);

  it('STRICT: plaintext from the client pod, outside the mesh, to the server pod across the link is dropped on node B', async () => {
    const curl = (port: number) => clientPod.exec('curl', ['-sS', '--max-time', '3', '-o', '/dev/null', '-w', '%{http_code}', `http://${SERVER}:${port}/`], { timeoutMs: 30_000 });
    // The route pod → node A → link → node B → pod and back works: a port nothing listens on answers with a reset
    // (STRICT checks packets to listeners only)…
    expect((await curl(8081)).code).toBe(7); // 7: connection refused
    const drops = async () => sum(sample(await agentMetrics('node-b'), 'mesh_mtls_strict_drops_total', { reason: 'plaintext' }));
    const before = await drops();
    // …but a TCP connect from outside the mesh's cgroups, not from B's data plane, never reaches the server.
    const r = await curl(8080);
    expect({ code: r.code, status: r.stdout.trim() }).toEqual({ code: 28, status: '000' }); // 28: timed out
    await until('the drop counted', async () => (await drops()) > before, 30_000);
  }, 300_000);
}, { tools: ['dumpcap', 'tshark', 'hey', 'nsenter', 'curl'] });
