/** Exit codes both binaries keep, for scripts. */
export const EXIT = {
  OK: 0,
  /** The command failed (datapath, kernel, I/O). */
  FAILURE: 1,
  /** Bad flags or arguments; the help text says what is expected. */
  USAGE: 2,
  /** The config is invalid (mesh-agent), or the agent rejected the last one (meshctl status). */
  CONFIG: 3,
  /** No agent answers at the address given (meshctl). */
  UNREACHABLE: 4,
  /** A named object does not exist (meshctl run --workload). */
  NOT_FOUND: 5,
} as const;

export class UsageError extends Error {
  override name = 'UsageError';
}

export const isLoopback = (host: string) => host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
