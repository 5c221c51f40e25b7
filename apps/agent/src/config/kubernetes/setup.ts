/** What `mesh-agent --kubeconfig PATH` or `--kubernetes` needs beyond the flags: the node's name and the
 *  kubepods directory, found as a node has them. */
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

import { isDnsSubdomain } from '@mesh/split';

/** The node this agent serves: --node-name, else NODE_NAME (the DaemonSet sets it from spec.nodeName), else
 *  the host name (which is the node's name unless kubelet was told otherwise). */
export function nodeName(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const name = flag ?? env.NODE_NAME ?? hostname();
  if (!isDnsSubdomain(name)) {
    throw new Error(`node name ${JSON.stringify(name)} is not a DNS subdomain: pass --node-name`);
  }
  return name;
}

/** The kubepods directory under the cgroup2 mount: kubepods.slice (systemd driver) or kubepods (cgroupfs). */
export function kubepodsRoot(cgroup2: string): string {
  for (const dir of ['kubepods.slice', 'kubepods']) {
    const p = join(cgroup2, dir);
    if (existsSync(p)) return p;
  }
  throw new Error(`neither ${join(cgroup2, 'kubepods.slice')} nor ${join(cgroup2, 'kubepods')} exists (is kubelet running on this node?): pass --cgroup-root`);
}
