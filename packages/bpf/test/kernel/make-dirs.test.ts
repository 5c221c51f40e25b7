// makeDirs makes a config's workload cgroups in one call on a pool thread (mkdir -p each): it reports exactly the
// directories it made (missing parents included, ones already there not), leaves the event loop free meanwhile,
// and names the directory it could not make.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { createCgroup, describePrivileged, loopTurnsWhile } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { BpfError, makeDirs } from '../../src/index.js';

describePrivileged('makeDirs', () => {
  it('makes 2,000 cgroups with their missing parents and names exactly those it made', async () => {
    await using cg = await createCgroup('mkd');
    mkdirSync(join(cg.path, 'ns-0'));
    mkdirSync(join(cg.path, 'ns-0', 'w-0'));
    const paths = Array.from({ length: 2000 }, (_, i) => join(cg.path, `ns-${i % 4}`, `w-${i}`));
    let made: string[] = [];
    const turns = await loopTurnsWhile(async () => (made = await makeDirs(paths)));
    // ns-0 and ns-0/w-0 were there; ns-1..3 are made before their first child.
    const expected = [...[1, 2, 3].map((n) => join(cg.path, `ns-${n}`)), ...paths.slice(1)];
    expect([...made].sort()).toEqual(expected.sort());
    for (const n of [1, 2, 3]) expect(made.indexOf(join(cg.path, `ns-${n}`))).toBeLessThan(made.indexOf(join(cg.path, `ns-${n}`, `w-${n}`)));
    for (const p of paths) expect(existsSync(join(p, 'cgroup.procs'))).toBe(true);
    // The kernel took a while (~0.1 ms a cgroup); the event loop turned meanwhile.
    expect(turns).toBeGreaterThan(1);
    // Again: everything is there, nothing is made.
    expect(await makeDirs(paths)).toEqual([]);
  }, 60_000);

  it('rejects naming the directory it could not make; those before it stay', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mesh-mkd-'));
    try {
      const file = join(dir, 'file');
      writeFileSync(file, '');
      const err = await makeDirs([join(dir, 'a'), join(file, 'b'), join(dir, 'c')]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BpfError);
      expect([(err as BpfError).op, (err as BpfError).code]).toEqual(['mkdir', 'ENOTDIR']);
      expect((err as BpfError).message).toContain(join(file, 'b'));
      expect([existsSync(join(dir, 'a')), existsSync(join(dir, 'c'))]).toEqual([true, false]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(() => makeDirs(['ok', 7 as unknown as string])).toThrow(TypeError);
  });
});
