// mesh-agent as the e2e harness, the benches and the demo start it: its binaries, its arguments for a config and
// roots of the caller's own, waiting until /readyz answers on its control socket, and reading its control API.
// Plain JavaScript so that the .mjs benches and the example import it as they are; types in agent.d.mts.
import { request } from 'node:http';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { defaultApiSocket } from '../../apps/agent/dist/api-socket.js';

const REPO = resolve(import.meta.dirname, '../..');
/** Run these files themselves: mesh-agent's shebang carries the node flags it is meant to run with. */
export const AGENT_BIN = join(REPO, 'apps/agent/bin/mesh-agent.mjs');
export const MESHCTL_BIN = join(REPO, 'apps/agent/bin/meshctl.mjs');

/** The agent's default control socket for a pin root (root's, mode 0660), as the agent defines it. */
export const agentSocket = defaultApiSocket;

/** mesh-agent's arguments: a config (file or directory), a /metrics address, its control socket and roots. */
export function agentArgs({ config, listen, apiSocket, pinRoot, cgroupRoot, stateDir }, extra = []) {
  const args = ['--config', config, '--listen', listen, '--api-socket', apiSocket ?? agentSocket(pinRoot), '--pin-root', pinRoot, '--cgroup-root', cgroupRoot];
  if (stateDir !== undefined) args.push('--state-dir', stateDir);
  return [...args, ...extra];
}

/** GET `path` from the agent: over its unix socket ({ socketPath }) or TCP ({ host, port }); never rejects on a status. */
export function agentGet(to, path, timeoutMs = 3000) {
  return new Promise((done, fail) => {
    const req = request({ ...to, path, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => done({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer within ${timeoutMs} ms`)));
    req.on('error', fail);
    req.end();
  });
}

/** A JSON document of the agent's control API (/v1/…), from its unix socket; rejects on any status but 200. */
export async function agentApi(socketPath, path, timeoutMs = 10_000) {
  const r = await agentGet({ socketPath }, path, timeoutMs);
  if (r.status !== 200) throw new Error(`agent ${path} answered ${r.status}: ${r.body.slice(0, 200)}`);
  return JSON.parse(r.body);
}

/**
 * Resolves once /readyz answers 200 on the agent's control socket. Rejects with the agent's own words when
 * `exited()` returns a reason (the process is gone), or after timeoutMs; `describe()` adds its log to either.
 * With `signal`, an abort ends the wait with the signal's reason.
 */
export async function waitReady(socketPath, { timeoutMs = 30_000, intervalMs = 50, exited = () => undefined, describe = () => '', signal } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    signal?.throwIfAborted();
    const gone = exited();
    if (gone !== undefined) throw new Error(`mesh-agent exited (${gone}) before it was ready${tail(describe())}`);
    const r = await agentGet({ socketPath }, '/readyz', 1000).catch(() => undefined);
    if (r?.status === 200) return;
    if (Date.now() > deadline) throw new Error(`mesh-agent was not ready within ${timeoutMs / 1000} s (${r ? `${r.status} ${r.body.trim()}` : 'no answer'})${tail(describe())}`);
    // Aborted meanwhile: the loop's first line throws the signal's reason.
    await sleep(intervalMs, undefined, signal ? { signal } : undefined).catch(() => undefined);
  }
}

const tail = (text) => (text ? `:\n${text}` : '');

/** Why a child process is gone ("1", "SIGKILL", a spawn error), or undefined while it runs. */
export function exitReason(child) {
  if (child.exitCode !== null) return String(child.exitCode);
  if (child.signalCode !== null) return child.signalCode;
  return undefined;
}
