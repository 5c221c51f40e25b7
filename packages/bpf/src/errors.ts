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
  /** The verifier's log when a program load failed. */
  readonly verifierLog: string | undefined;
  /** What libbpf printed during the failed operation, if anything. */
  readonly libbpfLog: string | undefined;

  constructor(
    op: string,
    subject: string,
    errno: number,
    code: string,
    description: string,
    verifierLog?: string,
    libbpfLog?: string,
  ) {
    const hint = privilegeHints[code];
    let message = `${op} ${subject}: ${description.toLowerCase()} (${code})`;
    // EPERM from link_update means "not the expected program", not a missing privilege.
    const privilegeProblem = !(code === 'EACCES' && !op.endsWith('_load')) && !(code === 'EPERM' && op === 'link_update');
    if (hint && privilegeProblem) message += `: ${hint}`;
    if (verifierLog) {
      // The verifier's verdict is in its last lines; the whole log stays in verifierLog.
      message += `\n${verifierLog.trimEnd().split('\n').slice(-3).join('\n')}`;
    } else if (libbpfLog && code !== 'EPERM') {
      // libbpf's own reason (e.g. a pinned map that does not match) is its first complaint; lines before it
      // are progress notes ("loading kernel BTF …").
      const reason = libbpfLog.split('\n').find((l) => /libbpf: .*(couldn't|can't|cannot|fail|error|invalid|mismatch)/i.test(l));
      if (reason) message += `\n${reason.trim()}`;
    }
    super(message);
    this.name = 'BpfError';
    this.op = op;
    this.subject = subject;
    this.errno = errno;
    this.code = code;
    this.verifierLog = verifierLog;
    this.libbpfLog = libbpfLog;
  }

  /**
   * The load failed because a map pinned where the object pins its own has another definition (type, key or
   * value size, capacity, flags): the pin belongs to another build. Any other load failure (a verifier
   * rejection, a signal interrupting the verifier, missing privileges) says nothing about the pins.
   */
  get pinnedMapMismatch(): boolean {
    return this.op === 'object_load' && /couldn't reuse pinned map/.test(this.libbpfLog ?? '');
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
