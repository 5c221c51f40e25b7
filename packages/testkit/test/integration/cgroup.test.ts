import { existsSync, mkdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import {
  cgroup2Mount,
  cgroupOf,
  createCgroup,
  createNetns,
  describePrivileged,
  inNetns,
  pidAlive,
  runInCgroup,
  waitForLine,
  type Cgroup,
} from '../../src/index.js';

const made: string[] = [];

async function cgroup(prefix: string): Promise<Cgroup> {
  const cg = await createCgroup(prefix);
  made.push(cg.path);
  return cg;
}

describePrivileged('cgroups', () => {
  // Checked after every test here, failing ones included: nothing they made may be left.
  afterAll(() => {
    for (const path of made) expect(existsSync(path)).toBe(false);
  });

  it('finds the cgroup2 mount from /proc/mounts', () => {
    const mount = cgroup2Mount();
    expect(readFileSync('/proc/mounts', 'utf8')).toContain(` ${mount} cgroup2 `);
    expect(existsSync(join(mount, 'cgroup.procs'))).toBe(true);
  });

  it('spawns a child that is inside the cgroup, and leaves the runner where it was', async () => {
    const runnerBefore = cgroupOf('self');
    const cg = await cgroup('tkc');
    expect(cg.path.startsWith(cgroup2Mount())).toBe(true);
    const sleeper = cg.spawn('sleep', ['60']);
    // The wrapper shell execs sleep after joining, so the pid is sleep's once it has run.
    await expect.poll(() => readFileSync(`/proc/${sleeper.pid}/comm`, 'utf8').trim(), { timeout: 5000 }).toBe('sleep');
    expect(cgroupOf(sleeper.pid!)).toBe(cg.relPath);
    expect(cg.procs()).toEqual([sleeper.pid]);
    expect(cgroupOf('self')).toBe(runnerBefore);

    await cg.close();
    expect(sleeper.signalCode).toBe('SIGTERM');
    expect(existsSync(cg.path)).toBe(false);
    await cg.close(); // idempotent
    expect(() => cg.spawn('true')).toThrow(TypeError);
  });

  it('runs a command in the cgroup to completion', async () => {
    await using cg = await cgroup('tkr');
    const r = await runInCgroup(cg, 'cat', ['/proc/self/cgroup'], { timeoutMs: 5000 });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`0::${cg.relPath}\n`);
    const echoed = await runInCgroup(cg, 'cat', [], { timeoutMs: 5000, input: 'in' });
    expect(echoed.stdout).toBe('in');
  });

  it('passes awkward arguments through untouched', async () => {
    await using cg = await cgroup('tka');
    const r = await cg.run('printf', ['%s|', '$HOME', '"; exit 9', 'a b']);
    expect(r).toMatchObject({ code: 0, stdout: '$HOME|"; exit 9|a b|' });
  });

  it('kills a command at its hard timeout', async () => {
    await using cg = await cgroup('tkt');
    const started = Date.now();
    await expect(runInCgroup(cg, 'sleep', ['30'], { timeoutMs: 200 })).rejects.toMatchObject({ reason: 'timeout' });
    expect(Date.now() - started).toBeLessThan(3000);
    expect(cg.procs()).toEqual([]);
  });

  it('empties and removes the cgroup even when processes escaped their group or made sub-cgroups', async () => {
    const cg = await cgroup('tke');
    const out = await cg.run('sh', ['-c', 'setsid sleep 60 >/dev/null 2>&1 & echo $!']);
    const escaped = Number(out.stdout.trim());
    mkdirSync(join(cg.path, 'child'));
    expect(cg.procs()).toContain(escaped);
    await cg.close();
    expect(pidAlive(escaped)).toBe(false);
    expect(existsSync(cg.path)).toBe(false);
  });

  it('composes with a network namespace', async () => {
    await using ns = await createNetns('tkn');
    await using cg = await cgroup('tkn');
    const [cmd, args] = inNetns(ns, 'sh', ['-c', 'echo ready; exec sleep 60']);
    const child = cg.spawn(cmd, args);
    await waitForLine(child, /ready/, 5000);
    expect(cgroupOf(child.pid!)).toBe(cg.relPath);
    // The bind mount at ns.path and the child's network namespace are the same nsfs inode.
    expect(readlinkSync(`/proc/${child.pid}/ns/net`)).toBe(`net:[${statSync(ns.path).ino}]`);
  });
});
