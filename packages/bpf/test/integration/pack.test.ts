// The packed @mesh/bpf installs into an empty directory and test-runs a program with no compiler,
// cmake or clang on PATH: the tarball carries the compiled addon and the mesh's objects, and none of the test
// programs (bpf/testprogs), which tests load from build/bpf/testprogs/ with ObjectSpec.file.
import { describePrivileged, run, runChecked } from '@mesh/testkit';
import { testprogFile, testprogs } from '@mesh/testkit/testprogs';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

const pkgDir = fileURLToPath(new URL('../../', import.meta.url));
const repo = fileURLToPath(new URL('../../../../', import.meta.url));

describePrivileged('npm pack of @mesh/bpf', () => {
  let work: string;
  let tarball: string;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'mesh-pack-'));
    await runChecked('npx', ['--no-install', 'pnpm', 'pack', '--pack-destination', work], { cwd: pkgDir, timeoutMs: 60_000 }).catch(
      // pnpm is reached through npx in this repo (scripts/lib.sh); fall back to the pinned version.
      () => runChecked('npx', ['-y', 'pnpm@10.34.8', 'pack', '--pack-destination', work], { cwd: pkgDir, timeoutMs: 120_000 }),
    );
    tarball = join(work, readdirSync(work).find((f) => f.endsWith('.tgz'))!);
    // PATH holds node alone: no cc, c++, make, cmake, clang, python3.
    const bin = join(work, 'bin');
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, 'node'));
    env = { HOME: work, PATH: bin, npm_config_cache: join(work, 'npm-cache'), npm_config_update_notifier: 'false' };
  }, 180_000);
  afterAll(() => work && rmSync(work, { recursive: true, force: true }));

  it('ships the addon, the objects, JS and types, and no sources or tests', async () => {
    const { stdout } = await runChecked('tar', ['tzf', tarball]);
    const files = stdout.trim().split('\n');
    expect(files).toContain('package/prebuilds/linux-x64/mesh_bpf.node');
    expect(files).toContain('package/prebuilds/bpf/split.bpf.o');
    expect(files).toContain('package/prebuilds/bpf/http.bpf.o');
    const testprogSources = readdirSync(join(repo, 'bpf/testprogs')).map((f) => f.replace(/\.bpf\.c$/, ''));
    expect(testprogSources.length).toBeGreaterThan(0);
    expect(files.filter((f) => testprogSources.some((t) => f.endsWith(`/${t}.bpf.o`)))).toEqual([]);
    // Nor inside the addon: its embedded ELF images carry their object names.
    const addon = readFileSync(join(pkgDir, 'prebuilds/linux-x64/mesh_bpf.node'));
    expect(testprogSources.filter((t) => addon.includes(`${t}__elf_bytes`))).toEqual([]);
    expect(files).toContain('package/dist/index.js');
    expect(files).toContain('package/dist/index.d.ts');
    expect(files).toContain('package/README.md');
    expect(files.filter((f) => /\/(src|test)\/|\.map$|\.ts$/.test(f) && !f.endsWith('.d.ts'))).toEqual([]);
  });

  it('installs offline into an empty directory and test-runs a program, with no toolchain on PATH', async () => {
    const app = join(work, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    for (const tool of ['cc', 'gcc', 'g++', 'make', 'cmake', 'clang', 'python3']) {
      expect((await run('/bin/sh', ['-c', `command -v ${tool}`], { env })).code, tool).not.toBe(0);
    }
    const npmCli = realpathSync(join(process.execPath, '../../lib/node_modules/npm/bin/npm-cli.js'));
    const install = await run(process.execPath, [npmCli, 'install', '--offline', '--no-audit', '--no-fund', tarball], {
      cwd: app,
      env,
      timeoutMs: 120_000,
    });
    expect(install.code, install.stderr).toBe(0);
    writeFileSync(
      join(app, 'main.js'),
      // A test program from the build tree, as a user loads their own object: the tarball holds none.
      `import { ObjectSpec, codec } from '@mesh/bpf';
       const names = ${JSON.stringify(testprogs.tc_filter)};
       const o = ObjectSpec.file(${JSON.stringify(testprogFile(testprogs.tc_filter.name))}).load();
       const pkt = Buffer.alloc(64); pkt.writeUInt16BE(0x0806, 12); // ARP: not IP
       const r = o.program(names.programs.tc_filter).testRun(pkt, { repeat: 10 });
       const v = o.map(names.maps.verdicts, { key: codec.u32, value: codec.u64 }).get(3);
       console.log(JSON.stringify({ retval: r.retval, notIp: String(v) }));
       o.close();`,
    );
    const r = await run(process.execPath, ['main.js'], { cwd: app, env });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ retval: 0, notIp: '10' });
  }, 180_000);
});
