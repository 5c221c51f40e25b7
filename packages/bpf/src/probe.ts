/** Feature probes: what this kernel supports, asked of the kernel itself (never inferred from its version). */
import { release } from 'node:os';

import { type AttachType, attachTypes, type MapType, mapTypes, type ProgramType, programTypes } from './constants.js';
import { NotSupportedError } from './errors.js';
import { helperIds } from './generated/objects.js';
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

/** Something an object needs that this kernel lacks. */
export interface MissingFeature {
  kind: 'program type' | 'attach type' | 'map type' | 'helper';
  /** e.g. 'bpf_set_retval', 'cgroup_inet4_getpeername', 'sk_storage'. */
  name: string;
  /** The programs (or maps) of the object that need it. */
  users: string[];
}

/** What missingFeatures reads of an ObjectSpec; structural, so probe.ts (which link.ts uses) does not import object.ts. */
export interface FeatureNeeds {
  readonly programs: readonly { name: string; type: string; attachType: string | undefined; autoload: boolean; helpers: readonly number[] }[];
  readonly maps: readonly { name: string; type: string; internal: boolean }[];
}

const helperNames = new Map<number, string>(Object.entries(helperIds).map(([name, id]) => [id, name]));
const probed = new Map<string, boolean>();
const probeOnce = (key: string, probe: () => boolean): boolean => {
  let v = probed.get(key);
  if (v === undefined) probed.set(key, (v = probe()));
  return v;
};

/**
 * What the programs and maps of `spec` need that this kernel lacks, asked of the kernel: each program's type,
 * its attach type (a program of that type must load for it) and every helper it calls (for its type and attach
 * type), each map's type. A helper call the program guards with a CO-RE check (it loads without the helper) is
 * listed too: which needs have a fallback is the caller's to know. Probes are cached per process.
 */
export function missingFeatures(spec: FeatureNeeds): MissingFeature[] {
  const f = features();
  const out = new Map<string, MissingFeature>();
  const add = (kind: MissingFeature['kind'], name: string, user: string) => {
    const key = `${kind} ${name}`;
    const m = out.get(key) ?? { kind, name, users: [] };
    m.users.push(user);
    out.set(key, m);
  };
  for (const p of spec.programs) {
    if (!p.autoload) continue;
    const type = programTypes.byName[p.type as ProgramType];
    if (type === undefined || !f.programTypes[p.type as ProgramType]) {
      add('program type', p.type, p.name);
      continue;
    }
    const attach = p.attachType === undefined ? undefined : attachTypes.byName[p.attachType as AttachType];
    if (attach !== undefined && !probeOnce(`attach ${type} ${attach}`, () => native.probeAttachType(type, attach))) {
      add('attach type', p.attachType!, p.name);
      continue;
    }
    for (const h of p.helpers) {
      if (!probeOnce(`helper ${type} ${attach} ${h}`, () => native.probeHelper(type, h, attach) === 1)) {
        add('helper', `bpf_${helperNames.get(h) ?? `helper_${h}`}`, p.name);
      }
    }
  }
  for (const m of spec.maps) {
    if (!m.internal && !f.mapTypes[m.type as MapType]) add('map type', m.type, m.name);
  }
  return [...out.values()];
}
