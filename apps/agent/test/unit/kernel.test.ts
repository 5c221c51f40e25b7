// What the agent says about a kernel that lacks features, from what the probes report (a kernel before 5.18
// cannot be booted here: the verdict is checked on the probes' output).
import { describe, expect, it } from 'vitest';

import { kernelVerdict, MIN_KERNEL } from '../../src/kernel.js';

const retval = { kind: 'helper' as const, name: 'bpf_set_retval', users: ['split_connect4', 'split_connect6'] };
const getpeername = { kind: 'attach type' as const, name: 'cgroup_inet4_getpeername', users: ['split_getpeername4'] };

describe('kernelVerdict', () => {
  it('nothing missing: nothing to say', () => {
    expect(kernelVerdict('6.1.0-41-amd64', [])).toEqual({});
  });

  it('bpf_set_retval missing (before 5.18): one warning naming the kernel, the feature and the fallback; no error', () => {
    const v = kernelVerdict('5.15.0', [retval]);
    expect(v.error).toBeUndefined();
    expect(v.warning?.fields).toEqual({
      kernel: '5.15.0',
      minimum: MIN_KERNEL,
      missing: ['helper bpf_set_retval (split_connect4, split_connect6)'],
      fallbacks: ['a connect() to a service with no backend fails with EPERM instead of ECONNREFUSED'],
    });
  });

  it('a feature with no fallback is an error naming the kernel, the minimum, the feature and its programs', () => {
    const v = kernelVerdict('5.4.0', [retval, getpeername]);
    expect(v.error).toBe(
      `kernel 5.4.0 cannot run the mesh's programs (documented minimum: Linux ${MIN_KERNEL}): it lacks attach type cgroup_inet4_getpeername (split_getpeername4)`,
    );
    expect(v.warning?.fields.missing).toEqual(['helper bpf_set_retval (split_connect4, split_connect6)']);
  });
});
