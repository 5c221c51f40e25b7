import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { findMount, mountTypeAt, readMounts } from '../../src/index.js';

describe('mounts', () => {
  it('reads /proc/mounts lines, undoing octal escapes', () => {
    const dir = mkdtempSync(join(tmpdir(), 'testkit-mounts-'));
    try {
      const file = join(dir, 'mounts');
      writeFileSync(file, [
        'tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0',
        'cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0',
        'none /mnt/with\\040space bpf rw 0 0',
        'bpf /sys/fs/bpf tmpfs rw 0 0',
        'bpf /sys/fs/bpf bpf rw,relatime 0 0',
        '',
      ].join('\n'));
      expect(readMounts(file)[2]).toEqual({ source: 'none', target: '/mnt/with space', type: 'bpf', options: ['rw'] });
      expect(findMount('cgroup2', file)).toBe('/sys/fs/cgroup/unified');
      expect(findMount('nfs', file)).toBeUndefined();
      expect(mountTypeAt('/sys/fs/bpf', file)).toBe('bpf'); // the last mount on a point is the visible one
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
