/** Feature probes: what this kernel supports, asked of the kernel itself (never inferred from its version). */
import { release } from 'node:os';

import { type MapType, mapTypes, type ProgramType, programTypes } from './constants.js';
import { NotSupportedError } from './errors.js';
import { native } from './native.js';

export interface Features {
  kernelRelease: string;
  libbpf: string;
  programTypes: Record<ProgramType, boolean>;
  mapTypes: Record<MapType, boolean>;
  attach: {
    /** TCX bpf_links on interfaces (Linux ≥ 6.6). */
    tcx: boolean;
    /** bpf_links for sk_msg/sk_skb on sockmaps (Linux ≥ 6.10); otherwise BPF_PROG_ATTACH is used. */
    sockmapLink: boolean;
    /** bpf_links on cgroups (Linux ≥ 5.7). */
    cgroupLink: boolean;
    /** BPF run-time statistics (BPF_ENABLE_STATS). */
    stats: boolean;
  };
}

let cached: Features | undefined;

/** Probes once per process; needs the privilege to load programs (EPERM otherwise). */
export function features(): Features {
  if (cached) return cached;
  const probe = <T extends string>(names: readonly T[], fn: (i: number) => number) =>
    Object.fromEntries(names.map((n, i) => [n, i > 0 && fn(i) === 1])) as Record<T, boolean>;
  cached = {
    kernelRelease: release(),
    libbpf: native.libbpfVersion,
    programTypes: probe(programTypes.names, (i) => native.probeProgramType(i)),
    mapTypes: probe(mapTypes.names, (i) => native.probeMapType(i)),
    attach: native.probeAttach(),
  };
  return cached;
}

/** Throws NotSupportedError naming every program or map type in the list this kernel lacks. */
export function requireFeatures(want: { programTypes?: ProgramType[]; mapTypes?: MapType[] }): void {
  const f = features();
  const missing = [
    ...(want.programTypes ?? []).filter((t) => !f.programTypes[t]).map((t) => `program type ${t}`),
    ...(want.mapTypes ?? []).filter((t) => !f.mapTypes[t]).map((t) => `map type ${t}`),
  ];
  if (missing.length) throw new NotSupportedError(missing.join(', '), `kernel ${f.kernelRelease} lacks them`);
}

/** Whether a BPF helper (by its number in enum bpf_func_id) is callable from a program type. */
export function supportsHelper(programType: ProgramType, helperId: number): boolean {
  return native.probeHelper(programTypes.byName[programType], helperId) === 1;
}
