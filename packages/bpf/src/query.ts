import { type AttachType, attachTypes } from './constants.js';
import { native } from './native.js';

/** The program ids attached to a cgroup at one attach type (BPF_PROG_QUERY: the kernel's own view). */
export function queryCgroup(cgroupPath: string, attachType: AttachType): number[] {
  const t = attachTypes.byName[attachType];
  if (t === undefined) throw new TypeError(`unknown attach type ${JSON.stringify(attachType)}`);
  return native.queryCgroup(cgroupPath, t);
}
