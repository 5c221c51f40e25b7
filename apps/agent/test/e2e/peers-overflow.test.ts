// Metrics capacity never blocks routing. The known-peer table (http_peers) is sized from the first config; a
// cluster that outgrows it keeps getting its routing updates: the peers that do not fit are counted under the
// "unknown" peer, a gauge and a warning say how many and what to do. Before, the whole config was refused
// (the split kept routing the previous one) until an operator restarted the agent.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { describePrivileged, run, waitForLine } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { LOAD, type LoadResult, type MeshEnv, manyAddresses, meshEnvPerTest, runLoad, sample, splitConfig, startBackends, sum, testNet } from './harness.js';

const NET = testNet();
const EXTRA = 5000;

/** A Workload named late on `addr`: after the many addresses, so it is among those that do not fit. */
const late = (addr: string) => `---
apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: late, labels: { app: late } }
spec: { addresses: [${addr}] }
`;

/** `n` requests over one second from workload `workload` to `url`. */
async function loadFrom(env: MeshEnv, workload: string, url: string, n: number): Promise<LoadResult> {
  const child = env.meshRun(workload, [process.execPath, LOAD], { URL: url, RATE: String(n), SECONDS: '1' });
  const line = await waitForLine(child, /^\{.*\}$/, 40_000);
  return JSON.parse(line[0]) as LoadResult;
}

type Status = { config: { generation: number; warnings: string[] }; lastError?: { problems: string[] } };

/** Status once the config of `generation` was applied or a config was rejected (60 s at most). */
async function settled(env: MeshEnv, generation: number): Promise<Status> {
  const status = () => env.api<Status>('/v1/status');
  let s = await status();
  for (let i = 0; i < 600 && !s.lastError && s.config.generation < generation; i++) {
    await sleep(100);
    s = await status();
  }
  return s;
}

async function peersCapacity(env: MeshEnv): Promise<number> {
  const r = await run('bpftool', ['-j', 'map', 'show', 'pinned', join(env.pinRoot, 'maps', 'metrics', 'http_peers')], { timeoutMs: 10_000 });
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { max_entries: number }).max_entries;
}

describePrivileged('a config with more peers than the known-peer table', () => {
  const newEnv = meshEnvPerTest();

  it('routes the new config; the peers already named stay named, the rest count as unknown, a gauge and a warning say how many', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [100, 0]));
    const agent = await env.startAgent();
    expect(await peersCapacity(env)).toBe(4096);
    await startBackends(env);
    expect((await runLoad(env, NET, 200, 0.25)).byBody).toEqual({ a: 50 });

    // All traffic to web-b, and 5,004 peer addresses: more than the 4,096 the table was sized for at start.
    env.writeConfig(splitConfig(NET, [0, 100]) + manyAddresses(EXTRA) + late(`${NET}.0.4`));
    const s = await settled(env, 2);
    expect(s.lastError?.problems, 'the config was refused').toBeUndefined();
    expect(s.config.generation).toBe(2);
    expect((await runLoad(env, NET, 200, 0.25)).byBody).toEqual({ b: 50 });
    // A workload whose address did not fit: routed like any other, its requests counted under the unknown peer.
    const r = await loadFrom(env, 'late', `http://${NET}.1.1:8080/`, 20);
    expect(r.errors).toEqual([]);
    expect(r.byBody).toEqual({ b: 20 });

    // The metrics still count, and name the workloads the table held before: web-b's server side saw the client.
    const text = await env.metrics();
    expect(sum(sample(text, 'http_server_request_duration_seconds_count', { source_workload: 'client', destination_workload: 'web-b' }))).toBe(50);
    expect(sum(sample(text, 'http_client_request_duration_seconds_count', { source_workload: 'client', destination_workload: 'web-b' }))).toBe(50);
    expect(sum(sample(text, 'http_server_request_duration_seconds_count', { source_workload: 'unknown', destination_workload: 'web-b' }))).toBe(20);
    // The overflow is visible: the table is full, and the gauge says how many of the config's peers are unnamed.
    const left = 3 + EXTRA + 1 - 4096;
    expect(sample(text, 'mesh_bpf_map_entries', { map: 'http_peers' })).toEqual([4096]);
    expect(sample(text, 'mesh_metrics_peers_unnamed')).toEqual([left]);
    const warn = agent.logs().find((l) => String(l.msg).startsWith('peer addresses do not fit the known-peer table'));
    expect(warn, JSON.stringify(agent.logs().filter((l) => l.level === 'warn'))).toMatchObject({ level: 'warn', unnamed: left, capacity: 4096 });
    expect(String(warn!.msg)).toMatch(/--max-peers/);
    // Status keeps the warning with the config in force (the log scrolls away); meshctl status prints it.
    expect(s.config.warnings).toEqual([warn!.msg]);
    const shown = await env.meshctl(['status']);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/^warnings +peer addresses do not fit the known-peer table/m);
  }, 120_000);

  it('a known-peer write the kernel refuses does not refuse the config: the split routes it, status says so, a warning says why', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [100, 0]));
    const agent = await env.startAgent();
    await startBackends(env);
    expect((await runLoad(env, NET, 200, 0.25)).byBody).toEqual({ a: 50 });

    // Another process fills the pinned table behind the agent's back (as a kernel short of memory would refuse
    // the agent's next insert): the next write of a new peer fails.
    const map = join(env.pinRoot, 'maps', 'metrics', 'http_peers');
    const hex = (i: number) => [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i >> 8, i & 0xff].map((b) => b.toString(16)).join(' ');
    const batch = env.tempDir('peers');
    const lines = Array.from({ length: 4096 - 3 }, (_, i) => `map update pinned ${map} key hex ${hex(i)} 0a 0 0 0 value hex 1 0 0 0`);
    writeFileSync(join(batch, 'fill'), lines.join('\n') + '\n');
    const filled = await run('bpftool', ['batch', 'file', join(batch, 'fill')], { timeoutMs: 60_000 });
    expect(filled.code, filled.stderr).toBe(0);

    env.writeConfig(splitConfig(NET, [0, 100]) + late(`${NET}.0.4`));
    const s = await settled(env, 2);
    // The split wrote its part before the metrics family wrote its own: status must say the config is in force.
    expect((await runLoad(env, NET, 200, 0.25)).byBody).toEqual({ b: 50 });
    expect(s.lastError?.problems, 'status says the config was refused').toBeUndefined();
    expect(s.config.generation).toBe(2);
    const warn = agent.logs().find((l) => String(l.msg).startsWith('the known-peer table could not be written'));
    expect(warn, JSON.stringify(agent.logs().filter((l) => l.level !== 'info'))).toMatchObject({ level: 'warn', unnamed: 1 });
    expect(sample(await env.metrics(), 'mesh_metrics_peers_unnamed')).toEqual([1]);
  }, 120_000);
});
