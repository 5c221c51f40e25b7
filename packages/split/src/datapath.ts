/** The split datapath: the embedded split programs loaded and attached to a cgroup v2 subtree, and the
 *  snapshots applied to their maps. */
import { type BpfMap, type BpfObject, codec as c, type DatapathFamily, dropResizedPins, embedded, type FamilyLoadOptions, type Link, type MapFill, ObjectSpec, type PartApplied, type PerCpuMap, type PinnedAttachment } from '@mesh/bpf';
import type { Registry } from 'prom-client';

import { compile, type Compiled, type CompiledService, type RouteStatus } from './compile.js';
import { counterNames, type CounterName, epKey, epValue, svcKey, svcValue, type EpKey, type EpValue, type SvcKey, type SvcValue } from './maps.js';
import { registerSplitMetrics } from './metrics.js';
import type { Snapshot } from './model.js';
import { runSteps, runStepsAsync, type Steps } from './steps.js';
import { type ApplyStats, ServiceTable } from './table.js';
import { validate } from './validate.js';

const names = embedded.split;

export interface SplitOptions extends FamilyLoadOptions {
  /** Capacity of the service table (service addresses); default 16,384. */
  maxServices?: number;
  /** Capacity of the endpoint table; during a swap a service's old and new endpoints coexist, so leave room. */
  maxEndpoints?: number;
  /** Capacity of the per-connection table (what each socket dialled, for getpeername), rounded up to a power of
   *  two; default 65,536 live connections. A socket takes one of 4 slots after its cookie; when all 4 are held,
   *  its connection still works, but a TCP connection shows the endpoint as its peer (counter orig_full);
   *  connected UDP maps its replies through the unconnected-UDP table instead (orig_fallback). */
  maxConnections?: number;
  /** Capacity of the unconnected-UDP reply mappings (one per socket and endpoint it sent to through a service;
   *  least recently used first out); default 65,536. An evicted mapping's next reply shows the endpoint's
   *  address until the socket sends there again: see udpFlowsEvicted(). */
  maxUdpFlows?: number;
  /** Pin the maps here and adopt maps already pinned (a restarted agent keeps the tables it finds). A pinned
   *  table of another capacity is made anew, with the one it refers to (services with endpoints), before the
   *  load; the others (connections, UDP flows, counters) are kept: see onResize. */
  pinDir?: string;
  /** Told which pinned maps were dropped for a new capacity (their contents are lost; the attached programs
   *  use them until their links are switched). */
  onResize?: (maps: string[]) => void;
  /** Refuse a connect() to a service with no backend with EPERM, as on kernels before 5.18 (no
   *  bpf_set_retval), instead of ECONNREFUSED: for tests of that fallback. */
  refuseWithEperm?: boolean;
}

export interface ApplyResult {
  stats: ApplyStats;
  routes: RouteStatus[];
  services: number;
  /** What was installed: every service address with its weighted backends and their endpoints. */
  compiled: CompiledService[];
}

/** The routing tables' smallest capacities when sized from a config: room for a small config to grow without
 *  a restart, for ~0.7 MiB of kernel memory. */
export const MIN_SERVICES = 1024;
export const MIN_ENDPOINTS = 4096;

/** Capacities of the routing tables for a config's services: twice what it holds (while an apply replaces
 *  every service and its endpoints, old and new coexist; and the config can grow), at least MIN_SERVICES and
 *  MIN_ENDPOINTS, rounded up to a power of two. */
export function tableSizesFor(services: readonly CompiledService[]): { maxServices: number; maxEndpoints: number } {
  let slots = 0;
  for (const s of services) for (const b of s.backends) slots += b.endpoints.length;
  const size = (n: number, floor: number) => 2 ** Math.ceil(Math.log2(Math.max(floor, 2 * n)));
  return { maxServices: size(services.length, MIN_SERVICES), maxEndpoints: size(slots, MIN_ENDPOINTS) };
}

/** The per-connection table's size for a requested capacity: the next power of two (the programs mask the cookie). */
export function connectionSlots(maxConnections: number): number {
  if (!Number.isInteger(maxConnections) || maxConnections < 1 || maxConnections > 2 ** 30) {
    throw new RangeError(`maxConnections must be an integer in [1, 2^30], got ${maxConnections}`);
  }
  return 2 ** Math.ceil(Math.log2(maxConnections));
}

function checkUdpFlows(n: number): number {
  if (!Number.isInteger(n) || n < 1 || n > 2 ** 24) throw new RangeError(`maxUdpFlows must be an integer in [1, 2^24], got ${n}`);
  return n;
}

/** Maps made anew together when one of them changes capacity: a service entry numbers its endpoint slots, so
 *  the two tables are one state; the per-connection tables stand alone and survive a routing resize. */
const RESIZE_GROUPS = [[names.maps.split_services, names.maps.split_endpoints], [names.maps.split_orig], [names.maps.split_revnat]];

/** The split family: its part of a snapshot is the compiled services (what compile() made of it). */
export class SplitDatapath implements DatapathFamily<Compiled, Registry> {
  private readonly obj: BpfObject;
  private readonly table: ServiceTable;
  /** The services the last apply installed, for the weights gauge. */
  private installed: CompiledService[] = [];
  readonly servicesMap: BpfMap<SvcKey, SvcValue>;
  readonly endpointsMap: BpfMap<EpKey, EpValue>;
  private readonly countersMap: PerCpuMap<number, bigint>;
  private readonly origMap: BpfMap<number, Buffer>;
  private readonly revnatMap: BpfMap<Buffer, Buffer>;

  private constructor(obj: BpfObject) {
    this.obj = obj;
    this.servicesMap = obj.map(names.maps.split_services, { key: svcKey, value: svcValue });
    this.endpointsMap = obj.map(names.maps.split_endpoints, { key: epKey, value: epValue });
    this.countersMap = obj.perCpuMap(names.maps.split_counters, { key: c.u32, value: c.u64 });
    this.origMap = obj.map(names.maps.split_orig, { key: c.u32, value: c.bytes(48) });
    this.revnatMap = obj.map(names.maps.split_revnat, { key: c.bytes(32), value: c.bytes(24) });
    this.table = new ServiceTable(this.servicesMap, this.endpointsMap);
    this.table.adopt();
  }

  static load(opts: SplitOptions = {}): SplitDatapath {
    const spec = ObjectSpec.embedded(names.name);
    try {
      if (opts.maxServices !== undefined) spec.setMaxEntries(names.maps.split_services, opts.maxServices);
      if (opts.maxEndpoints !== undefined) spec.setMaxEntries(names.maps.split_endpoints, opts.maxEndpoints);
      if (opts.maxConnections !== undefined) {
        const slots = connectionSlots(opts.maxConnections);
        spec.setMaxEntries(names.maps.split_orig, slots);
        spec.setConstant('orig_mask', slots - 1);
      }
      if (opts.refuseWithEperm) spec.setConstant(names.constants.refuse_eperm, true);
      if (opts.maxUdpFlows !== undefined) spec.setMaxEntries(names.maps.split_revnat, checkUdpFlows(opts.maxUdpFlows));
      if (opts.pinDir !== undefined) {
        const sizes = new Map(spec.maps.map((m) => [m.name, m.maxEntries]));
        const dropped = dropResizedPins(opts.pinDir, RESIZE_GROUPS, (m) => sizes.get(m)!);
        if (dropped.length) opts.onResize?.(dropped);
        spec.pinMaps(opts.pinDir);
      }
    } catch (err) {
      spec.close();
      throw err;
    }
    return new SplitDatapath(spec.load());
  }

  /** Attaches every split hook (connect, sendmsg, recvmsg, getpeername; IPv4 and IPv6) to a cgroup v2 directory:
   *  sockets of processes in that subtree are served. */
  attach(cgroupPath: string): Link[] {
    return this.obj.attachCgroup(cgroupPath);
  }

  /** Attaches through links pinned in `linkDir`, adopting or replacing in place what is pinned there
   *  (see BpfObject.attachCgroupPinned): restarts never attach a second copy. */
  attachPinned(cgroupPath: string, linkDir: string): PinnedAttachment[] {
    return this.obj.attachCgroupPinned(cgroupPath, linkDir);
  }

  /**
   * Validates and compiles the snapshot, then writes the difference. A snapshot that fails validation throws
   * SnapshotError before any map is touched, so the previous one stays in force.
   */
  apply(snapshot: Snapshot): ApplyResult {
    return this.applyCompiled(compile(validate(snapshot)));
  }

  /** Writes what compile() made of a snapshot (for callers that compiled it already, e.g. to validate). */
  applyCompiled(compiled: Compiled): ApplyResult {
    return runSteps(this.applyCompiledSteps(compiled));
  }

  /** applyCompiled in steps (see runStepsAsync): map writes in batches, the event loop served between them. One
   *  apply at a time. */
  *applyCompiledSteps(compiled: Compiled): Steps<ApplyResult> {
    const stats = yield* this.table.applySteps(compiled.services);
    this.installed = compiled.services;
    return { stats, routes: compiled.routes, services: this.table.size, compiled: compiled.services };
  }

  /** Throws the capacity error applyCompiled would, writing nothing (see DatapathFamily.check); in steps, the
   *  event loop served between them (50,000 services). */
  async check(compiled: Compiled): Promise<void> {
    await runStepsAsync(this.table.checkSteps(compiled.services));
  }

  /** The family's apply (see DatapathFamily): applyCompiledSteps with the event loop served between batches; when
   *  the endpoint table's room is held by retired slots, their grace period is waited for first. */
  async applyPart(compiled: Compiled): Promise<PartApplied> {
    await this.table.makeRoom(compiled.services);
    const r = await runStepsAsync(this.applyCompiledSteps(compiled));
    const s = r.stats;
    return { mapWrites: s.serviceWrites + s.serviceDeletes + s.endpointWrites + s.endpointDeletes, log: { serviceAddresses: r.services } };
  }

  /** Resolves once the endpoint slots that applies took out of use are deleted (after a grace period: no
   *  program run that read a service entry pointing at them can still be running). */
  reclaimed(): Promise<void> {
    return this.table.reclaimed();
  }

  /** See DatapathFamily.settle: the retired slots are deleted. */
  settle(): Promise<void> {
    return this.table.reclaimed();
  }

  /** Endpoint slots taken out of use and not yet deleted (they count in fill().endpoints.used). */
  get retiredSlots(): number {
    return this.table.retiredSlots;
  }

  /** mesh_split_* counters (connects, UDP sends, table retries, full peer table) and the weights gauge. */
  registerMetrics(registry: Registry): void {
    registerSplitMetrics(registry, { counters: () => this.counters(), services: () => this.installed });
  }

  /** What the programs counted, summed over CPUs. */
  counters(): Record<CounterName, bigint> {
    const out = {} as Record<CounterName, bigint>;
    const all = this.countersMap.getBatch({ batchSize: counterNames.length, max: counterNames.length });
    counterNames.forEach((n, i) => {
      out[n] = (all[i]?.[1] ?? []).reduce((a, b) => a + b, 0n);
    });
    return out;
  }

  /** Entries in use and capacity of each table (map pressure). */
  fill(): Record<'services' | 'endpoints' | 'connections' | 'udp_flows', MapFill> {
    return {
      services: { used: this.table.size, max: this.servicesMap.maxEntries },
      endpoints: { used: this.endpointsMap.count(), max: this.endpointsMap.maxEntries },
      connections: { used: this.connectionsInUse(), max: this.origMap.maxEntries },
      udp_flows: { used: this.revnatMap.count(), max: this.revnatMap.maxEntries },
    };
  }

  /** Unconnected-UDP reply mappings the kernel evicted to make room (the LRU never says): those created
   *  (counter revnat_insert) less those the programs dropped (revnat_drop) and those it holds. A rising figure
   *  means maxUdpFlows is too small for the flows that live at once. */
  udpFlowsEvicted(): number {
    const n = this.counters();
    return Math.max(0, Number(n.revnat_insert - n.revnat_drop) - this.revnatMap.count());
  }

  /** Slots held by live sockets: the programs count each claim and each release. */
  private connectionsInUse(): number {
    const n = this.counters();
    return Number(n.orig_claim - n.orig_release);
  }

  /** Detaches (unless links were pinned) and closes everything. Retired slots not yet deleted stay in pinned
   *  maps for the next load to find (and retire again). */
  close(): void {
    this.table.close();
    this.obj.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
