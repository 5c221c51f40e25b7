// The bind guard with the agent: a process of an enrolled workload binding the data plane's inbound source
// address (what the STRICT server accepts plaintext from) gets EPERM, counted in the agent's
// mesh_mtls_bind_refusals_total, while the data plane keeps connecting from it (requests to the STRICT server
// succeed); mesh_mtls_strict_unchecked_total counts the packets to connected sockets STRICT lets through.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { capturedOutput, describePrivileged } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { sample, sum } from './harness.js';
import { MtlsNode, until } from './mtls-node.js';

const bindScript = fileURLToPath(new URL('../../../../packages/mtls/test/fixtures/bind.py', import.meta.url));

describePrivileged('the bind guard of the inbound source address, with the agent', () => {
  it('an enrolled workload cannot bind it; the data plane still serves STRICT', async () => {
    const n = await MtlsNode.start();
    try {
      const metric = async (name: string) => sum(sample(await n.env.metrics(), name));
      const refused0 = await metric('mesh_mtls_bind_refusals_total');
      const child = n.env.meshRun('client', ['python3', bindScript, n.inboundSource, n.client]);
      await until('bind.py done', async () => child.exitCode !== null, 30_000);
      const lines = capturedOutput(child).stdout.trim().split('\n');
      expect(lines).toEqual([`${n.inboundSource} EPERM`, `${n.client} ok`]);
      expect((await metric('mesh_mtls_bind_refusals_total')) - refused0).toBe(1);

      const r = await n.load(20, 1).result;
      expect(r, JSON.stringify(r.errors)).toMatchObject({ sent: 20, ok: 20, failed: 0 });
      expect(await metric('mesh_mtls_strict_unchecked_total')).toBeGreaterThan(0);
    } finally {
      await n.close();
    }
  }, 180_000);

  // As in a Kubernetes DaemonSet pod: the agent (and the data plane it starts) in a cgroup below the attach root,
  // in a cgroup namespace of its own, so that /proc/<pid>/cgroup reads "0::/" to it. The guard must still know
  // the data plane's cgroup (not the namespace's root as the agent sees it), or every inbound connect is refused.
  it('with the agent in a cgroup namespace of its own below the attach root, the data plane still binds it', async () => {
    let agentCg = '';
    const made: string[] = [];
    const n = await MtlsNode.start([], (env) => {
      agentCg = join(env.cgroupRoot, 'mesh-system');
      mkdirSync(agentCg, { recursive: true });
      made.push(agentCg);
      return ['sh', '-c', `echo $$ > ${agentCg}/cgroup.procs && exec unshare --cgroup "$@"`, 'sh'];
    });
    n.extraCgroups.push(...made);
    try {
      const pid = n.agent.child.pid!;
      const seen = execFileSync('nsenter', [`--cgroup=/proc/${pid}/ns/cgroup`, 'cat', `/proc/${pid}/cgroup`], { encoding: 'utf8' });
      expect(seen.split('\n').find((l) => l.startsWith('0::'))).toBe('0::/'); // the unified hierarchy's line
      const dp = n.dataplanePid()!;
      expect(readFileSync(`/proc/${dp}/cgroup`, 'utf8')).toMatch(/^0::\/.*\/mesh-system$/m); // it runs in the agent's cgroup

      const r = await n.load(20, 1).result;
      expect(r, JSON.stringify(r.errors)).toMatchObject({ sent: 20, ok: 20, failed: 0 });
      const child = n.env.meshRun('client', ['python3', bindScript, n.inboundSource, n.client]);
      await until('bind.py done', async () => child.exitCode !== null, 30_000);
      expect(capturedOutput(child).stdout.trim().split('\n')).toEqual([`${n.inboundSource} EPERM`, `${n.client} ok`]);
    } finally {
      await n.close();
    }
  }, 180_000);
});
