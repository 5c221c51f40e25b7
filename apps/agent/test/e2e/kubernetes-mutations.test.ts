// mesh-agent --kubeconfig through 1,000 scripted changes of Services, EndpointSlices, Pods and HTTPRoutes on
// the test API server, with watches ended and cut, a stall (past the agent's 30 s silence bound) and two 410s
// (both forms) among them (issue 19, Done-when 1): at the end the kernel's split tables, read from the pins,
// equal entry by entry what the server's final objects compile to, and this node's pods are the agent's
// workloads; a relist that changes nothing makes no apply and no map write.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { BpfMap } from '@mesh/bpf';
import { epKey, epValue, svcKey, svcValue } from '@mesh/split';
import { capturedOutput, describePrivileged, KubeApiServer, type KubeObject } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { WATCHED } from '../../src/config/kubernetes/resources.js';
import { resolveConfig } from '../../src/config/objects.js';
import { exitReason, waitReady } from '../../../../scripts/lib/agent.mjs';
import { AGENT_BIN, type MeshEnv, meshEnvPerTest } from './harness.js';

const NODE = 'node-e2e';
const ip4 = (b: Buffer) => [...b.subarray(0, 4)].join('.');

type Tables = Record<string, string>;

/** The split tables from the pins: "vip:port" → "weight*ep,ep|weight*ep…" per backend, in backend order. */
function readTables(env: MeshEnv): Tables {
  const dir = join(env.pinRoot, 'maps', 'split');
  using services = BpfMap.openPinned(join(dir, 'split_services'), { key: svcKey, value: svcValue });
  using endpoints = BpfMap.openPinned(join(dir, 'split_endpoints'), { key: epKey, value: epValue });
  const slots = new Map(endpoints.getBatch().map(([k, v]) => [`${k.svcId}.${k.version}.${k.backend}.${k.index}`, `${ip4(v.addr)}:${v.port}`]));
  const out: Tables = {};
  for (const [k, v] of services.getBatch()) {
    const backends: string[] = [];
    for (let b = 0; b < v.nbackends; b++) {
      const weight = v.cumWeight[b]! - (b === 0 ? 0 : v.cumWeight[b - 1]!);
      const eps = Array.from({ length: v.nendpoints[b]! }, (_, i) => slots.get(`${v.id}.${v.version}.${b}.${i}`) ?? 'MISSING');
      backends.push(`${weight}*${eps.join(',')}`);
    }
    out[`${ip4(k.addr)}:${k.port}`] = backends.join('|');
  }
  return sorted(out);
}

/** What the server's objects compile to, through the agent's validation and compiler as a config file's
 *  objects would (not through the Kubernetes source's own conversion). */
function expectedTables(server: KubeApiServer): Tables {
  const list = (apiVersion: string, kind: string) => server.list({ apiVersion, kind }) as never[];
  const resolved = resolveConfig({
    services: list('v1', 'Service'),
    endpointSlices: list('discovery.k8s.io/v1', 'EndpointSlice'),
    httpRoutes: list('gateway.networking.k8s.io/v1', 'HTTPRoute'),
    workloads: [],
    securityPolicies: [],
  });
  const out: Tables = {};
  for (const s of resolved.compiled.services) {
    out[`${s.addr}:${s.port}`] = s.backends.map((b) => `${b.weight}*${b.endpoints.map((e) => `${e.addr}:${e.port}`).join(',')}`).join('|');
  }
  return sorted(out);
}

const sorted = (t: Tables): Tables => Object.fromEntries(Object.entries(t).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

describePrivileged('mesh-agent with the Kubernetes source: 1,000 changes', () => {
  const newEnv = meshEnvPerTest();

  it('1,000 scripted changes with dropped and cut watches, a stall and two 410s: the maps equal the final objects entry by entry; a relist with no change writes nothing', async () => {
    const env = await newEnv();
    await using server = await KubeApiServer.start();
    server.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'm', labels: { 'mesh.dev/enabled': 'true' } } });

    const child = env.procs.spawn(
      AGENT_BIN,
      ['--kubeconfig', server.kubeconfigPath, '--node-name', NODE, '--listen', env.listen, '--api-socket', env.apiSocket, '--pin-root', env.pinRoot, '--cgroup-root', env.cgroupRoot, '--state-dir', env.stateDir],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    await waitReady(env.apiSocket, { timeoutMs: 60_000, exited: () => exitReason(child), describe: () => capturedOutput(child).stderr });

    // A 32-bit LCG (exact in integer arithmetic), its high bits used: the script is the same every run.
    let rng = 7;
    const random = (n: number): number => {
      rng = (Math.imul(rng, 1664525) + 1013904223) >>> 0;
      return Math.floor((rng / 2 ** 32) * n);
    };
    const ref = (apiVersion: string, kind: string, name: string) => ({ apiVersion, kind, metadata: { name, namespace: 'm' } });
    const upsert = (current: KubeObject | undefined, next: KubeObject) => (current === undefined ? server.create(next) : server.replace({ ...next, metadata: { ...next.metadata, uid: current.metadata.uid } }));
    const mutate = (): void => {
      const n = random(30);
      switch (random(4)) {
        case 0: {
          const cur = server.get(ref('v1', 'Service', `s${n}`));
          if (cur && random(4) === 0) server.delete(cur);
          else {
            // The cluster IP stays what the server gave it (it is immutable); ports and target ports change.
            const spec = { ...(cur?.spec as object), ports: [{ name: 'http', port: 80 + random(3), targetPort: 8000 + random(1000) }] };
            upsert(cur, { apiVersion: 'v1', kind: 'Service', metadata: { name: `s${n}`, namespace: 'm' }, spec });
          }
          break;
        }
        case 1: {
          const cur = server.get(ref('discovery.k8s.io/v1', 'EndpointSlice', `e${n}`));
          if (cur && random(4) === 0) server.delete(cur);
          else {
            const count = 1 + random(3);
            upsert(cur, {
              apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
              metadata: { name: `e${n}`, namespace: 'm', labels: { 'kubernetes.io/service-name': `s${n}` } },
              addressType: 'IPv4',
              endpoints: Array.from({ length: count }, (_, i) => ({ addresses: [`10.7.${n}.${1 + i * 50 + random(50)}`], conditions: { ready: random(4) > 0 } })),
              ports: [{ name: 'http', port: 9000 + random(100), protocol: 'TCP' }],
            });
          }
          break;
        }
        case 2: {
          const cur = server.get(ref('gateway.networking.k8s.io/v1', 'HTTPRoute', `r${n}`));
          if (cur && random(4) === 0) server.delete(cur);
          else {
            upsert(cur, {
              apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: `r${n}`, namespace: 'm' },
              spec: {
                parentRefs: [{ group: '', kind: 'Service', name: `s${n}` }],
                rules: [{ backendRefs: [{ name: `s${n}`, port: 80 + random(3), weight: random(100) }, { name: `s${(n + 1) % 30}`, port: 80 + random(3), weight: 1 + random(100) }] }],
              },
            });
          }
          break;
        }
        default: {
          const cur = server.get(ref('v1', 'Pod', `p${n}`));
          if (cur && random(3) === 0) server.delete(cur);
          else {
            const ip = `10.8.0.${n + 1}`;
            const made = upsert(cur, {
              apiVersion: 'v1', kind: 'Pod', metadata: { name: `p${n}`, namespace: 'm', labels: { app: `p${n}` } },
              spec: { nodeName: n % 5 === 0 ? 'node-other' : NODE, containers: [{ name: 'c', image: 'x' }] },
              status: { phase: 'Running', qosClass: 'BestEffort', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: random(2) === 0 ? 'True' : 'False' }] },
            });
            // kubelet's cgroup for the pod (made once; a replaced pod keeps its UID).
            mkdirSync(join(env.cgroupRoot, 'kubepods.slice/kubepods-besteffort.slice', `kubepods-besteffort-pod${made.metadata.uid!.replaceAll('-', '_')}.slice`), { recursive: true });
          }
        }
      }
    };

    const status = () => env.api<{ config?: { generation: number; mapWrites: number } }>('/v1/status');
    const workloadsNow = async () => (await env.api<{ workloads: { name: string; addresses: string[] }[] }>('/v1/workloads')).workloads.map((w) => `${w.name} ${w.addresses.join(',')}`).sort();
    const workloadsWanted = () =>
      server.list({ apiVersion: 'v1', kind: 'Pod' }).filter((p) => (p.spec as { nodeName: string }).nodeName === NODE)
        .map((p) => `${p.metadata.name} ${(p.status as { podIP: string }).podIP}`).sort();
    /** Waits until the tables (and workloads) equal the server's objects; the last difference on timeout. */
    const converged = async (what: string, timeoutMs: number) => {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const [got, want] = [readTables(env), expectedTables(server)];
        const [gw, ww] = [await workloadsNow(), workloadsWanted()];
        if (JSON.stringify(got) === JSON.stringify(want) && JSON.stringify(gw) === JSON.stringify(ww)) return got;
        if (Date.now() > until) {
          const diff = [...new Set([...Object.keys(got), ...Object.keys(want)])].filter((k) => got[k] !== want[k]).slice(0, 5).map((k) => `${k}: got ${got[k]} want ${want[k]}`);
          throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}:\n${diff.join('\n')}\nworkloads got ${gw.join('; ')}\nwant ${ww.join('; ')}`);
        }
        await sleep(200);
      }
    };

    // Requests are kept bounded (the most recent): count those since a moment.
    const listsSince = (since: number) => server.requests.filter((q) => q.at >= since && q.method === 'GET' && !q.url.includes('watch=true')).length;
    /** Compaction, then every watch ended: each of the 7 informers must relist (after a 410 in `form`). */
    const expire = async (form: 'http' | 'event') => {
      const since = Date.now();
      server.expiredForm = form;
      server.stallWatches();
      for (let i = 0; i < 20; i++) mutate();
      server.compact();
      server.dropWatches();
      const until = Date.now() + 30_000;
      while (listsSince(since) < 7 && Date.now() < until) await sleep(50);
      expect(listsSince(since), `relists after a 410 (${form})`).toBeGreaterThanOrEqual(7);
    };
    let stallMs = 0;
    const disruptions: Record<number, () => Promise<void>> = {
      150: async () => void server.dropWatches(),
      300: async () => void server.dropWatches({ abrupt: true }),
      450: async () => {
        // Every informer watching again after the cut at 300 (its restart waits a backoff), then all stalled:
        // only the agent's silence bound (30 s) brings the changes made meanwhile.
        const open = Date.now() + 60_000;
        while (server.watches.filter((w) => !w.stalled).length < WATCHED.length && Date.now() < open) await sleep(50);
        expect(server.stallWatches()).toBe(WATCHED.length);
        const stalledAt = Date.now();
        for (let i = 0; i < 20; i++) mutate();
        await converged('the changes made during a stall', 90_000);
        stallMs = Date.now() - stalledAt;
      },
      650: () => expire('http'),
      850: () => expire('event'),
    };
    for (let i = 0; i < 1000; i++) {
      mutate();
      await disruptions[i]?.();
      if (i % 25 === 0) await sleep(20);
    }
    const final = await converged('the final objects', 90_000);
    // The stall was one: the changes made during it came with the silence bound's new watches, not before.
    expect(stallMs).toBeGreaterThan(20_000);
    expect(Object.keys(final).length).toBeGreaterThan(10);

    // A relist that changes nothing (compaction forces it): no apply, no map write.
    const before = await status();
    const since = Date.now();
    const lists = () => listsSince(since);
    server.compact();
    server.dropWatches();
    // Every informer but the one that saw the newest event relists (a watch from the newest revision is still valid).
    const relistDeadline = Date.now() + 30_000;
    while (lists() < 6 && Date.now() < relistDeadline) await sleep(100);
    expect(lists()).toBeGreaterThanOrEqual(6);
    await sleep(1500);
    const after = await status();
    expect(after.config!.generation).toBe(before.config!.generation);
    expect(readTables(env)).toEqual(final);
    console.log(`1,000 changes: ${Object.keys(final).length} service addresses equal entry by entry; the stall's changes in the maps after ${stallMs} ms; generation ${after.config!.generation}; a relist of ${lists()} resources made no apply`);
  }, 300_000);
});
