// subdirInodes reads a directory's subdirectories with their inode numbers from getdents alone; on cgroup v2 an
// inode number is the cgroup id (what the agent names sockets' workloads by), so it must equal cgroupId() and
// stat() for every child, list directories only (not the cgroup's interface files), and name a missing
// directory in its error.
import { mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { createCgroup, describePrivileged } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { cgroupId, subdirInodes } from '../../src/index.js';

describePrivileged('subdirInodes', () => {
  it('gives each child cgroup its cgroup id, directories only', async () => {
    await using cg = await createCgroup('sdi');
    const names = Array.from({ length: 300 }, (_, i) => `w-${i}`);
    for (const n of names) mkdirSync(join(cg.path, n));
    const got = subdirInodes(cg.path);
    expect([...got.keys()].sort()).toEqual([...names].sort());
    for (const n of names) {
      const p = join(cg.path, n);
      expect(got.get(n)).toBe(cgroupId(p));
      expect(got.get(n)).toBe(statSync(p, { bigint: true }).ino);
    }
  });

  it('a directory that is not there is an error naming it', () => {
    expect(() => subdirInodes('/sys/fs/cgroup/no-such-dir-subdir-inodes')).toThrow(/no-such-dir-subdir-inodes/);
  });
});
