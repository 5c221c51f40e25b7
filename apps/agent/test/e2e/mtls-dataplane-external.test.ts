// The data plane run beside the agent, as the Kubernetes overlay deploy/kubernetes/mtls runs it: a container of
// the agent's pod (a process of the agent's own container dies with it, so one it started would cut every
// tunnelled connection at each agent restart), started and restarted by something else (here the test, as the
// kubelet does). Each "container" is a cgroup of its own below the attach root, the agent's in a cgroup namespace
// of its own. The agent (--mtls-dataplane-external) writes the config, finds the process, reloads and watches it,
// never starts one: requests succeed (the data plane's cgroup, another container's, may bind the inbound source),
// `kill -9` of the agent under load fails none and the new agent finds the same process, and a data plane killed
// and started again by its owner is found again and serves.
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChildProcess } from 'node:child_process';

import { describePrivileged } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { DEFAULT_DATAPLANE } from '../../src/mtls.js';
import { MtlsNode, until } from './mtls-node.js';

type Status = { dataplane?: { pid?: number; state: string; adopted: boolean; external?: boolean; restarts: number; lastError?: string } };

/** Pids of the processes running the data plane binary with `config` (the agent must never start a second). */
function dataplanes(config: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      if (argv[0]?.endsWith('mesh-dataplane') && argv[1] === '--config' && argv[2] === config) out.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return out;
}

describePrivileged('the data plane beside the agent (--mtls-dataplane-external)', () => {
  it('found, reloaded and kept across agent restarts; found again after its owner restarts it', async () => {
    let dpCg = '';
    let container: ChildProcess | undefined;
    const config = () => join(n.runDir, 'dataplane.json');
    // The data plane container's command: wait for the agent's config, then exec the data plane on it.
    const startContainer = (node: MtlsNode) => {
      container = node.env.procs.spawn('sh', ['-c', 'echo $$ > "$1/cgroup.procs"; until [ -s "$2" ]; do sleep 0.1; done; exec "$3" --config "$2"', 'sh', dpCg, join(node.runDir, 'dataplane.json'), DEFAULT_DATAPLANE], { stdio: ['ignore', 'pipe', 'pipe'] });
    };
    const made: string[] = [];
    const n: MtlsNode = await MtlsNode.start(
      ['--mtls-dataplane-external'],
      (env) => {
        const agentCg = join(env.cgroupRoot, 'mesh-system', 'agent');
        dpCg = join(env.cgroupRoot, 'mesh-system', 'dataplane');
        mkdirSync(agentCg, { recursive: true });
        mkdirSync(dpCg, { recursive: true });
        made.push(join(env.cgroupRoot, 'mesh-system'), agentCg, dpCg);
        return ['sh', '-c', `echo $$ > ${agentCg}/cgroup.procs && exec unshare --cgroup "$@"`, 'sh'];
      },
      startContainer,
    );
    n.extraCgroups.push(...made);
    try {
      const status = async () => (await n.env.api<Status>('/v1/status')).dataplane!;
      await until('the data plane found', async () => (await status()).state === 'serving', 30_000);
      const dp0 = await status();
      const pids0 = dataplanes(config());
      expect(pids0).toEqual([container!.pid]);
      expect(dp0).toMatchObject({ pid: container!.pid, external: true, adopted: true });
      expect(readFileSync(`/proc/${dp0.pid}/cgroup`, 'utf8')).toMatch(/^0::\/.*\/mesh-system\/dataplane$/m);
      expect((await n.env.meshctl(['status'])).stdout).toMatch(new RegExp(`^data plane +serving \\(pid ${dp0.pid}, beside the agent, config generation \\d+, 0 restarts\\)`, 'm'));
      const first = await n.load(20, 1).result;
      expect(first, JSON.stringify(first.errors)).toMatchObject({ sent: 20, ok: 20, failed: 0 });

      // kill -9 of the agent under load: nothing fails, the new agent finds the same process.
      const running = n.load(50, 6).result;
      await sleep(1500);
      await n.restartAgent();
      const r = await running;
      expect(r, JSON.stringify(r.errors)).toMatchObject({ sent: 300, ok: 300, failed: 0 });
      expect(await status()).toMatchObject({ pid: dp0.pid, state: 'serving', external: true });
      expect(dataplanes(config())).toEqual(pids0);

      // Killed: the agent waits (it starts none); its owner starts it again and it is found and serves.
      container!.kill('SIGKILL');
      await until('the agent saw it gone', async () => (await status()).state === 'down', 10_000);
      await sleep(1500); // an agent that started its own would have by now
      expect(dataplanes(config())).toEqual([]);
      expect((await status()).lastError).toMatch(/gone|waiting for the data plane/);
      startContainer(n);
      await until('found again', async () => (await status()).state === 'serving' && (await status()).pid === container!.pid, 15_000);
      expect((await status()).restarts).toBe(1);
      const after = await n.load(20, 1).result;
      expect(after, JSON.stringify(after.errors)).toMatchObject({ sent: 20, ok: 20, failed: 0 });
    } finally {
      await n.close();
    }
  }, 240_000);
});
