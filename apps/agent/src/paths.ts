/** Where the mesh lives on a node, and how to find the cgroup v2 hierarchy. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const DEFAULT_API = '127.0.0.1:15090';
export const DEFAULT_PIN_ROOT = '/sys/fs/bpf/mesh';
export const DEFAULT_CGROUP_NAME = 'mesh';

/** Mount point of the cgroup v2 hierarchy, from /proc/mounts (/sys/fs/cgroup, or …/unified on hybrid hosts). */
export function cgroup2Mount(): string {
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const [, target, type] = line.split(' ');
    if (type === 'cgroup2' && target) return target.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  }
  throw new Error('no cgroup2 filesystem is mounted (see /proc/mounts): the mesh needs cgroup v2');
}

export const defaultCgroupRoot = () => join(cgroup2Mount(), DEFAULT_CGROUP_NAME);

/** The pin layout under the pin root: one directory of maps and one of links per program family. */
export const pinLayout = (root: string) => ({
  maps: (family: string) => join(root, 'maps', family),
  links: (family: string) => join(root, 'links', family),
});

/** "127.0.0.1:15090" or "[::1]:15090" → host and port. */
export function parseHostPort(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 0 || port > 65535) throw new Error(`expected HOST:PORT (e.g. ${DEFAULT_API}), got ${JSON.stringify(s)}`);
  return { host: (m[1] ?? m[2])!, port };
}
