// Transparent mTLS across two nodes: two agents (each its own pin root, cgroup root, data plane and node name),
// one shared CA, one config naming which node each workload runs on. A client on node A calls a Service whose
// endpoint is on node B: the split picks the endpoint, the capture sends the connection to A's data plane, the
// tunnel carries it in TLS to B's, which connects to the server from its inbound source. The nodes share the
// test's network namespace and talk over loopback addresses of a block claimed by testNet().
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged, waitForLine } from '@mesh/testkit';

import { scrapeDataplane } from '../../src/dataplane.js';
import { FIXTURES, freePort, MeshEnv, sample, sum, testNet } from './harness.js';

const NET = testNet();
const ip = (h: number, sub = 0) => `${NET}.${sub}.${h}`;
const SERVER = ip(1);
const CLIENT = ip(3);
const VIP = ip(1, 1);
const MARKER = 'TWO-NODES-MARKER-81c2';
const PATH = '/two-nodes-path-4be0';
const CLIENT_ID = 'spiffe://cluster.local/ns/default/sa/client';
const SERVER_ID = 'spiffe://cluster.local/ns/default/sa/server';
const NODES = {
  'node-a': { dataplane: ip(100), inboundSource: ip(6) },
  'node-b': { dataplane: ip(200), inboundSource: ip(7) },
} as const;

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

describePrivileged('transparent mTLS across two nodes', () => {
  const envs: Partial<Record<keyof typeof NODES, MeshEnv>> = {};
  const stats: Partial<Record<keyof typeof NODES, string>> = {};
  const runDirs: string[] = [];

  async function until(what: string, f: () => Promise<boolean>, ms = 30_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!(await f().catch(() => false))) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(50);
    }
  }

  beforeAll(async () => {
    const peers = Object.entries(NODES).flatMap(([n, a]) => ['--mtls-node', `${n}=${a.dataplane}:15008`]);
    let stateDir: string | undefined;
    for (const [node, a] of Object.entries(NODES) as [keyof typeof NODES, (typeof NODES)[keyof typeof NODES]][]) {
      const env = (envs[node] = await MeshEnv.create());
      const runDir = env.tempDir('run');
      runDirs.push(runDir);
      stats[node] = `127.0.0.1:${await freePort()}`;
      env.writeConfig(CONFIG);
      // One CA for the mesh: node B's agent reads the root node A's made.
      stateDir ??= env.stateDir;
      await env.startAgent([
        '--state-dir', stateDir, '--node-name', node, '--mtls', '--mtls-outbound', `${a.dataplane}:15001`, '--mtls-tunnel', `${a.dataplane}:15008`,
        '--mtls-inbound-source', a.inboundSource, '--mtls-stats', stats[node], '--run-dir', runDir, ...peers,
      ]);
    }
    const server = envs['node-b']!.meshRun('server', [process.execPath, join(FIXTURES, 'backend.mjs')], { NAME: MARKER, PORT: '8080' });
    await waitForLine(server, /^listening/, 30_000);
    for (const node of ['node-a', 'node-b'] as const) {
      await until(`the ${node} workload enrolled`, async () => sum(sample(await envs[node]!.metrics(), 'mesh_mtls_enrolled_workloads')) === 1);
    }
  }, 180_000);

  afterAll(async () => {
    const pids = runDirs.flatMap((d) => {
      try {
        return [(JSON.parse(readFileSync(join(d, 'dataplane.pid'), 'utf8')) as { pid: number }).pid];
      } catch {
        return [];
      }
    });
    for (const env of Object.values(envs)) await env.procs.close();
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const env of Object.values(envs)) await env.close();
  }, 60_000);

  it('a client on node A calls a Service whose endpoint is on node B: all succeed, the link holds TLS only', async () => {
    const capFile = join(envs['node-a']!.tempDir('pcap'), 'link.pcap');
    const cap = envs['node-a']!.procs.spawn('dumpcap', ['-q', '-i', 'lo', '-f', `tcp and host ${NODES['node-b'].dataplane} and port 15008`, '-w', capFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    await until('dumpcap started', async () => existsSync(capFile), 20_000);
    await sleep(500);
    const before = { b: (await scrapeDataplane(stats['node-b']!)).text, a: await envs['node-a']!.metrics() };

    const child = envs['node-a']!.meshRun('client', [process.execPath, join(FIXTURES, 'load.mjs')], { URL: `http://${VIP}:80${PATH}`, RATE: '40', SECONDS: '5' });
    const r = JSON.parse((await waitForLine(child, /^\{.*"sent".*$/, 120_000))[0]) as { sent: number; ok: number; failed: number; errors: string[] };
    if (r.failed) {
      const interesting = (t: string) => t.split('\n').filter((l) => !l.startsWith('#') && / [1-9]\d*$/.test(l) && /mtls|dataplane/.test(l)).join('\n');
      console.log('node A data plane:\n' + interesting((await scrapeDataplane(stats['node-a']!)).text));
      console.log('node B data plane:\n' + interesting((await scrapeDataplane(stats['node-b']!)).text));
      console.log('node A agent:\n' + interesting(await envs['node-a']!.metrics()));
      console.log('node B agent:\n' + interesting(await envs['node-b']!.metrics()));
      console.log('A dataplane.json:\n' + readFileSync(join(runDirs[0]!, 'dataplane.json'), 'utf8'));
      console.log('A dataplane.log:\n' + readFileSync(join(runDirs[0]!, 'dataplane.log'), 'utf8'));
    }
    expect(r, JSON.stringify(r.errors)).toMatchObject({ sent: 200, ok: 200, failed: 0 });

    await sleep(500);
    cap.kill('SIGINT');
    await until('dumpcap stopped', async () => cap.exitCode !== null || cap.signalCode !== null, 20_000);
    const pcap = readFileSync(capFile);
    expect(pcap.length).toBeGreaterThan(200 * 1000);
    expect(pcap.indexOf(PATH)).toBe(-1);
    expect(pcap.indexOf(MARKER)).toBe(-1);

    const after = { b: (await scrapeDataplane(stats['node-b']!)).text, a: await envs['node-a']!.metrics() };
    const authorized = (t: string) => sum(sample(t, 'mesh_dataplane_inbound_authorized_total', { source_principal: CLIENT_ID, destination_principal: SERVER_ID }));
    expect(authorized(after.b) - authorized(before.b)).toBe(200);
    const captured = (t: string) => sum(sample(t, 'mesh_mtls_captures_total', { result: 'captured' }));
    expect(captured(after.a) - captured(before.a)).toBe(200);
  }, 180_000);
}, { tools: ['dumpcap'] });
