// meshctl's commands that only talk to the agent work where @mesh/bpf's native addon was never built: they are
// run from a copy of the built tree (each workspace package's package.json and dist/, the agent's bin/) that has
// no packages/bpf/prebuilds/, against an agent started from the real tree. The copy's @mesh/* dependencies point
// into the copy, so any import of @mesh/bpf there fails as it would in such a clone (and no libbpf is loaded).
import { cpSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, symlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

import { describePrivileged } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { type MeshEnv, meshEnvPerTest, splitConfig, testNet } from './harness.js';

const REPO = resolve(import.meta.dirname, '../../../..');
const NET = testNet();
/** The workspace packages the agent's binaries import, by @mesh name. */
const PACKAGES: Record<string, string> = { agent: 'apps/agent', bpf: 'packages/bpf', metrics: 'packages/metrics', split: 'packages/split', mtls: 'packages/mtls' };

/** A copy of the built tree under `dir` without the native addon: package.json, dist/ and bin/ of each package;
 *  @mesh/* links into the copy, other dependencies linked to the installed ones. */
function treeWithoutAddon(dir: string): string {
  for (const rel of Object.values(PACKAGES)) {
    const from = join(REPO, rel);
    const to = join(dir, rel);
    mkdirSync(to, { recursive: true });
    for (const part of ['package.json', 'dist', 'bin']) {
      if (existsSync(join(from, part))) cpSync(join(from, part), join(to, part), { recursive: true, filter: (src) => !src.endsWith('.map') });
    }
    const modules = join(from, 'node_modules');
    const entries = readdirSync(modules).filter((n) => n !== '.bin').flatMap((n) => (n.startsWith('@') ? readdirSync(join(modules, n)).map((m) => `${n}/${m}`) : [n]));
    for (const name of entries) {
      const mesh = /^@mesh\/(.+)$/.exec(name)?.[1];
      if (mesh !== undefined && !PACKAGES[mesh]) continue; // the test kit: a dev dependency
      const link = join(to, 'node_modules', name);
      mkdirSync(dirname(link), { recursive: true });
      symlinkSync(mesh !== undefined ? join(dir, PACKAGES[mesh]!) : realpathSync(join(modules, name)), link);
    }
  }
  return join(dir, 'apps/agent/bin/meshctl.mjs');
}

describePrivileged('meshctl without the native addon', () => {
  const newEnv = meshEnvPerTest();

  const meshctl = (e: MeshEnv, bin: string, args: string[]) =>
    e.procs.run(process.execPath, [bin, '--api-socket', e.apiSocket, ...args], { timeoutMs: 20_000 });

  it('version, status, stat, services, certs and run talk to a running agent; uninstall says what it lacks', async () => {
    const e = await newEnv();
    e.writeConfig(splitConfig(NET, [1, 1]));
    await e.startAgent();
    const tree = e.tempDir('tree');
    const bin = treeWithoutAddon(tree);
    // The copy really has no addon: importing @mesh/bpf there fails as in a clone that never built it.
    expect(lstatSync(join(tree, 'packages/bpf/dist')).isDirectory()).toBe(true);
    expect(existsSync(join(tree, 'packages/bpf/prebuilds'))).toBe(false);
    const probe = await e.procs.run(process.execPath, ['--input-type=module', '-e', "await import('@mesh/bpf')"], { timeoutMs: 20_000, cwd: join(tree, 'apps/agent') });
    expect(probe.code).not.toBe(0);
    expect(probe.stderr).toMatch(/@mesh\/bpf: the native addon is missing at .*\/packages\/bpf\/prebuilds\//);

    const version = await meshctl(e, bin, ['version']);
    expect(version.stderr).toBe('');
    expect(version.stdout).toBe(`meshctl ${(JSON.parse(readFileSync(join(REPO, 'apps/agent/package.json'), 'utf8')) as { version: string }).version}\n`);
    expect(version.code).toBe(0);

    const status = await meshctl(e, bin, ['status']);
    expect(status.stderr).toBe('');
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/: ready\n/);
    expect(status.stdout).toMatch(/split_services\s+3\s+\d+/);
    const statusJson = JSON.parse((await meshctl(e, bin, ['status', '--json'])).stdout) as { pinRoot: string; config: { generation: number } };
    expect([statusJson.pinRoot, statusJson.config.generation]).toEqual([e.pinRoot, 1]);

    const stat = await meshctl(e, bin, ['stat', '--window', '5']);
    expect(stat.stderr).toBe('');
    expect(stat.code).toBe(0);
    expect(stat.stdout).toMatch(/^last [\d.]+s\n/);

    const services = await meshctl(e, bin, ['services']);
    expect(services.code).toBe(0);
    expect(services.stdout).toMatch(new RegExp(`default/web\\s+${NET.replace('.', '\\.')}\\.1\\.1:8080\\s+TCP\\s+default/web-split`));
    const certs = await meshctl(e, bin, ['certs', '--json']);
    expect([certs.code, certs.stderr]).toEqual([0, '']);
    expect(JSON.parse(certs.stdout)).toBeTypeOf('object');
    const run = await meshctl(e, bin, ['run', '--workload', 'client', '--', '/bin/sh', '-c', 'exit 7']);
    expect([run.code, run.stderr]).toEqual([7, '']);

    // uninstall needs the kernel: it loads the addon when it runs, and says it is missing (nothing removed).
    const uninstall = await meshctl(e, bin, ['uninstall', '--force', '--pin-root', `${e.pinRoot}-none`, '--cgroup-root', `${e.cgroupRoot}-none`]);
    expect(uninstall.code).toBe(1);
    expect(uninstall.stderr).toMatch(/^meshctl uninstall: @mesh\/bpf: the native addon is missing at /);
  });
});
