// cgroupOfProcess finds the cgroup v2 directory a process runs in, also when the reader runs in a cgroup namespace
// of its own (as every container does): there /proc/<pid>/cgroup reads "0::/" for the reader's own directory and
// "0::/../<name>" for a sibling's, neither of which is a path below the mount.
import { setTimeout as sleep } from 'node:timers/promises';

import { createCgroup, describePrivileged } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { cgroup2Mount, cgroupOfProcess } from '../../src/index.js';

const SYS = new URL('../../dist/index.js', import.meta.url).href;

describePrivileged('cgroupOfProcess', () => {
  it('outside a namespace: the directory /proc names; a process that is gone: undefined', async () => {
    await using cg = await createCgroup('cop');
    const child = cg.spawn('sleep', ['30']);
    await sleep(100);
    expect(cgroupOfProcess(child.pid!)).toBe(cg.path);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(cgroupOfProcess(child.pid!)).toBeUndefined();
  });

  it('from a cgroup namespace: its own directory ("/") and a sibling\'s ("/../b") found below the mount', async () => {
    await using a = await createCgroup('cop-a');
    await using b = await createCgroup('cop-b');
    const other = b.spawn('sleep', ['30']);
    await sleep(100);
    const script = `import(${JSON.stringify(SYS)}).then((m) => console.log(JSON.stringify({ seen: require('fs').readFileSync('/proc/${other.pid}/cgroup', 'utf8').split('\\n').find((l) => l.startsWith('0::')), self: m.cgroupOfProcess(process.pid), other: m.cgroupOfProcess(${other.pid}) })))`;
    const r = await a.run('unshare', ['--cgroup', process.execPath, '-e', script], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    const got = JSON.parse(r.stdout) as { seen: string; self: string; other: string };
    expect(got.seen).toBe(`0::/../${b.name}`);
    expect(got).toMatchObject({ self: a.path, other: b.path });
    expect(a.path.startsWith(cgroup2Mount())).toBe(true);
  });
});
