/**
 * Datapath families: one package's BPF programs as an agent runs them (split, metrics; mTLS and HTTP/2 next).
 * Each family loads with its maps pinned in a directory of its own, attaches through pinned links, applies its
 * part of a config snapshot, reports its maps' fill and its counters, and registers its own metrics (the
 * agent wires; each subsystem brings its metrics, as in linkerd2-proxy's app). The agent keeps a list of
 * families and treats them alike; see docs/architecture.md, "Datapath families".
 */
import type { PinnedAttachment } from './pin.js';

/** Entries in use and capacity of one map. */
export interface MapFill {
  used: number;
  max: number;
}

/** What every family's static `load(opts)` takes: the directory its maps are pinned in and adopted from.
 *  Families add their own sizes (maxServices, maxHttpKeys…). */
export interface FamilyLoadOptions {
  pinDir?: string;
}

/** What a family's apply did, for the agent's log and status. */
export interface PartApplied {
  /** Map writes and deletes, when the family counts them (status's mapWrites is their sum). */
  mapWrites?: number;
  /** Figures for the agent's "config applied" log line, e.g. { serviceAddresses: 12 }. */
  log?: Record<string, number | string>;
  /** What was applied in a degraded form (metrics that name fewer peers than the config has): a warning each
   *  for the agent's log, saying how much and what to do. */
  warnings?: { msg: string; fields?: Record<string, unknown> }[];
}

/** What a family sees of the whole mesh when it registers metrics. */
export interface MeshView {
  /** Fill of every family's maps, prefixed as the mesh names them (status, mesh_map_* gauges). */
  fill(): Record<string, MapFill>;
}

/**
 * A loaded family. `Input` is its part of a validated snapshot; `Registry` the metrics registry it registers
 * with (prom-client's Registry for the mesh's families: left a parameter so this package does not depend on
 * a metrics library).
 */
export interface DatapathFamily<Input = unknown, Registry = unknown> extends Disposable {
  /** Attaches every program to a cgroup v2 directory through links pinned in `linkDir`, adopting or replacing
   *  what is pinned there (see attachCgroupPinned): a restart never attaches a second copy. */
  attachPinned(cgroupPath: string, linkDir: string): PinnedAttachment[];
  /** Throws, writing nothing, when `input` does not fit this family's maps (an error naming the capacity and how
   *  to raise it). The agent runs every family's check before any family's applyPart, so a config one family
   *  cannot take is rejected whole: so only a capacity the config cannot do without (routing, policy) may throw
   *  here; one that can degrade (metrics' known peers) applies what fits and says so in PartApplied.warnings.
   *  A long check may return a promise and serve the event loop meanwhile. */
  check?(input: Input): void | Promise<void>;
  /** Writes this family's part of a validated snapshot. One apply at a time; long writes yield to the event
   *  loop. A rejected input changes nothing. */
  applyPart(input: Input): Promise<PartApplied>;
  /** Entries in use and capacity of each map, by the map's own name. */
  fill(): Record<string, MapFill>;
  /** What the programs counted (summed over CPUs), by counter name. */
  counters(): Record<string, number | bigint>;
  /** Registers this family's metrics; they read the kernel at each scrape. Called once. */
  registerMetrics(registry: Registry, mesh: MeshView): void;
  /** Resolves once what the family's applies left for later is done (the split table's retired endpoint slots,
   *  deleted after a grace period): awaited before a graceful stop, so the pins are left clean. */
  settle?(): Promise<void>;
  /** Closes the handles; pinned links and maps keep the programs running. */
  close(): void;
}

/** Runs `steps` (a generator that yields between units of work) to its end at once. */
export function runSteps<T>(steps: Generator<void, T, void>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/** Resolves after the event loop's next poll for I/O (resumed from its check phase, setImmediate). */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Runs `steps` (a generator that yields between units of work) `sliceMs` of work at a time (0: one step at a
 * time), letting pending I/O and timers run between slices: how a family checks or writes a large config
 * without holding the event loop. Two turns of the loop between slices: a connection accepted in the first has
 * its request read in the second (libuv polls a new socket from the turn after its accept), so a probe that
 * arrives during a slice is answered before the next slice, not after it. An idle turn costs microseconds.
 */
export async function runSliced<T>(steps: Generator<void, T, void>, sliceMs = 5): Promise<T> {
  let start = performance.now();
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    if (performance.now() - start >= sliceMs) {
      await turn();
      await turn();
      start = performance.now();
    }
  }
}
