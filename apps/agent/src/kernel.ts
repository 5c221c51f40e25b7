/** The kernel the mesh needs, asked of the kernel itself (feature probes, never its version number) before the
 *  datapath is touched: what is missing with a fallback is said once at start-up, what is missing without one
 *  stops the agent with a message naming it (instead of a verifier log, in a restart loop). */
import { release } from 'node:os';

import { embedded, type MissingFeature, missingFeatures, ObjectSpec } from '@mesh/bpf';

import type { Logger } from './log.js';

/** The documented minimum (docs/agent.md): the first release with everything the programs use. */
export const MIN_KERNEL = '5.18';

/** What the programs do instead when the kernel lacks a feature they can do without. */
const FALLBACKS: Record<string, string> = {
  'helper bpf_set_retval': 'a connect() to a service with no backend fails with EPERM instead of ECONNREFUSED',
};

const describe = (m: MissingFeature) => `${m.kind} ${m.name} (${m.users.join(', ')})`;

export interface KernelVerdict {
  /** Features missing with a fallback: one warning line. */
  warning?: { msg: string; fields: Record<string, unknown> };
  /** Features missing without one: the agent cannot run. */
  error?: string;
}

export function kernelVerdict(kernel: string, missing: MissingFeature[]): KernelVerdict {
  if (missing.length === 0) return {};
  const degraded = missing.filter((m) => FALLBACKS[`${m.kind} ${m.name}`] !== undefined);
  const fatal = missing.filter((m) => FALLBACKS[`${m.kind} ${m.name}`] === undefined);
  const verdict: KernelVerdict = {};
  if (degraded.length) {
    verdict.warning = {
      msg: 'kernel below the documented minimum; running with fallbacks',
      fields: {
        kernel,
        minimum: MIN_KERNEL,
        missing: degraded.map(describe),
        fallbacks: degraded.map((m) => FALLBACKS[`${m.kind} ${m.name}`]),
      },
    };
  }
  if (fatal.length) {
    verdict.error = `kernel ${kernel} cannot run the mesh's programs (documented minimum: Linux ${MIN_KERNEL}): it lacks ${fatal.map(describe).join('; ')}`;
  }
  return verdict;
}

/** Probes what the agent's programs need; logs what has a fallback, throws naming what has none. */
export function checkKernel(log: Logger): void {
  const missing = [embedded.split.name, embedded.http.name].flatMap((name) => {
    using spec = ObjectSpec.embedded(name);
    return missingFeatures(spec);
  });
  const v = kernelVerdict(release(), missing);
  if (v.warning) log.warn(v.warning.msg, v.warning.fields);
  if (v.error) throw new Error(v.error);
}
