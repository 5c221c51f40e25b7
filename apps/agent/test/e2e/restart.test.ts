// Done-when 1 of the agent: the datapath outlives the agent. Under fixed-rate load through the VIP, the agent is
// killed with SIGKILL at 10 s and started again at 20 s: no request fails, and the kernel's counters (pinned
// maps) keep counting while no agent runs, so /metrics after the restart is not lower — it holds every request.
import { setTimeout as sleep } from 'node:timers/promises';

import { describePrivileged, signalChild, waitForExit } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { meshEnvPerTest, runLoad, sample, splitConfig, startBackends, sum, testNet } from './harness.js';

const NET = testNet();
const RATE = 50;
const SECONDS = 30;

describePrivileged('agent restart under load', () => {
  const newEnv = meshEnvPerTest();

  it('SIGKILL at 10 s and a restart at 20 s fail no request and lose no count', async () => {
    const e = await newEnv();
    e.writeConfig(splitConfig(NET, [50, 50]));
    const first = await e.startAgent();
    await startBackends(e);

    const clientCount = async () => sum(sample(await e.metrics(), 'http_client_request_duration_seconds_count', { source_workload: 'client' }));
    let before = 0;
    let after = 0;
    let t0 = 0;
    const timeline = (async () => {
      while (t0 === 0) await sleep(10);
      await sleep(t0 + 9_500 - Date.now());
      before = await clientCount();
      await sleep(t0 + 10_000 - Date.now());
      signalChild(first.child, 'SIGKILL');
      await waitForExit(first.child, 5000);
      await sleep(t0 + 20_000 - Date.now());
      await e.startAgent();
      after = await clientCount();
    })();
    const load = await runLoad(e, NET, RATE, SECONDS, () => (t0 = Date.now()));
    await timeline;

    expect(load.errors).toEqual([]);
    expect(load.failed).toBe(0);
    expect(load.ok).toBe(RATE * SECONDS);
    // Both backends served (50/50): the split kept working while no agent ran.
    expect(load.byBody.a! + load.byBody.b!).toBe(RATE * SECONDS);
    expect(load.byBody.a).toBeGreaterThan(RATE * SECONDS * 0.4);
    expect(load.byBody.b).toBeGreaterThan(RATE * SECONDS * 0.4);

    expect(before).toBeGreaterThan(RATE * 8);
    expect(after).toBeGreaterThanOrEqual(before);
    // Every request of the run, counted in the kernel, including those made while no agent ran.
    await sleep(300);
    expect(await clientCount()).toBe(RATE * SECONDS);
    const server = sum(sample(await e.metrics(), 'http_server_request_duration_seconds_count', { destination_workload: 'web-a' })) +
      sum(sample(await e.metrics(), 'http_server_request_duration_seconds_count', { destination_workload: 'web-b' }));
    expect(server).toBe(RATE * SECONDS);
  });
});
