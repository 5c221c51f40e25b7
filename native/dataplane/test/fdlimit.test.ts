// Out of file descriptors: the data plane refuses what it cannot take (counted), does not spin on its listener,
// and serves again once fds free up.
import { connect, type Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged, ensureTool } from '@mesh/testkit';
import { get, meshAgent, missingDataplane, startDataplane, type Dataplane } from './harness.js';
import { eventually, startNodes, type Nodes } from './fixture.js';

const missing = missingDataplane();

// CPU seconds (user + system) of every thread of `pid`.
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

describePrivileged('mesh-dataplane fd limit', () => {
  let n: Nodes;
  let limited: Dataplane;
  const idle: Socket[] = [];
  beforeAll(async () => {
    if (missing) throw new Error(missing);
    n = await startNodes();
    // A second node A with 32 fds: about 12 are its own (stdio, epolls, listeners, eventfds, signalfd).
    const config = structuredClone(n.configA);
    config.outbound = `${n.ip(1)}:0`;
    config.stats = `${n.ip(1)}:0`;
    config.handshakeTimeoutMs = 20_000;
    limited = await startDataplane(n.tracker, n.dir, 'node-a-limited', config, { wrap: [ensureTool('prlimit'), '--nofile=32:32', '--'] });
  });
  afterAll(async () => {
    for (const s of idle) s.destroy();
    await n?.close();
  });

  it('refuses connections past the fd limit without spinning, and serves again once fds free up', async () => {
    // Connections that never send their preamble each hold one fd (until the 20 s setup deadline).
    for (let i = 0; i < 40; i++) {
      const s = connect({ host: limited.outbound!.host, port: limited.outbound!.port, localAddress: n.client });
      s.on('error', () => {});
      idle.push(s);
    }
    const pid = limited.child.pid!;
    await new Promise((r) => setTimeout(r, 1000));
    const cpu0 = cpuSeconds(pid);
    // One more pending connection while out of fds: a level-triggered listener would now spin at 100 %.
    const extra = connect({ host: limited.outbound!.host, port: limited.outbound!.port, localAddress: n.client });
    extra.on('error', () => {});
    idle.push(extra);
    await new Promise((r) => setTimeout(r, 2000));
    expect(cpuSeconds(pid) - cpu0).toBeLessThan(0.3);
    // Closing the idle ones frees their fds; the refusals were counted (the stats endpoint, too, needs an fd).
    for (const s of idle) s.destroy();
    await eventually('fd_limit refusals counted', async () =>
      (await limited.counter('mesh_dataplane_connection_errors_total', 'role="outbound",reason="fd_limit"').catch(() => 0)) > 0);
    await eventually('a request through the limited data plane', async () => {
      const agent = meshAgent(limited, n.client, n.target, 1);
      try {
        return (await get({ host: n.target.host, port: n.target.port, path: '/after', agent, timeoutMs: 5000 })).status === 200;
      } catch {
        return false;
      } finally {
        agent.destroy();
      }
    }, 60_000);
  });
}, { tools: ['openssl', 'prlimit'] });
