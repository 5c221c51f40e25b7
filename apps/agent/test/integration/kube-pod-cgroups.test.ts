// Pod cgroups found from the pod UID, in real cgroup v2 directories laid out as kubelet lays them out: both
// cgroup drivers, both runtimes, every QoS class. The directories live under a scratch cgroup, removed after.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { type Cgroup, createCgroup, describePrivileged } from '@mesh/testkit';

import { type CgroupDriver, type ContainerRuntime, findPodCgroup, podCgroupCandidates, type QosClass } from '../../src/config/kubernetes/cgroups.js';

const UID = '5f3c2a1b-9d8e-4f70-a6b5-c4d3e2f1a0b9';
const CONTAINER = 'a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90';

/** Where kubelet puts the pod, written out by hand per layout (not computed by the code under test). */
const LAYOUTS: Record<CgroupDriver, Record<QosClass, string>> = {
  systemd: {
    Burstable: 'kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5f3c2a1b_9d8e_4f70_a6b5_c4d3e2f1a0b9.slice',
    BestEffort: 'kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod5f3c2a1b_9d8e_4f70_a6b5_c4d3e2f1a0b9.slice',
    Guaranteed: 'kubepods.slice/kubepods-pod5f3c2a1b_9d8e_4f70_a6b5_c4d3e2f1a0b9.slice',
  },
  cgroupfs: {
    Burstable: 'kubepods/burstable/pod5f3c2a1b-9d8e-4f70-a6b5-c4d3e2f1a0b9',
    BestEffort: 'kubepods/besteffort/pod5f3c2a1b-9d8e-4f70-a6b5-c4d3e2f1a0b9',
    Guaranteed: 'kubepods/pod5f3c2a1b-9d8e-4f70-a6b5-c4d3e2f1a0b9',
  },
};
const SCOPE: Record<ContainerRuntime, string> = { containerd: `cri-containerd-${CONTAINER}.scope`, 'cri-o': `crio-${CONTAINER}.scope` };

let scratch: Cgroup | undefined;
afterEach(async () => {
  await scratch?.close(); // removes the kubepods tree built below it
  scratch = undefined;
});

describe('pod cgroup candidates', () => {
  it('refuses a UID that could leave the root', () => {
    expect(() => podCgroupCandidates('/x', '../../etc')).toThrow(/pod UID "\.\.\/\.\.\/etc"/);
  });
});

describePrivileged('pod cgroup discovery in real cgroup v2 directories', () => {
  const cases: [CgroupDriver, ContainerRuntime, QosClass][] = [
    ['systemd', 'containerd', 'Burstable'],
    ['systemd', 'cri-o', 'Burstable'],
    ['cgroupfs', 'containerd', 'BestEffort'],
    ['cgroupfs', 'cri-o', 'Burstable'],
    ['systemd', 'containerd', 'Guaranteed'],
    ['cgroupfs', 'cri-o', 'Guaranteed'],
  ];
  for (const [driver, runtime, qos] of cases) {
    it(`${driver} driver, ${runtime}, ${qos}: the pod-level directory, from the cgroup2 root and from the kubepods directory`, async () => {
      scratch = await createCgroup('kpc');
      const pod = LAYOUTS[driver][qos];
      // Created step by step as cgroup directories (mkdir in cgroupfs makes a cgroup); the container below.
      mkdirSync(join(scratch.path, pod, SCOPE[runtime]), { recursive: true });
      // Not yet told the QoS class (a pod whose status has none yet): every class is looked at.
      const found = findPodCgroup(scratch.path, UID);
      expect(found).toEqual({ path: pod, driver, qos, runtime, containers: [CONTAINER] });
      // The agent's cgroup root may be the kubepods directory itself: the path is then relative to it.
      const kubepods = pod.split('/')[0]!;
      const inner = findPodCgroup(join(scratch.path, kubepods), UID, qos);
      expect(inner?.path).toBe(pod.slice(kubepods.length + 1));
      expect(inner?.driver).toBe(driver);
      // A real cgroup: the kernel made its interface files.
      expect(existsSync(join(scratch.path, pod, 'cgroup.procs'))).toBe(true);
    });
  }

  it('a pod whose cgroup kubelet has not made yet is not found; once made, it is, before any container', async () => {
    scratch = await createCgroup('kpc');
    mkdirSync(join(scratch.path, 'kubepods.slice', 'kubepods-burstable.slice'), { recursive: true });
    expect(findPodCgroup(scratch.path, UID, 'Burstable')).toBeUndefined();
    mkdirSync(join(scratch.path, LAYOUTS.systemd.Burstable));
    expect(findPodCgroup(scratch.path, UID, 'Burstable')).toEqual({ path: LAYOUTS.systemd.Burstable, driver: 'systemd', qos: 'Burstable', containers: [] });
  });

  it('another pod\'s directory is not taken for this one', async () => {
    scratch = await createCgroup('kpc');
    mkdirSync(join(scratch.path, 'kubepods', 'burstable', 'pod0e0e0e0e-1111-2222-3333-444444444444'), { recursive: true });
    expect(findPodCgroup(scratch.path, UID)).toBeUndefined();
  });
});
