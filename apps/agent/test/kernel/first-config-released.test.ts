// The first config update is garbage once a later one is applied: nothing the agent keeps for its life (the
// source's callback, the stop signal's reactions) holds it. A heap snapshot found the first snapshot retained
// for the agent's life through start-up's promises (the resolved promise its callback and the stop race kept).
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { cgroup2Mount, describePrivileged, heapUsedAfterGc, uniqueName } from '@mesh/testkit';
import { afterAll, expect, it } from 'vitest';

import { Agent } from '../../src/app.js';
import type { ConfigSnapshot } from '../../src/config/objects.js';
import { uninstall } from '../../src/datapath.js';
import { createLogger } from '../../src/log.js';
import { TestSource } from './test-source.js';

function config(n: number): ConfigSnapshot {
  return {
    workloads: [{ apiVersion: 'mesh.dev/v1alpha1', kind: 'Workload', metadata: { name: `w-${n}`, namespace: 'default', labels: { app: 'web' } }, spec: { addresses: [`127.0.90.${n}`] } }],
    services: [{ kind: 'Service', metadata: { name: 'web', namespace: 'default' }, spec: { clusterIP: '127.0.91.1', selector: { app: 'web' }, ports: [{ port: 80 }] } }],
    endpointSlices: [],
    httpRoutes: [],
    securityPolicies: [],
  };
}

describePrivileged('agent memory: the first config', () => {
  const name = uniqueName('mesh-first', 40);
  const pinRoot = join('/sys/fs/bpf', name);
  const cgroupRoot = join(cgroup2Mount(), name);
  const devNull = openSync('/dev/null', 'w');
  const sockDir = mkdtempSync(join(tmpdir(), 'mesh-first-'));
  let agent: Agent | undefined;
  afterAll(async () => {
    await agent?.stop();
    uninstall(pinRoot, cgroupRoot);
    closeSync(devNull);
    rmSync(sockDir, { recursive: true, force: true });
  });

  it('is collected once a later config is applied', async () => {
    // Made in a function of its own: no local of this test holds it.
    const { source, first } = (() => {
      const snap = config(1);
      return { source: new TestSource(snap), first: new WeakRef(snap) };
    })();
    agent = new Agent({ source, listen: '127.0.0.1:0', apiSocket: join(sockDir, 'api.sock'), pinRoot, cgroupRoot, log: createLogger({ fd: devNull }) });
    await agent.start();
    expect(agent.status().config?.generation).toBe(1);

    source.push(config(2), 'second');
    for (let i = 0; i < 3_000 && agent.status().config?.generation !== 2; i++) await sleep(10);
    expect(agent.status().config?.generation, JSON.stringify(agent.status().lastError)).toBe(2);

    // A WeakRef's target lives at least until the current job ends: collect after a turn of the event loop.
    for (let i = 0; i < 3 && first.deref() !== undefined; i++) {
      await sleep(10);
      heapUsedAfterGc();
    }
    expect(first.deref(), 'the first config snapshot is still reachable').toBeUndefined();
  }, 60_000);
});
