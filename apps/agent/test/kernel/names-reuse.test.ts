// A reload that changes no workload and no endpoint (one weight of a route) keeps the identity names metrics use
// (ConfigResolver: cgroup ids, addresses, services of endpoints) rather than making them anew: for 20,000
// workloads and 50,000 services that was ~0.3 s of the event loop's CPU for one map write. A changed workload
// address, or a workload cgroup made anew (a new cgroup id), makes them anew.
import { closeSync, mkdtempSync, openSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { cgroupId } from '@mesh/bpf';
import { cgroup2Mount, describePrivileged, uniqueName } from '@mesh/testkit';
import { afterAll, expect, it } from 'vitest';

import { Agent } from '../../src/app.js';
import type { ConfigSnapshot } from '../../src/config/objects.js';
import { uninstall } from '../../src/datapath.js';
import { metricsFamily } from '../../src/families.js';
import { createLogger } from '../../src/log.js';
import { TestSource } from './test-source.js';

/** Two workloads behind two services, and a route on the first splitting between them by `weight`. */
function config(weight: number, secondAddress = '127.0.93.2'): ConfigSnapshot {
  const wl = (i: number, addr: string) => ({
    apiVersion: 'mesh.dev/v1alpha1',
    kind: 'Workload',
    metadata: { name: `w-${i}`, namespace: 'default', labels: { app: `app-${i}` } },
    spec: { addresses: [addr], ports: [{ name: 'http', port: 8080 }] },
  });
  const svc = (i: number) => ({
    kind: 'Service' as const,
    metadata: { name: `s-${i}`, namespace: 'default' },
    spec: { clusterIP: `127.0.94.${i + 1}`, selector: { app: `app-${i}` }, ports: [{ port: 80, targetPort: 'http' }] },
  });
  return {
    workloads: [wl(0, '127.0.93.1'), wl(1, secondAddress)],
    services: [svc(0), svc(1)],
    endpointSlices: [],
    httpRoutes: [
      {
        apiVersion: 'gateway.networking.k8s.io/v1',
        kind: 'HTTPRoute',
        metadata: { name: 'r', namespace: 'default' },
        spec: { parentRefs: [{ kind: 'Service', name: 's-0', port: 80 }], rules: [{ backendRefs: [{ name: 's-0', port: 80, weight: 100 - weight }, { name: 's-1', port: 80, weight }] }] },
      },
    ],
    securityPolicies: [],
  } as ConfigSnapshot;
}

describePrivileged('agent: identity names kept across a reload that changes no workload or endpoint', () => {
  const name = uniqueName('mesh-names', 40);
  const pinRoot = join('/sys/fs/bpf', name);
  const cgroupRoot = join(cgroup2Mount(), name);
  const sockDir = mkdtempSync(join(tmpdir(), 'mesh-names-'));
  const logPath = join(sockDir, 'agent.log');
  const logFd = openSync(logPath, 'w');
  let agent: Agent | undefined;
  afterAll(async () => {
    await agent?.stop();
    uninstall(pinRoot, cgroupRoot);
    closeSync(logFd);
    rmSync(sockDir, { recursive: true, force: true });
  });

  const applied = (generation: number) =>
    readFileSync(logPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === 'config applied' && l.generation === generation);
  async function push(source: TestSource, snapshot: ConfigSnapshot, generation: number): Promise<Record<string, unknown>> {
    source.push(snapshot, `g${generation}`);
    for (let i = 0; i < 3_000 && agent!.status().config?.generation !== generation; i++) await sleep(10);
    expect(agent!.status().config?.generation, JSON.stringify(agent!.status().lastError)).toBe(generation);
    return applied(generation)!;
  }

  it('keeps them for a weight change; makes them anew for a changed address or a cgroup made anew', async () => {
    const source = new TestSource(config(10));
    agent = new Agent({ source, listen: '127.0.0.1:0', apiSocket: join(sockDir, 'api.sock'), pinRoot, cgroupRoot, log: createLogger({ fd: logFd }) });
    await agent.start();
    const metrics = () => (agent as unknown as { datapath: { get(f: typeof metricsFamily): { knownPeers(): string[] } } }).datapath.get(metricsFamily);
    const resolver = () => (agent as unknown as { resolver: { local(id: bigint): unknown } }).resolver;
    const local = (path: string) => resolver().local(cgroupId(join(cgroupRoot, path)));
    const first = resolver();

    // One weight: one map write, and the names are those of generation 1 (the same object).
    const g2 = await push(source, config(20), 2);
    expect(g2.mapWrites).toBe(1);
    expect(resolver() === first, 'the names of generation 1 kept').toBe(true);
    expect([applied(1)?.names, g2.names]).toEqual(['made', 'kept']);
    expect(local('default/w-1')).toEqual({ workload: 'w-1', namespace: 'default' });

    // A workload's address changes: names made anew, and the known-peer table holds the new address.
    const g3 = await push(source, config(20, '127.0.93.3'), 3);
    expect(g3.names).toBe('made');
    expect(resolver()).not.toBe(first);
    expect(metrics().knownPeers().sort()).toEqual(['127.0.93.1', '127.0.93.3']);

    // The cgroup of w-1 removed and made again (a new cgroup id): the next reload names the new id.
    rmdirSync(join(cgroupRoot, 'default/w-1'));
    const g4 = await push(source, config(30, '127.0.93.3'), 4);
    expect(g4.names).toBe('made');
    expect(local('default/w-1')).toEqual({ workload: 'w-1', namespace: 'default' });
  }, 60_000);
});
