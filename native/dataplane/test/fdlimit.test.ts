// Out of file descriptors: the data plane refuses what it cannot take (counted), does not spin on its listener,
// and serves again once fds free up — also when several workers race for the last fds.
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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describePrivileged('mesh-dataplane fd limit', () => {
  let n: Nodes;
  const idle: Socket[] = [];
  beforeAll(async () => {
    if (missing) throw new Error(missing);
    n = await startNodes();
  });
  afterAll(async () => {
    for (const s of idle) s.destroy();
    await n?.close();
  });

  // A second node A, limited to `nofile` fds, on its own outbound and stats ports.
  async function limitedNode(name: string, nofile: number, workers: number): Promise<Dataplane> {
    const config = structuredClone(n.configA);
    config.outbound = `${n.ip(1)}:0`;
    config.stats = `${n.ip(1)}:0`;
    config.handshakeTimeoutMs = 20_000;
    config.workers = workers;
    return startDataplane(n.tracker, n.dir, name, config, { wrap: [ensureTool('prlimit'), `--nofile=${nofile}:${nofile}`, '--'] });
  }

  // Connections that never send their preamble each hold one fd (until the 20 s setup deadline).
  function open(dp: Dataplane, count: number): Socket[] {
    const made: Socket[] = [];
    for (let i = 0; i < count; i++) {
      const s = connect({ host: dp.outbound!.host, port: dp.outbound!.port, localAddress: n.client });
      s.on('error', () => {});
      made.push(s);
      idle.push(s);
    }
    return made;
  }

  async function serves(dp: Dataplane, path: string): Promise<void> {
    await eventually(`a request through the limited data plane (${path})`, async () => {
      const agent = meshAgent(dp, n.client, n.target, 1);
      try {
        return (await get({ host: n.target.host, port: n.target.port, path, agent, timeoutMs: 5000 })).status === 200;
      } catch {
        return false;
      } finally {
        agent.destroy();
      }
    }, 60_000);
  }

  it('refuses connections past the fd limit without spinning, and serves again once fds free up', async () => {
    // About 12 of the 32 fds are its own (stdio, epolls, listeners, eventfds, signalfd).
    const limited = await limitedNode('node-a-limited', 32, 2);
    const pid = limited.child.pid!;
    open(limited, 40);
    await sleep(1000);
    const cpu0 = cpuSeconds(pid);
    // One more pending connection while out of fds: a level-triggered listener would now spin at 100 %.
    open(limited, 1);
    await sleep(2000);
    expect(cpuSeconds(pid) - cpu0).toBeLessThan(0.3);
    // Closing the idle ones frees their fds; the refusals were counted (the stats endpoint, too, needs an fd).
    for (const s of idle.splice(0)) s.destroy();
    await eventually('fd_limit refusals counted', async () =>
      (await limited.counter('mesh_dataplane_connection_errors_total', 'role="outbound",reason="fd_limit"').catch(() => 0)) > 0);
    await serves(limited, '/after');
  });

  it('does not spin when workers race for the last fds, round after round', async () => {
    // Four workers accepting at once: a worker's freed fd can be taken by another thread between its close and its
    // accept. Each round fills the fds in one burst, leaves connections pending, and then frees everything.
    const limited = await limitedNode('node-a-racing', 40, 4);
    const pid = limited.child.pid!;
    for (let round = 0; round < 5; round++) {
      // Far more than the fds, fewer than the listen backlog (1,024): most are refused one by one while every
      // worker accepts at once. Measured once each has been refused or connected (accepted, or in the backlog).
      const burst = open(limited, 900);
      await eventually(`round ${round}: the burst settled`, async () => burst.every((s) => s.readyState === 'open' || s.destroyed || s.closed), 30_000);
      open(limited, 4);
      await sleep(200);
      const cpu0 = cpuSeconds(pid);
      await sleep(1500);
      const used = cpuSeconds(pid) - cpu0;
      expect(used, `CPU seconds in 1.5 s while out of fds, round ${round}`).toBeLessThan(0.4);
      for (const s of idle.splice(0)) s.destroy();
      await serves(limited, `/round-${round}`);
    }
  }, 240_000);
}, { tools: ['openssl', 'prlimit'] });
