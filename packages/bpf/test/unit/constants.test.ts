// The TS enumeration tables against the kernel's own UAPI header on the build machine (an independent source
// for every value it has; newer values must extend it, never renumber it).
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

import { attachTypes, expectedAttachType, linkTypes, mapTypes, programTypes } from '../../src/constants.js';

const header = '/usr/include/linux/bpf.h';

function enumFromHeader(text: string, name: string, prefix: string): string[] {
  const body = new RegExp(`enum ${name} \\{([\\s\\S]*?)\\n\\};`).exec(text)?.[1];
  if (!body) throw new Error(`enum ${name} not found in ${header}`);
  const out: string[] = [];
  for (const line of body.split('\n')) {
    const m = /^\s*(BPF_\w+)\s*(?:=\s*(\d+))?\s*,/.exec(line);
    if (!m) continue;
    if (m[2] !== undefined && Number(m[2]) !== out.length) continue; // aliases such as BPF_MAP_TYPE_CGROUP_STORAGE_DEPRECATED
    if (/^__MAX/.test(m[1]!)) break;
    out.push(m[1]!.replace(prefix, '').toLowerCase());
  }
  return out;
}

describe.runIf(existsSync(header))('UAPI enumerations', () => {
  const text = existsSync(header) ? readFileSync(header, 'utf8') : '';
  it.each([
    ['bpf_prog_type', 'BPF_PROG_TYPE_', programTypes.names],
    ['bpf_map_type', 'BPF_MAP_TYPE_', mapTypes.names],
    ['bpf_link_type', 'BPF_LINK_TYPE_', linkTypes.names],
    ['bpf_attach_type', 'BPF_', attachTypes.names],
  ] as const)('enum %s is a prefix of ours', (name, prefix, ours) => {
    const theirs = enumFromHeader(text, name, prefix).map((n) => n.replace(/_deprecated$/, ''));
    expect(theirs.length).toBeGreaterThan(8);
    expect(ours.slice(0, theirs.length)).toEqual(theirs);
  });
});

describe('expectedAttachType', () => {
  it('reads 0 as none except for cgroup_skb, where it is ingress', () => {
    expect(expectedAttachType(programTypes.byName.sched_cls, 0)).toBeUndefined();
    expect(expectedAttachType(programTypes.byName.cgroup_skb, 0)).toBe('cgroup_inet_ingress');
    expect(expectedAttachType(programTypes.byName.sock_ops, 3)).toBe('cgroup_sock_ops');
    expect(attachTypes.byName.tcx_ingress).toBe(46);
  });
});
