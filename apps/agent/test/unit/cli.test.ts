// The binaries' contract with scripts, without root: help for every command, usage errors exit 2, an agent
// that does not answer exits 4, an invalid config exits 3 from `mesh-agent --check`.
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';

import { describe, expect, it } from 'vitest';

const AGENT = resolve(import.meta.dirname, '../../bin/mesh-agent.mjs');
const MESHCTL = resolve(import.meta.dirname, '../../bin/meshctl.mjs');
const EXAMPLE = resolve(import.meta.dirname, '../../../../examples/single-host/mesh.yaml');

async function exec(bin: string, args: string[], env: Record<string, string> = {}) {
  try {
    const r = await promisify(execFile)(process.execPath, [bin, ...args], { env: { ...process.env, ...env }, timeout: 10_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

// Each test starts node up to 6 times (~0.3 s each here, 2.2 s for the slowest test): 30 s leaves a slow,
// loaded machine the margin the unit tier's 10 s does not.
const SPAWNS = { timeout: 30_000 };

describe('meshctl', SPAWNS, () => {
  it.each(['run', 'status', 'services', 'stat', 'certs', 'ca', 'uninstall', 'version'])('%s --help prints its usage and exits 0', async (cmd) => {
    const r = await exec(MESHCTL, [cmd, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^Usage: meshctl ${cmd}`));
  });

  it('with no command prints the command list and exits 2; --help exits 0', async () => {
    const none = await exec(MESHCTL, []);
    expect(none.code).toBe(2);
    expect(none.stdout).toMatch(/Commands:\n\s+run\s/);
    expect((await exec(MESHCTL, ['--help'])).code).toBe(0);
  });

  it('usage errors exit 2 and say what is wrong', async () => {
    const unknown = await exec(MESHCTL, ['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command "frobnicate"/);
    const noWorkload = await exec(MESHCTL, ['run', '--', 'true']);
    expect(noWorkload.code).toBe(2);
    expect(noWorkload.stderr).toMatch(/--workload is required/);
    const noCommand = await exec(MESHCTL, ['run', '--workload', 'web']);
    expect(noCommand.code).toBe(2);
    expect(noCommand.stderr).toMatch(/give the command after --/);
    const badWindow = await exec(MESHCTL, ['stat', '--window', '600']);
    expect(badWindow.code).toBe(2);
    expect(badWindow.stderr).toMatch(/--window must be/);
    const badFlag = await exec(MESHCTL, ['status', '--colour']);
    expect(badFlag.code).toBe(2);
    const relative = await exec(MESHCTL, ['--api-socket', 'mesh.sock', 'status']);
    expect(relative.code).toBe(2);
    expect(relative.stderr).toMatch(/--api-socket must be an absolute path/);
    // The TCP address that carried the control API: gone, and the message says where it went.
    const tcp = await exec(MESHCTL, ['--agent', '127.0.0.1:15090', 'status']);
    expect(tcp.code).toBe(2);
    expect(tcp.stderr).toMatch(/--agent HOST:PORT is gone: the control API is on the agent's unix socket \(--api-socket PATH, default \/run\/mesh\/mesh\.sock\)/);
  });

  it('an agent that does not answer exits 4 and names the socket', async () => {
    const nowhere = resolve(import.meta.dirname, 'no-such-agent.sock');
    for (const cmd of ['status', 'services', 'stat']) {
      const r = await exec(MESHCTL, ['--api-socket', nowhere, cmd]);
      expect(r.code).toBe(4);
      expect(r.stderr).toContain(`no agent socket at ${nowhere}; is mesh-agent running? (--api-socket, $MESH_API_SOCKET)`);
    }
    const viaEnv = await exec(MESHCTL, ['status'], { MESH_API_SOCKET: nowhere });
    expect(viaEnv.code).toBe(4);
    // The global option after the command works the same (the place people put it).
    for (const args of [['status', '--api-socket', nowhere], ['stat', '--window', '5', `--api-socket=${nowhere}`]]) {
      const after = await exec(MESHCTL, args);
      expect(after.code, args.join(' ')).toBe(4);
      expect(after.stderr).toContain(`no agent socket at ${nowhere}`);
    }
  });
});

describe('mesh-agent', SPAWNS, () => {
  it('--help and --version exit 0', async () => {
    const help = await exec(AGENT, ['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: mesh-agent --config PATH/);
    expect((await exec(AGENT, ['--version'])).stdout).toMatch(/^mesh-agent \d+\.\d+\.\d+/);
  });

  it('usage errors exit 2: no --config, a non-loopback listen address, an unknown flag', async () => {
    expect((await exec(AGENT, [])).stderr).toMatch(/--config is required/);
    const open = await exec(AGENT, ['--config', EXAMPLE, '--listen', '0.0.0.0:15090']);
    expect(open.code).toBe(2);
    expect(open.stderr).toMatch(/--listen must be a loopback address/);
    expect((await exec(AGENT, ['--config', EXAMPLE, '--frob'])).code).toBe(2);
  });

  it.each([
    [['--trust-domain', 'Example.org'], /--trust-domain: the trust domain must be lowercase/],
    [['--ca', 'vault'], /--ca must be builtin, external or none, got "vault"/],
    [['--ca', 'external'], /--ca external needs --ca-dir/],
    [['--ca-dir', '/tmp'], /--ca-dir is for --ca external/],
    [['--svid-ttl', '29s'], /--svid-ttl must be a duration of at least 30s/],
    [['--svid-ttl', 'a day'], /--svid-ttl must be a duration of at least 30s .*got "a day"/],
  ])('identity flags: %j is a usage error (exit 2)', async (flags, message) => {
    const r = await exec(AGENT, ['--config', EXAMPLE, ...flags]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
  });

  it.each([
    [['--mtls-tunnel-mode', 'multiplexed'], /--mtls-tunnel-mode must be one of auto, pooled, dedicated, got "multiplexed"/],
    [['--mtls-pool', '--mtls-tunnel-mode', 'dedicated'], /--mtls-pool is --mtls-tunnel-mode pooled: not with --mtls-tunnel-mode dedicated/],
  ])('tunnel flags: %j is a usage error (exit 2)', async (flags, message) => {
    const r = await exec(AGENT, ['--config', EXAMPLE, '--mtls', ...flags]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
  });

  it('--check validates without touching the kernel: 0 for the example, 3 for a broken file', async () => {
    const ok = await exec(AGENT, ['--config', EXAMPLE, '--check']);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/valid: 3 services, 1 routes, 3 workloads/);
    const bad = await exec(AGENT, ['--config', resolve(import.meta.dirname, 'no-such.yaml'), '--check']);
    expect(bad.code).toBe(3);
    expect(bad.stderr).toMatch(/no-such\.yaml: cannot read the config/);
  });
});
