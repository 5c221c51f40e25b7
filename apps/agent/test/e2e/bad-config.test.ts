// Done-when 4 of the agent: five broken configs. At start-up each one makes mesh-agent exit 3 with a message
// naming the document, the object and the field; while running, each is rejected whole — logged, counted in
// /metrics, shown by `meshctl status` — and traffic keeps following the previous config.
import { setTimeout as sleep } from 'node:timers/promises';

import { describePrivileged } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { AGENT_BIN, meshEnvPerTest, runLoad, sample, splitConfig, startBackends, testNet } from './harness.js';

const NET = testNet();
// Every broken config would send all traffic to web-b if it were applied; the good one sends it all to web-a.
const GOOD = splitConfig(NET, [100, 0]);
const FLIPPED = splitConfig(NET, [0, 100]);

const BROKEN: { name: string; yaml: string; message: RegExp }[] = [
  {
    name: 'YAML syntax',
    yaml: FLIPPED + '---\napiVersion: v1\nkind: Service\nmetadata: { name: broken\nspec: {}\n',
    message: /mesh\.yaml: document 8 \(line \d+, column \d+\): YAML syntax: /,
  },
  {
    name: 'unknown kind',
    yaml: FLIPPED + '---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: web }\nspec: {}\n',
    message: /mesh\.yaml: document 8 \(line \d+\): VirtualService default\/web: kind: "VirtualService" is not one of Service, EndpointSlice, HTTPRoute, Workload/,
  },
  {
    name: 'missing field',
    yaml: FLIPPED + '---\napiVersion: v1\nkind: Service\nmetadata: { name: noports }\nspec: { clusterIP: ' + NET + '.1.9 }\n',
    message: /mesh\.yaml: document 8 \(line \d+\): Service default\/noports: spec\.ports: must list at least one port/,
  },
  {
    name: 'bad weight',
    yaml: splitConfig(NET, [-5, 100]),
    message: /mesh\.yaml: document 7 \(line \d+\): HTTPRoute default\/web-split: spec\.rules\[0\]\.backendRefs\[0\]\.weight: must be an integer in \[0, 1000000\], got -5/,
  },
  {
    name: 'duplicate VIP',
    yaml: FLIPPED + '---\napiVersion: v1\nkind: Service\nmetadata: { name: twin }\nspec: { clusterIP: ' + NET + '.1.1, ports: [{ port: 8080 }] }\n',
    message: new RegExp(String.raw`mesh\.yaml: document 8 \(line \d+\): Service default/twin: spec\.ports\[0\]: ${NET.replace('.', '\\.')}\.1\.1:8080/TCP is already the address of Service default/web`),
  },
];

describePrivileged('agent with broken configs', () => {
  const newEnv = meshEnvPerTest();

  it.each(BROKEN)('at start-up, $name: exit 3 naming document, object and field', async ({ yaml, message }) => {
    const env = await newEnv();
    env.writeConfig(yaml);
    const r = await env.procs.run(AGENT_BIN, env.agentArgs(), { timeoutMs: 20_000 });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(message);
    // Nothing was attached or pinned.
    expect((await import('node:fs')).existsSync(env.pinRoot)).toBe(false);
  });

  it('while running, each is rejected whole and traffic follows the previous config', async () => {
    const e = await newEnv();
    e.writeConfig(GOOD);
    const agent = await e.startAgent();
    await startBackends(e);
    const status = () => e.api<{ config: { generation: number }; lastError?: { problems: string[] } }>('/v1/status');
    expect((await runLoad(e, NET, 200, 0.25)).byBody).toEqual({ a: 50 });

    for (const [i, b] of BROKEN.entries()) {
      e.writeConfig(b.yaml);
      const deadline = Date.now() + 10_000;
      let s = await status();
      while (!s.lastError?.problems.some((p) => b.message.test(p)) && Date.now() < deadline) {
        await sleep(50);
        s = await status();
      }
      expect(s.lastError?.problems.join('\n'), b.name).toMatch(b.message);
      expect(s.config.generation).toBe(1);
      // Shown in logs, in /metrics and by meshctl status (exit 3: the last config was rejected).
      expect(agent.logs().filter((l) => l.msg === 'config rejected; the previous config stays in force')).toHaveLength(i + 1);
      expect(sample(await e.metrics(), 'mesh_agent_config_reloads_total', { result: 'failure' })).toEqual([i + 1]);
      expect(sample(await e.metrics(), 'mesh_agent_config_last_reload_successful')).toEqual([0]);
      const ctl = await e.meshctl(['status']);
      expect(ctl.code).toBe(3);
      expect(ctl.stdout).toMatch(b.message);
      // The old config is what the kernel does.
      expect((await runLoad(e, NET, 200, 0.25)).byBody, b.name).toEqual({ a: 50 });
    }

    // The watcher is live: a good change is applied, and traffic follows it.
    e.writeConfig(FLIPPED);
    const deadline = Date.now() + 10_000;
    while ((await status()).config.generation !== 2 && Date.now() < deadline) await sleep(50);
    expect((await status()).config.generation).toBe(2);
    expect((await runLoad(e, NET, 200, 0.25)).byBody).toEqual({ b: 50 });
    expect((await e.meshctl(['status'])).code).toBe(0);
    expect(sample(await e.metrics(), 'mesh_agent_config_last_reload_successful')).toEqual([1]);
  });
});
