// Feature probes agree with what the kernel actually does.
import { describePrivileged } from '@mesh/testkit';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

import { BpfMap, codec as c, embedded, features, missingFeatures, NotSupportedError, ObjectSpec, requireFeatures, supportsHelper } from '../../src/index.js';

const testdata = fileURLToPath(new URL('../../../../build/bpf/testdata/', import.meta.url));

describePrivileged('feature probes', () => {
  it('report every program and map type the mesh uses as supported', () => {
    const f = features();
    for (const t of ['sched_cls', 'cgroup_skb', 'cgroup_sock_addr', 'sock_ops', 'sk_msg', 'sk_skb'] as const) {
      expect(f.programTypes[t], t).toBe(true);
    }
    for (const t of ['hash', 'lru_hash', 'array', 'percpu_array', 'percpu_hash', 'lpm_trie', 'sockhash', 'sockmap', 'sk_storage', 'ringbuf'] as const) {
      expect(f.mapTypes[t], t).toBe(true);
    }
    expect(f.programTypes.unspec).toBe(false);
    expect(f.libbpf).toMatch(/^1\.\d+$/);
  });

  it('a map type reported as supported can be created; requireFeatures passes for it', () => {
    expect(features().mapTypes.bloom_filter).toBe(true);
    using m = BpfMap.create({ type: 'bloom_filter', maxEntries: 16 }, { key: c.none, value: c.u32 });
    expect(m.type).toBe('bloom_filter');
    expect(() => requireFeatures({ mapTypes: ['ringbuf', 'sk_storage'], programTypes: ['sk_msg'] })).not.toThrow();
  });

  it('attach modes match the kernel release: TCX from 6.6, sockmap links from 6.10', () => {
    const f = features();
    const [maj, min] = f.kernelRelease.split('.').map(Number) as [number, number];
    const atLeast = (a: number, b: number) => maj > a || (maj === a && min >= b);
    expect(f.attach.tcx).toBe(atLeast(6, 6));
    expect(f.attach.sockmapLink).toBe(atLeast(6, 10));
    expect(f.attach.cgroupLink).toBe(true);
  });

  it('requireFeatures names what is missing', () => {
    const f = features();
    const missing = (Object.keys(f.programTypes) as (keyof typeof f.programTypes)[]).find((t) => t !== 'unspec' && !f.programTypes[t]);
    if (missing === undefined) return; // every type present: nothing to name
    expect(() => requireFeatures({ programTypes: [missing] })).toThrow(NotSupportedError);
    expect(() => requireFeatures({ programTypes: [missing] })).toThrow(new RegExp(`program type ${missing}`));
  });

  it('helper probes: msg_redirect_hash is callable from sk_msg only; sk_storage_get from sockops', () => {
    const BPF_FUNC_msg_redirect_hash = 71;
    const BPF_FUNC_sk_storage_get = 107;
    expect(supportsHelper('sk_msg', BPF_FUNC_msg_redirect_hash)).toBe(true);
    expect(supportsHelper('sched_cls', BPF_FUNC_msg_redirect_hash)).toBe(false);
    expect(supportsHelper('sock_ops', BPF_FUNC_sk_storage_get)).toBe(true);
  });

  it('missingFeatures: every program the agent loads has what it needs here; a helper outside its program type is named', () => {
    for (const name of [embedded.split.name, embedded.http.name]) {
      using spec = ObjectSpec.embedded(name);
      expect(missingFeatures(spec), name).toEqual([]);
    }
    using spec = ObjectSpec.file(`${testdata}helper_elsewhere.bpf.o`);
    expect(missingFeatures(spec)).toEqual([{ kind: 'helper', name: 'bpf_set_retval', users: ['retval_from_tc'] }]);
  });
});
