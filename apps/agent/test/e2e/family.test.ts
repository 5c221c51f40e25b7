// A datapath family from outside the agent (counter-family.ts, in the test tree) added through
// AgentOptions.families: the agent loads it, pins its maps and links, applies its part of the config, shows it
// in `meshctl status` and /metrics, adopts it on restart (same links), and `meshctl uninstall` removes it.
import { once } from 'node:events';
import { closeSync, existsSync, openSync } from 'node:fs';
import { createServer } from 'node:net';

import { describePrivileged, waitForExit } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { Agent } from '../../src/app.js';
import { FileSource } from '../../src/config/file.js';
import { createLogger } from '../../src/log.js';
import { counterFamily } from './counter-family.js';
import { meshEnvPerTest, sample, splitConfig, testNet } from './harness.js';

const NET = testNet();

interface Status {
  programs: { family: string; program: string; linkId: number; programId: number }[];
  maps: Record<string, { used: number; max: number }>;
  counters: Record<string, Record<string, number>>;
}

describePrivileged('a datapath family added without changing the agent', () => {
  const newEnv = meshEnvPerTest();

  it('is loaded, pinned, shown by status and /metrics, adopted on restart and uninstalled', async () => {
    const e = await newEnv();
    e.writeConfig(splitConfig(NET, [1, 1]));
    // A server of the test's own for the workload to talk to; discard (9) is what the family blocks.
    const server = createServer((s) => s.on('data', () => s.end('pong')).on('error', () => undefined));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as { port: number }).port;
    const devNull = openSync('/dev/null', 'w');
    const start = async () => {
      const agent = new Agent({
        source: new FileSource(e.configDir),
        listen: e.listen,
        apiSocket: e.apiSocket,
        pinRoot: e.pinRoot,
        cgroupRoot: e.cgroupRoot,
        log: createLogger({ fd: devNull }),
        families: [counterFamily([9])],
      });
      await agent.start().catch(async (err: unknown) => {
        await agent.stop();
        throw err;
      });
      return agent;
    };
    const status = async () => JSON.parse((await e.meshctl(['status', '--json'])).stdout) as Status;
    const counted = (s: Status) => s.programs.filter((p) => p.family === 'counter').map(({ program, linkId, programId }) => ({ program, linkId, programId }));
    let agent: Agent | undefined;
    try {
      agent = await start();
      const text = await e.meshctl(['status']);
      expect(text.code).toBe(0);
      expect(text.stdout).toMatch(/skb_ingress\s+counter\s+cgroup_inet_ingress/);
      expect(text.stdout).toMatch(/skb_egress\s+counter\s+cgroup_inet_egress/);
      expect(text.stdout).toMatch(/counter_blocked_ports\s+1\s+256\s+0\.4%/);
      const before = await status();
      expect(counted(before).map((p) => p.program).sort()).toEqual(['skb_egress', 'skb_ingress']);
      expect(existsSync(`${e.pinRoot}/maps/counter/blocked_ports`)).toBe(true);
      expect(existsSync(`${e.pinRoot}/links/counter/skb_ingress`)).toBe(true);

      // A workload of the mesh talks to the server: the family's programs count its packets.
      const client = e.meshRun('client', [process.execPath, '-e', `require('net').connect(${port}, '127.0.0.1', function () { this.end('ping'); }).on('data', () => {})`]);
      expect(await waitForExit(client, 15_000)).toBe(0);
      const metrics = await e.metrics();
      const egress = sample(metrics, 'mesh_test_counter_packets_total', { direction: 'egress' });
      expect(egress).toHaveLength(1);
      expect(egress[0]).toBeGreaterThanOrEqual(3); // SYN, data, FIN at least
      expect(sample(metrics, 'mesh_bpf_map_entries', { map: 'counter_blocked_ports' })).toEqual([1]);
      expect(sample(metrics, 'mesh_bpf_map_capacity', { map: 'counter_blocked_ports' })).toEqual([256]);
      const packets = (await status()).counters.counter!.egress_packets!;
      expect(packets).toBe(egress[0]);

      // Restarted: the same links are adopted and the pinned counts kept.
      await agent.stop();
      agent = undefined;
      agent = await start();
      const after = await status();
      expect(counted(after)).toEqual(counted(before));
      expect(after.counters.counter!.egress_packets).toBeGreaterThanOrEqual(packets);
      await agent.stop();
      agent = undefined;

      const r = await e.meshctl(['uninstall', '--pin-root', e.pinRoot, '--cgroup-root', e.cgroupRoot]);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/detached 14 links/); // the mesh's 12 links and the counter's 2
      expect(existsSync(e.pinRoot)).toBe(false);
    } finally {
      await agent?.stop();
      closeSync(devNull);
      server.close();
    }
  }, 90_000);
});
