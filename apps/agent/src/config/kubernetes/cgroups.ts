/**
 * Where kubelet puts a pod's cgroup, found from the pod's UID. Kubelet owns these directories: the mesh only
 * looks for them. Both cgroup drivers and both runtimes are recognised:
 *
 *   systemd:  kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid, - → _>.slice/
 *             (Guaranteed: kubepods.slice/kubepods-pod<uid>.slice/)
 *   cgroupfs: kubepods/<qos>/pod<uid>/            (Guaranteed: kubepods/pod<uid>/)
 *
 * with containers below as `cri-containerd-<id>.scope` (containerd) or `crio-<id>.scope` (CRI-O). The
 * pod-level directory is what the mesh attributes sockets to; containers are reported for status only.
 */
import { readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';

export type CgroupDriver = 'systemd' | 'cgroupfs';
export type QosClass = 'Guaranteed' | 'Burstable' | 'BestEffort';
export type ContainerRuntime = 'containerd' | 'cri-o';

export interface PodCgroup {
  /** The pod's directory, relative to the root the finder searches (the agent's cgroup root). */
  path: string;
  driver: CgroupDriver;
  qos: QosClass;
  /** Runtime of the containers found below, when any are there yet. */
  runtime?: ContainerRuntime;
  containers: string[];
}

const QOS_CLASSES: QosClass[] = ['Guaranteed', 'Burstable', 'BestEffort'];
// A UID goes into a path: only what Kubernetes UIDs are made of, so nothing can climb out of the root.
export const POD_UID = /^[0-9A-Za-z][0-9A-Za-z-]{0,127}$/;

/** The pod's directory under the kubepods directory of each driver, for one QoS class. */
function podDirs(uid: string, qos: QosClass): { driver: CgroupDriver; path: string }[] {
  const u = uid.replaceAll('-', '_');
  const q = qos.toLowerCase();
  return qos === 'Guaranteed'
    ? [{ driver: 'systemd', path: `kubepods-pod${u}.slice` }, { driver: 'cgroupfs', path: `pod${uid}` }]
    : [{ driver: 'systemd', path: `kubepods-${q}.slice/kubepods-${q}-pod${u}.slice` }, { driver: 'cgroupfs', path: `${q}/pod${uid}` }];
}

/**
 * Every place kubelet may have put the pod, relative to `root`, most likely first (the pod's own QoS class
 * first). `root` is the kubepods directory itself (`…/kubepods.slice` or `…/kubepods`, or a directory laid
 * out like one) or a directory that holds it, such as the cgroup2 mount.
 */
export function podCgroupCandidates(root: string, uid: string, qos?: QosClass): { driver: CgroupDriver; qos: QosClass; path: string }[] {
  if (!POD_UID.test(uid)) throw new TypeError(`pod UID ${JSON.stringify(uid)}: expected letters, digits and -`);
  const base = basename(root);
  const prefix = (driver: CgroupDriver): string[] => {
    if (base === 'kubepods.slice') return driver === 'systemd' ? [''] : [];
    if (base === 'kubepods') return driver === 'cgroupfs' ? [''] : [];
    // A directory holding the kubepods one (the cgroup2 mount), or one kubelet was given as its own root.
    return [driver === 'systemd' ? 'kubepods.slice/' : 'kubepods/', ''];
  };
  const order = qos ? [qos, ...QOS_CLASSES.filter((c) => c !== qos)] : QOS_CLASSES;
  return order.flatMap((c) => podDirs(uid, c).flatMap((d) => prefix(d.driver).map((p) => ({ driver: d.driver, qos: c, path: p + d.path }))));
}

const CONTAINER_SCOPES: [RegExp, ContainerRuntime][] = [
  [/^cri-containerd-([0-9a-f]+)\.scope$/, 'containerd'],
  [/^crio-([0-9a-f]+)\.scope$/, 'cri-o'],
];

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** The pod's cgroup under `root`, or undefined when kubelet has not made it (yet). */
export function findPodCgroup(root: string, uid: string, qos?: QosClass): PodCgroup | undefined {
  for (const c of podCgroupCandidates(root, uid, qos)) {
    const dir = join(root, c.path);
    if (!isDir(dir)) continue;
    const containers: string[] = [];
    let runtime: ContainerRuntime | undefined;
    let entries: string[] = [];
    try {
      entries = readdirSync(dir);
    } catch {
      // removed between the stat and the read: still the pod's place
    }
    for (const e of entries) {
      for (const [re, rt] of CONTAINER_SCOPES) {
        const m = re.exec(e);
        if (m) {
          containers.push(m[1]!);
          runtime = rt;
        }
      }
    }
    return { path: c.path, driver: c.driver, qos: c.qos, ...(runtime && { runtime }), containers: containers.sort() };
  }
  return undefined;
}
