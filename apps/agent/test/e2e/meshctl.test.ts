// meshctl against a running agent: services shows what the kernel was given, stat shows what the kernel
// measured, run puts a command into its workload's cgroup and hands back its exit status.
import { readFileSync } from 'node:fs';

import { describePrivileged, waitForExit } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { httpGet, meshEnvPerTest, runLoad, sample, splitConfig, startBackends, testNet } from './harness.js';

const NET = testNet();

describePrivileged('meshctl with a running agent', () => {
  const newEnv = meshEnvPerTest();

  it('services, stat, run and the HTTP endpoints', async () => {
    const e = await newEnv();
    e.writeConfig(splitConfig(NET, [3, 1]));
    await e.startAgent();
    expect((await httpGet('127.0.0.1', e.port, '/healthz')).status).toBe(200);
    expect((await httpGet('127.0.0.1', e.port, '/readyz')).body).toBe('ready\n');

    const services = await e.meshctl(['services']);
    expect(services.code).toBe(0);
    const row = (backend: string) => services.stdout.split('\n').find((l) => l.includes(`default/${backend}:8080`) && l.includes('%'));
    expect(services.stdout).toMatch(new RegExp(`default/web\\s+${NET.replace('.', '\\.')}\\.1\\.1:8080\\s+TCP\\s+default/web-split`));
    expect(row('web-a')).toMatch(new RegExp(`\\b3\\s+75\\.0%\\s+${NET}\\.0\\.1:8080`));
    expect(row('web-b')).toMatch(new RegExp(`\\b1\\s+25\\.0%\\s+${NET}\\.0\\.2:8080`));

    await startBackends(e);
    const load = await runLoad(e, NET, 100, 4);
    expect(load.failed).toBe(0);
    // Let the agent take a sample after the load (it samples every 2 s).
    await new Promise((r) => setTimeout(r, 2500));
    const stat = JSON.parse((await e.meshctl(['stat', '--window', '30', '--json'])).stdout) as {
      pairs: { direction: string; source: string; destination: string; service: string; requests: number; successRate: number; p50Ms: number; p99Ms: number }[];
    };
    const client = stat.pairs.filter((p) => p.direction === 'client');
    expect(client.map((p) => [p.source, p.destination, p.service, p.requests])).toEqual([
      ['default/client', 'default/web-a', 'web', load.byBody.a],
      ['default/client', 'default/web-b', 'web', load.byBody.b],
    ]);
    for (const p of client) {
      expect(p.successRate).toBe(1);
      expect(p.p50Ms).toBeGreaterThan(0);
      expect(p.p99Ms).toBeGreaterThanOrEqual(p.p50Ms);
    }
    const table = await e.meshctl(['stat', '--window', '30']);
    expect(table.stdout).toMatch(/SIDE\s+SOURCE\s+DESTINATION\s+SERVICE\s+PROTOCOL\s+RPC\s+REQS\s+RPS\s+SUCCESS\s+P50\s+P95\s+P99/);
    expect(table.stdout).toMatch(new RegExp(`client\\s+default/client\\s+default/web-a\\s+web\\s+HTTP/1\\.1\\s+-\\s+${load.byBody.a}\\s`));

    // run: the command is inside the workload's cgroup, sees its identity, and its exit status comes back.
    const probe = e.meshRun('client', ['/bin/sh', '-c', 'cat /proc/self/cgroup; echo "id=$MESH_WORKLOAD/$MESH_NAMESPACE@$MESH_ADDRESS"; exit 7']);
    let out = '';
    probe.stdout!.on('data', (c: Buffer) => (out += c));
    expect(await waitForExit(probe, 10_000)).toBe(7);
    expect(out).toMatch(new RegExp(`^0::/${e.name}/default/client$`, 'm'));
    expect(out).toContain(`id=client/default@${NET}.0.3`);
    const unknown = await e.meshctl(['run', '--workload', 'nope', '--', 'true']);
    expect(unknown.code).toBe(5);
    expect(unknown.stderr).toMatch(/no workload nope in the agent's config \(known: default\/web-a, default\/web-b, default\/client\)/);

    // /metrics: the mesh's metrics and the process's, and the map pressure gauges.
    const text = await e.metrics();
    expect(sample(text, 'process_resident_memory_bytes')[0]).toBeGreaterThan(0);
    expect(sample(text, 'mesh_agent_ready')).toEqual([1]);
    expect(sample(text, 'mesh_bpf_map_entries', { map: 'split_services' })).toEqual([3]);
    expect(sample(text, 'mesh_bpf_map_capacity', { map: 'split_services' })[0]).toBeGreaterThan(3);

    const status = await e.meshctl(['status']);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/: ready\n/);
    expect(status.stdout).toMatch(/generation 1 /);
    expect(status.stdout).toMatch(/split_connect4\s+split\s+cgroup_inet4_connect\s+\d+/);
    expect(status.stdout).toMatch(/split_services\s+3\s+\d+/);
    expect(readFileSync(`${e.cgroupRoot}/default/client/cgroup.procs`, 'utf8')).toBe('');
  });
});
