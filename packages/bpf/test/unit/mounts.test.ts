// cgroup2Mount reads the mounts table as the kernel writes it: the first cgroup2 mount, octal escapes undone, a
// clear error when there is none.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { cgroup2Mount } from '../../src/index.js';

describe('cgroup2Mount', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mesh-mounts-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const table = (name: string, text: string) => {
    const file = join(dir, name);
    writeFileSync(file, text);
    return file;
  };

  it('finds the cgroup2 mount of a hybrid host, with escapes undone', () => {
    const file = table(
      'hybrid',
      'sysfs /sys sysfs rw 0 0\ntmpfs /sys/fs/cgroup tmpfs ro 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\ncgroup2 /sys/fs/cgroup/uni\\040fied cgroup2 rw 0 0\n',
    );
    expect(cgroup2Mount(file)).toBe('/sys/fs/cgroup/uni fied');
  });

  it('names the file when no cgroup2 is mounted', () => {
    const file = table('v1only', 'cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n');
    expect(() => cgroup2Mount(file)).toThrow(`no cgroup2 filesystem is mounted (see ${file}): cgroup programs need cgroup v2`);
  });
});
