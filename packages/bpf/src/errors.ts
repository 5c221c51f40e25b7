/** Errors of @mesh/bpf: one BpfError for every failed kernel or libbpf operation, NotSupportedError for a
 *  kernel that lacks a feature. Wrong arguments throw TypeError/RangeError before any syscall. */

const privilegeHints: Record<string, string> = {
  EPERM:
    'the process lacks the privilege: loading programs and creating maps needs CAP_BPF (CAP_SYS_ADMIN on ' +
    'older kernels), attaching networking programs needs CAP_NET_ADMIN, and pointer-leaking programs ' +
    'CAP_PERFMON; run as root or grant these capabilities (also check kernel.unprivileged_bpf_disabled)',
  EACCES: 'the kernel refused the operation (for a program load: the verifier rejected it; see verifierLog)',
};

export class BpfError extends Error {
  /** The failed operation, e.g. `map_update`, `object_load`, `link_attach_cgroup`. */
  readonly op: string;
  /** What it failed on: an object, map or program name, a path. */
  readonly subject: string;
  /** Positive errno, as in C. */
  readonly errno: number;
  /** The errno's name: `ENOENT`, `EPERM`, … */
  readonly code: string;
  /** The verifier's log when a program load failed (or libbpf's output when there is no verifier log). */
  readonly verifierLog: string | undefined;

  constructor(op: string, subject: string, errno: number, code: string, description: string, log?: string) {
    const hint = privilegeHints[code];
    let message = `${op} ${subject}: ${description.toLowerCase()} (${code})`;
    if (hint && !(code === 'EACCES' && !op.endsWith('_load'))) message += `: ${hint}`;
    if (log) {
      // The verifier's verdict is in its last lines; the whole log stays in verifierLog.
      const tail = log.trimEnd().split('\n').slice(-3).join('\n');
      message += `\n${tail}`;
    }
    super(message);
    this.name = 'BpfError';
    this.op = op;
    this.subject = subject;
    this.errno = errno;
    this.code = code;
    this.verifierLog = log;
  }
}

export class NotSupportedError extends Error {
  readonly feature: string;
  constructor(feature: string, why: string) {
    super(`${feature} is not supported: ${why}`);
    this.name = 'NotSupportedError';
    this.feature = feature;
  }
}

/** Throws a TypeError when a handle is used after close(). */
export function assertOpen(closed: boolean, what: string): void {
  if (closed) throw new TypeError(`${what} is closed`);
}
