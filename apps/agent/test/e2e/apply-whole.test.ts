// A config is applied whole or not at all: every family's part is made and checked (and the workloads' cgroups
// made) before the first map write. The metrics family's known-peer set (http_peers: the addresses series may
// name) is sized from the config like the routing tables, or pinned with --max-peers; a config with more peer
// addresses than it holds is applied, those that do not fit named "unknown" (peers-overflow.test.ts).
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { describePrivileged, run, signalChild, waitForExit } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { type MeshEnv, manyAddresses, meshEnvPerTest, runLoad, splitConfig, startBackends, testNet } from './harness.js';

const NET = testNet();

/** The kernel's map id and max_entries of a pinned metrics map. */
async function pinned(env: MeshEnv, map: string): Promise<{ id: number; max_entries: number }> {
  const r = await run('bpftool', ['-j', 'map', 'show', 'pinned', join(env.pinRoot, 'maps', 'metrics', map)], { timeoutMs: 10_000 });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { id: number; max_entries: number };
}

/** The ids of the maps the metrics programs use, through their pinned links. */
async function programMapIds(env: MeshEnv): Promise<Set<number>> {
  const ids = new Set<number>();
  const dir = join(env.pinRoot, 'links', 'metrics');
  for (const p of readdirSync(dir)) {
    const link = await run('bpftool', ['-j', 'link', 'show', 'pinned', join(dir, p)], { timeoutMs: 10_000 });
    const prog = await run('bpftool', ['-j', 'prog', 'show', 'id', String((JSON.parse(link.stdout) as { prog_id: number }).prog_id)], { timeoutMs: 10_000 });
    for (const id of (JSON.parse(prog.stdout) as { map_ids?: number[] }).map_ids ?? []) ids.add(id);
  }
  return ids;
}

type Status = { config: { generation: number }; lastError?: { problems: string[] } };

/** The split's service table as the kernel holds it. */
async function services(env: MeshEnv): Promise<string> {
  const r = await run('bpftool', ['-j', 'map', 'dump', 'pinned', join(env.pinRoot, 'maps', 'split', 'split_services')], { timeoutMs: 10_000 });
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
}

/** Status once a config was rejected (60 s at most). */
async function rejected(env: MeshEnv): Promise<Status> {
  const status = () => env.api<Status>('/v1/status');
  let s = await status();
  for (let i = 0; i < 600 && !s.lastError; i++) {
    await sleep(100);
    s = await status();
  }
  return s;
}

describePrivileged('agent applies a config whole or not at all', () => {
  const newEnv = meshEnvPerTest();

  it('a workload whose cgroup cannot be made is rejected before any map is written', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [100, 0]));
    await env.startAgent();
    await startBackends(env);
    const before = await services(env);

    // The mesh's cgroups may nest two deep (the default workloads' <namespace>/<name>): mkdir(2) refuses a third
    // level with EAGAIN.
    writeFileSync(join(env.cgroupRoot, 'cgroup.max.depth'), '2');
    env.writeConfig(splitConfig(NET, [0, 100]) + `---
apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: deep }
spec: { addresses: [], cgroup: a/b/c }
`);
    const s = await rejected(env);
    expect(await services(env)).toBe(before);
    expect((await runLoad(env, NET, 200, 0.25)).byBody).toEqual({ a: 50 });
    expect(s.config.generation).toBe(1);
    expect(s.lastError?.problems.join('\n')).toMatch(/cannot make the workload cgroup a\/b\/c under /);
  }, 120_000);

  it('a config rejected after its workloads were checked leaves none of the cgroups made for them meanwhile', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [100, 0]));
    await env.startAgent();
    const before = await services(env);

    // Valid workloads (their cgroups are made while the rest is resolved), one in a parent of its own, and a
    // Service the routing validation refuses.
    const late = Array.from({ length: 50 }, (_, i) => `---
apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: late-${i} }
spec: { addresses: [] }
`).join('');
    env.writeConfig(splitConfig(NET, [0, 100]) + late + `---
apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: nested }
spec: { addresses: [], cgroup: fresh/nested }
---
apiVersion: v1
kind: Service
metadata: { name: broken }
spec: { clusterIP: not-an-address, ports: [{ port: 8080 }] }
`);
    const s = await rejected(env);
    expect(s.lastError?.problems.join('\n')).toMatch(/Service default\/broken: spec.clusterIP/);
    expect(s.config.generation).toBe(1);
    expect(await services(env)).toBe(before);
    // The previous config's cgroups stay; the rejected one's are gone (parents made for them too).
    expect(readdirSync(join(env.cgroupRoot, 'default')).filter((n) => n.startsWith('late-') || n === 'nested')).toEqual([]);
    expect(existsSync(join(env.cgroupRoot, 'fresh'))).toBe(false);
    expect(existsSync(join(env.cgroupRoot, 'default', 'web-a'))).toBe(true);
  }, 120_000);

  it('70,000 peer addresses at start-up: http_peers sized from the config (2x, a power of two); --max-peers pins it, keeping the other metrics maps', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [1, 1]) + manyAddresses(70_000));
    let agent = await env.startAgent();
    expect((await pinned(env, 'http_peers')).max_entries).toBe(262_144);
    const requests = await pinned(env, 'http_requests');
    const oldPeers = await pinned(env, 'http_peers');

    signalChild(agent.child, 'SIGTERM');
    expect(await waitForExit(agent.child, 10_000)).toBe(0);
    agent = await env.startAgent(['--max-peers', '100000']);
    const peers = await pinned(env, 'http_peers');
    expect(peers.max_entries).toBe(100_000);
    // The programs switched to the new table (a program's tag ignores its maps).
    const used = await programMapIds(env);
    expect(used.has(peers.id)).toBe(true);
    expect(used.has(oldPeers.id)).toBe(false);
    // Only the resized map was made anew: the request counts carry over.
    expect((await pinned(env, 'http_requests')).id).toBe(requests.id);
    expect(agent.logs().find((l) => String(l.msg).startsWith('tables of another capacity made anew'))?.maps).toEqual(['http_peers']);
  }, 120_000);
});
