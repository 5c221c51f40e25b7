// --metrics-listen: /metrics alone on an address of the operator's choosing (in Kubernetes the node's, where a
// Prometheus that discovers the DaemonSet's pods scrapes), beside the loopback listener; nothing else is served
// there (no /healthz, /readyz, page, graph or control API). A held port is not fatal and is tried again.
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:net';

import { describePrivileged, ensureTool } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { AGENT_BIN, freePort, httpGet, meshEnvPerTest, splitConfig, testNet } from './harness.js';
import { until } from './mtls-node.js';

const NET = testNet();

describePrivileged('--metrics-listen', () => {
  const newEnv = meshEnvPerTest();

  it('serves /metrics (promtool-clean, the same families) and nothing else; status names it', async () => {
    const e = await newEnv();
    e.writeConfig(splitConfig(NET, [1, 1]));
    const addr = `${NET}.0.20`; // not the --listen address (127.0.0.1): any address the node has
    const port = await freePort();
    await e.startAgent(['--metrics-listen', `${addr}:${port}`]);
    const m = await httpGet(addr, port, '/metrics');
    expect(m.status).toBe(200);
    const own = m.body.split('\n').filter((l) => /^(# (HELP|TYPE) )?mesh_/.test(l)).join('\n') + '\n';
    expect(own).toMatch(/^# TYPE mesh_split_connects_total counter$/m);
    const lint = spawnSync(ensureTool('promtool'), ['check', 'metrics'], { input: own, encoding: 'utf8' });
    expect(`${lint.stdout}${lint.stderr}`.trim()).toBe('');
    // The same families as the loopback listener's /metrics.
    const names = (text: string) => [...text.matchAll(/^# TYPE (mesh_\S+)/gm)].map((x) => x[1]).sort();
    expect(names(m.body)).toEqual(names((await httpGet('127.0.0.1', e.port, '/metrics')).body));
    for (const path of ['/healthz', '/readyz', '/', '/graph.json', '/v1/status', '/v1/workloads']) {
      const r = await httpGet(addr, port, path);
      expect(r.status, path).toBe(404);
      expect(r.body, path).toContain('this address serves /metrics');
    }
    expect((await httpGet('127.0.0.1', e.port, '/healthz')).status).toBe(200); // the loopback listener is unchanged
    expect((await e.meshctl(['status'])).stdout).toMatch(new RegExp(`^metrics only http://${addr.replaceAll('.', '\\.')}:${port}/metrics$`, 'm'));
  }, 120_000);

  it('a port someone holds: the agent runs, status says why, and it serves once the port is free', async () => {
    const e = await newEnv();
    e.writeConfig(splitConfig(NET, [1, 1]));
    const addr = `${NET}.0.21`;
    const port = await freePort();
    const squatter = createServer();
    await new Promise<void>((r) => squatter.listen(port, addr, r));
    try {
      const agent = await e.startAgent(['--metrics-listen', `${addr}:${port}`]);
      const message = `cannot serve /metrics on ${addr}:${port}: port ${port} on ${addr} is in use by another process`;
      expect(agent.logs().filter((l) => String(l.msg).startsWith(message))).toHaveLength(1);
      expect((await e.meshctl(['status'])).stdout).toContain(`metrics only NOT SERVED: ${message}`);
      expect((await httpGet('127.0.0.1', e.port, '/metrics')).status).toBe(200);
    } finally {
      await new Promise((r) => squatter.close(r));
    }
    // Tried again every 10 s.
    await until('served', async () => (await httpGet(addr, port, '/metrics').catch(() => ({ status: 0 }))).status === 200, 30_000);
  }, 120_000);

  it('refuses an address that is not IP:PORT, naming the flag', () => {
    for (const bad of ['localhost:9090', '10.0.0.1', '10.0.0.1:0', '::1:9090']) {
      const r = spawnSync(AGENT_BIN, ['--config', '/nonexistent/mesh.yaml', '--metrics-listen', bad], { encoding: 'utf8', timeout: 30_000 });
      expect(r.status, bad).toBe(2);
      expect(r.stderr, bad).toContain(`--metrics-listen must be IP:PORT (an IPv6 address in brackets), got ${JSON.stringify(bad)}`);
    }
  }, 120_000);
});
