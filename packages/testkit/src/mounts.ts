import { readFileSync } from 'node:fs';

export interface MountEntry {
  source: string;
  target: string;
  type: string;
  options: string[];
}

/** Entries of /proc/mounts (or another mounts file), with the kernel's octal escapes (\040 for space) undone. */
export function readMounts(file = '/proc/mounts'): MountEntry[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const [source = '', target = '', type = '', options = ''] = line.split(' ').map(unescapeMountField);
      return { source, target, type, options: options.split(',') };
    });
}

/** Mount point of the first mount of `type` (e.g. 'cgroup2'), or undefined. */
export function findMount(type: string, file?: string): string | undefined {
  return readMounts(file).find((m) => m.type === type)?.target;
}

/** Filesystem type mounted at `target` (the last mount there wins), or undefined. */
export function mountTypeAt(target: string, file?: string): string | undefined {
  return readMounts(file).filter((m) => m.target === target).at(-1)?.type;
}

function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}
