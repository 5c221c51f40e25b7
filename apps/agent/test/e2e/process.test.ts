// The agent as a process: one agent per pin root, held by a lock the kernel keeps (flock), so a race has one
// winner and a killed agent's lock goes with it, whatever pid the file names; SIGHUP does not stop it; SIGTERM
// stops it promptly even while a client holds a request half-sent.
import type { ChildProcess } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';

import { capturedOutput, describePrivileged, signalChild, waitForExit } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { lockFile } from '../../src/lock.js';
import { AGENT_BIN, freePort, httpGet, meshEnvPerTest, type MeshEnv, splitConfig, testNet } from './harness.js';

const NET = testNet();

/** Resolves 'ready' once /readyz on `port` answers 200, or 'exited' when the agent exits first. */
async function readyOrExit(child: ChildProcess, port: number, timeoutMs = 30_000): Promise<'ready' | 'exited'> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) return 'exited';
    const r = await httpGet('127.0.0.1', port, '/readyz', 1000).catch(() => undefined);
    if (r?.status === 200) return 'ready';
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`agent on port ${port} neither ready nor exited after ${timeoutMs} ms:\n${capturedOutput(child).stderr}`);
}

async function spawnAgent(env: MeshEnv): Promise<{ child: ChildProcess; port: number }> {
  const port = await freePort();
  const child = env.procs.spawn(AGENT_BIN, env.agentArgs(['--listen', `127.0.0.1:${port}`]), { stdio: ['ignore', 'pipe', 'pipe'] });
  return { child, port };
}

describePrivileged('the agent process', () => {
  const newEnv = meshEnvPerTest();

  it('agents racing for one pin root, over a lock file a killed agent left: exactly one wins, the others exit 1 naming it', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [1, 1]));
    // What kill -9 leaves: a lock file naming a pid that is gone.
    writeFileSync(lockFile(env.pinRoot), '2147483646');
    const agents = await Promise.all([1, 2, 3, 4].map(() => spawnAgent(env)));
    const outcomes = await Promise.all(agents.map((a) => readyOrExit(a.child, a.port)));
    expect(outcomes.filter((o) => o === 'ready')).toHaveLength(1);
    const winner = agents[outcomes.indexOf('ready')]!;
    // Root's only (even the file the killed agent left): flock needs only a read-only fd, so a file others could
    // open would be a lock any local user could hold.
    expect(statSync(lockFile(env.pinRoot)).mode & 0o777).toBe(0o600);
    for (const [i, a] of agents.entries()) {
      if (a === winner) continue;
      expect(await waitForExit(a.child, 10_000), `agent ${i}`).toBe(1);
      expect(capturedOutput(a.child).stderr).toContain(`another mesh-agent (pid ${winner.child.pid}) owns ${env.pinRoot}`);
    }
  });

  it('after kill -9 a new agent takes the lock, even when the pid in the file now runs something named like an agent', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [1, 1]));
    const first = await env.startAgent();
    signalChild(first.child, 'SIGKILL');
    await waitForExit(first.child, 10_000);
    // The killed agent's pid reused by another process whose command line says mesh-agent (an editor, a tail -f…).
    const lookalike = env.procs.spawn('/bin/bash', ['-c', 'exec -a mesh-agent-lookalike sleep 60'], { stdio: 'ignore' });
    writeFileSync(lockFile(env.pinRoot), String(lookalike.pid));
    const second = await env.startAgent();
    expect(second.logs().some((l) => l.msg === 'datapath ready')).toBe(true);
  });

  it('SIGHUP leaves the agent running and serving, and says so in the log', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [1, 1]));
    const agent = await env.startAgent();
    signalChild(agent.child, 'SIGHUP');
    await expect.poll(() => agent.logs().some((l) => l.msg === 'SIGHUP ignored: config files are re-read as they change'), { timeout: 10_000 }).toBe(true);
    expect(agent.child.exitCode).toBe(null);
    expect((await httpGet('127.0.0.1', env.port, '/healthz')).status).toBe(200);
    signalChild(agent.child, 'SIGTERM');
    expect(await waitForExit(agent.child, 10_000)).toBe(0);
  });

  it('SIGTERM while a client holds a half-sent request and an idle keep-alive connection: exit 0 within seconds', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [1, 1]));
    const agent = await env.startAgent();
    const open = (data: string) =>
      new Promise<ReturnType<typeof connect>>((resolve, reject) => {
        const s = connect(env.port, '127.0.0.1', () => resolve(s));
        s.on('error', reject);
        s.write(data);
      });
    // Headers never finished: the server waits for the rest until its headers timeout (60 s).
    const half = await open('GET /metrics HTTP/1.1\r\nHost: agent\r\n');
    // A finished request on a keep-alive connection, then idle.
    const idle = await open('GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n');
    await new Promise((r) => idle.once('data', r));
    try {
      const t0 = Date.now();
      signalChild(agent.child, 'SIGTERM');
      expect(await waitForExit(agent.child, 15_000)).toBe(0);
      expect(Date.now() - t0).toBeLessThan(10_000);
    } finally {
      half.destroy();
      idle.destroy();
    }
  });
});
