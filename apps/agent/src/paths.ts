/** Where the mesh lives on a node. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { cgroup2Mount } from '@mesh/bpf';

export { cgroup2Mount };

export { DEFAULT_API_SOCKET, DEFAULT_PIN_ROOT, RUN_DIR, defaultApiSocket } from './api-socket.js';

export const DEFAULT_API = '127.0.0.1:15090';
export const DEFAULT_CGROUP_NAME = 'mesh';

/** A group name (from /etc/group) or number → its id. */
export function groupId(group: string): number {
  if (/^\d+$/.test(group)) return Number(group);
  for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new Error(`no group ${JSON.stringify(group)} in /etc/group`);
}

export const defaultCgroupRoot = () => join(cgroup2Mount(), DEFAULT_CGROUP_NAME);

/** "127.0.0.1:15090" or "[::1]:15090" → host and port. */
export function parseHostPort(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 0 || port > 65535) throw new Error(`expected HOST:PORT (e.g. ${DEFAULT_API}), got ${JSON.stringify(s)}`);
  return { host: (m[1] ?? m[2])!, port };
}
