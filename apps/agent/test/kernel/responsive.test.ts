// An agent applying a big config (10,000 Services selecting 1,000 Workloads) still answers /healthz: endpoint
// computation, nesting checks, compile and map writes run in slices with the event loop served between them.
// Before, one config update was one synchronous block: no request was answered until it was applied.
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { cgroup2Mount, describePrivileged, uniqueName } from '@mesh/testkit';
import { afterAll, expect, it } from 'vitest';

import { Agent } from '../../src/app.js';
import type { ConfigSnapshot, Workload } from '../../src/config/objects.js';
import { uninstall } from '../../src/datapath.js';
import { createLogger } from '../../src/log.js';
import { TestSource } from './test-source.js';

const quad = (a: number, i: number) => `127.${a + (i >> 16)}.${(i >> 8) & 0xff}.${i & 0xff}`;

function config(services: number, workloads: number): ConfigSnapshot {
  const wl: Workload[] = Array.from({ length: workloads }, (_, i) => ({
    apiVersion: 'mesh.dev/v1alpha1',
    kind: 'Workload',
    metadata: { name: `w-${i}`, namespace: `ns-${i % 4}`, labels: { app: `app-${i}` } },
    spec: { addresses: [quad(50, i)], ports: [{ name: 'http', port: 8080 }] },
  }));
  return {
    workloads: wl,
    services: Array.from({ length: services }, (_, i) => ({
      kind: 'Service' as const,
      metadata: { name: `s-${i}`, namespace: `ns-${(i % workloads) % 4}` },
      spec: { clusterIP: quad(20, i), selector: { app: `app-${i % workloads}` }, ports: [{ port: 80, targetPort: 'http' }] },
    })),
    endpointSlices: [],
    httpRoutes: [],
    securityPolicies: [],
  };
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

function healthz(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/healthz', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

describePrivileged('agent responsiveness', () => {
  const name = uniqueName('mesh-resp', 40);
  const pinRoot = join('/sys/fs/bpf', name);
  const cgroupRoot = join(cgroup2Mount(), name);
  let agent: Agent | undefined;
  const sockDir = mkdtempSync(join(tmpdir(), 'mesh-resp-'));
  const logPath = join(sockDir, 'agent.log');
  const logFd = openSync(logPath, 'w');
  afterAll(async () => {
    await agent?.stop();
    uninstall(pinRoot, cgroupRoot);
    closeSync(logFd);
    rmSync(sockDir, { recursive: true, force: true });
  });

  it('answers /healthz while it applies 10,000 services selecting 1,000 workloads', async () => {
    const source = new TestSource(config(1, 1));
    const port = await freePort();
    agent = new Agent({ source, listen: `127.0.0.1:${port}`, apiSocket: join(sockDir, 'api.sock'), pinRoot, cgroupRoot, log: createLogger({ fd: logFd }), maxServices: 32_768, maxEndpoints: 32_768 });
    await agent.start();
    expect(await healthz(port)).toBe(200);

    const big = config(10_000, 1_000);
    let answered = 0;
    let applied = false;
    // One request at a time, until the big config is in force.
    const poller = (async () => {
      for (let i = 0; i < 100_000 && !applied; i++) {
        expect(await healthz(port)).toBe(200);
        if (!applied) answered++;
      }
    })();
    await sleep(0);
    source.push(big, 'big');
    for (let i = 0; i < 6_000 && agent.status().config?.generation !== 2; i++) await sleep(10);
    applied = true;
    await poller;
    expect(agent.status().config?.generation, JSON.stringify(agent.status().lastError)).toBe(2);
    expect(agent.services().services).toHaveLength(10_000);
    expect(agent.services().services[7]!.backends[0]!.endpoints).toEqual([`${quad(50, 7)}:8080`]);
    // Requests were answered between the update and its apply: the event loop was not held for the whole of it.
    expect(answered).toBeGreaterThanOrEqual(3);
    // The apply's line says how much of its resolve and write was the event loop's own CPU time (a figure a
    // loaded machine does not stretch as it stretches the wall times): some, and never more than the wall time.
    const line = readFileSync(logPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === 'config applied' && l.generation === 2)!;
    for (const f of ['validateMs', 'ms', 'validateCpuMs', 'cpuMs']) expect(typeof line[f], `${f} in ${JSON.stringify(line)}`).toBe('number');
    const { validateMs, ms, validateCpuMs, cpuMs } = line as { validateMs: number; ms: number; validateCpuMs: number; cpuMs: number };
    expect(validateCpuMs + cpuMs).toBeGreaterThan(0);
    // /proc counts in 10 ms ticks: one tick of slack on each reading.
    expect(validateCpuMs).toBeLessThanOrEqual(validateMs + 20);
    expect(cpuMs).toBeLessThanOrEqual(ms + 20);
  }, 120_000);
});
