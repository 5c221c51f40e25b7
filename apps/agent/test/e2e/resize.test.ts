// A restart with other table sizes (what the capacity error tells operators to do) replaces the pinned maps:
// every attached program must then use the maps pinned now, read from the kernel through the pinned links, and
// a service added afterwards must route. A program's tag ignores which maps it uses: adopting by tag alone
// left the programs reading the old, unpinned maps while the config went to maps nothing read.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

import { describePrivileged, run, signalChild, waitForExit, waitForLine } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { LOAD, type LoadResult, type MeshEnv, meshEnvPerTest, splitConfig, startBackends, testNet } from './harness.js';

const NET = testNet();

async function bpftool<T>(args: string[]): Promise<T> {
  const r = await run('bpftool', ['-j', ...args], { timeoutMs: 10_000 });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as T;
}

/** Per pinned link: the program it runs and the maps that program uses (id → kernel map name). */
async function programMaps(env: MeshEnv): Promise<{ family: string; program: string; maps: Map<number, string> }[]> {
  const out = [];
  const links = join(env.pinRoot, 'links');
  for (const family of readdirSync(links)) {
    for (const program of readdirSync(join(links, family))) {
      const link = await bpftool<{ prog_id: number }>(['link', 'show', 'pinned', join(links, family, program)]);
      const prog = await bpftool<{ map_ids?: number[] }>(['prog', 'show', 'id', String(link.prog_id)]);
      const maps = new Map<number, string>();
      for (const id of prog.map_ids ?? []) maps.set(id, (await bpftool<{ name: string }>(['map', 'show', 'id', String(id)])).name);
      out.push({ family, program, maps });
    }
  }
  return out;
}

/** Ids of the maps pinned under the family's map directory now. */
async function pinnedMapIds(env: MeshEnv, family: string): Promise<Set<number>> {
  const dir = join(env.pinRoot, 'maps', family);
  const ids = new Set<number>();
  for (const f of readdirSync(dir)) ids.add((await bpftool<{ id: number }>(['map', 'show', 'pinned', join(dir, f)])).id);
  return ids;
}

/** Requests from the client workload to `url`, `n` of them over one second. */
async function load(env: MeshEnv, url: string, n: number): Promise<LoadResult> {
  const child = env.meshRun('client', [process.execPath, LOAD], { URL: url, RATE: String(n), SECONDS: '1' });
  const line = await waitForLine(child, /^\{.*\}$/, 40_000);
  return JSON.parse(line[0]) as LoadResult;
}

describePrivileged('agent restarted with other table sizes', () => {
  const newEnv = meshEnvPerTest();

  it('--max-services 1000, then the defaults: every program uses the maps pinned now, and a new service routes', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [1, 1]));
    let agent = await env.startAgent(['--max-services', '1000']);
    signalChild(agent.child, 'SIGTERM');
    expect(await waitForExit(agent.child, 10_000)).toBe(0);

    agent = await env.startAgent();
    const ready = agent.logs().find((l) => l.msg === 'datapath ready')!;
    const progs = await programMaps(env);
    expect(progs.length).toBe(ready.programs);
    for (const family of ['split', 'metrics']) {
      const pinned = await pinnedMapIds(env, family);
      for (const p of progs.filter((x) => x.family === family)) {
        // Internal maps (.rodata: the object's constants) are never pinned; every other map must be.
        const used = [...p.maps].filter(([, name]) => !/\.(rodata|data|bss)/.test(name));
        expect(used.length, `${p.program} uses no pinned map`).toBeGreaterThan(0);
        expect(
          used.filter(([id]) => !pinned.has(id)).map(([id, name]) => `${name} (id ${id})`),
          `${family}/${p.program} uses maps that are not pinned`,
        ).toEqual([]);
      }
    }

    // A service added now routes: its VIP reaches web-a's backend.
    env.writeConfig(
      splitConfig(
        NET,
        [1, 1],
        `---
apiVersion: v1
kind: Service
metadata: { name: added }
spec: { clusterIP: ${NET}.1.4, selector: { app: web, version: a }, ports: [{ port: 8080 }] }
`,
      ),
    );
    await expect.poll(() => agent.logs().some((l) => l.msg === 'config applied' && l.generation === 2), { timeout: 20_000 }).toBe(true);
    await startBackends(env);
    const r = await load(env, `http://${NET}.1.4:8080/`, 20);
    expect(r.errors).toEqual([]);
    expect(r.byBody).toEqual({ a: 20 });
    // The routing tables were made anew (the connection tables kept their size and were adopted), so the
    // programs that use them, and only those, were switched in place.
    const usesRouting = progs.filter((p) => p.family === 'split' && [...p.maps.values()].some((n) => n === 'split_services' || n === 'split_endpoints'));
    expect(usesRouting.length).toBeGreaterThan(0);
    expect(ready.replaced).toBe(usesRouting.length);
  });
});
