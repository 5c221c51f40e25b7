/** Defaults and flag parsing of the workload identities, apart from identities.ts so that the command lines can
 *  use them without loading the certificate library (a good part of a second to import). */

import { basename, join } from 'node:path';

import { RUN_DIR } from './api-socket.js';

export const DEFAULT_STATE_DIR = '/var/lib/mesh';
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
export const DEFAULT_SVID_TTL = '24h';
/** 30 s: short-lived SVIDs as Istio allows them (renewed at half life, every ~15 s); below that a renewal that
 *  fails once has no time left to be retried before the identity expires. */
export const MIN_AGENT_SVID_TTL_MS = 30_000;

/** "90s", "30m", "24h" (or a bare number of seconds) → ms; undefined when malformed. */
export function parseDuration(s: string): number | undefined {
  const m = /^(\d+)(s|m|h)?$/.exec(s);
  if (!m) return undefined;
  return Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 's' | 'm' | 'h'];
}

/** Where the agent that owns `pinRoot` writes the SVID files for the data plane: /run/mesh/<pin root's name>/svid
 *  (a tmpfs on a node: the keys never reach a disk). */
export const defaultSvidDir = (pinRoot: string) => join(RUN_DIR, basename(pinRoot), 'svid');
