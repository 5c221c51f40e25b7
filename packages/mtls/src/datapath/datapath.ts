/** The mTLS datapath: outbound capture to the node's data plane and STRICT in the kernel (bpf/mtls/mtls.bpf.c),
 *  loaded and attached to a cgroup v2 subtree, and the enrolment applied to its maps. */
import { isIP } from 'node:net';
import { join } from 'node:path';

import { type BpfMap, type BpfObject, codec as c, cgroupId, type DatapathFamily, embedded, type Link, ObjectSpec, type PartApplied, type PerCpuMap, type PinnedAttachment } from '@mesh/bpf';
import type { Registry } from 'prom-client';

import {
  addrKey,
  addrString,
  CFG_IN4,
  CFG_IN6,
  CFG_OUT4,
  CFG_OUT6,
  counterNames,
  type CounterName,
  MODE_PERMISSIVE,
  MODE_STRICT,
  mtlsAddr,
  type MtlsAddr,
  mtlsConfig,
  type MtlsConfig,
  mtlsConnKey,
  type MtlsConnKey,
  mtlsOrig,
  type MtlsOrig,
  mtlsPairKey,
  type MtlsPairKey,
  mtlsPortKey,
  type MtlsPortKey,
  normalIp,
} from './maps.js';
import { registerMtlsMetrics } from './metrics.js';

const names = embedded.mtls;

export interface MtlsOptions {
  /** Capacity of the original-destination table (client local address → destination; least recently used
   *  first out): connections that may be waiting for the data plane's accept at once. Default 65,536. */
  maxConnections?: number;
  /** Capacity of the mesh destination table (addresses, or address:port). Default 65,536. */
  maxDestinations?: number;
  /** Capacity of the enrolled-workload table. Default 16,384. */
  maxWorkloads?: number;
  /** Capacity of the per-port mode table (a workload's default and each port with a mode). Default 65,536. */
  maxPorts?: number;
  /** Capacity of the allowed local pair table (enrolled workload × destination of this node). Default 65,536. */
  maxLocalPairs?: number;
  /** Pin the maps here and adopt maps already pinned (a restarted agent keeps the tables it finds). */
  pinDir?: string;
  /** The split's pinned per-socket table (split_orig) and its slot count, so that a connection to a service
   *  address shows that address to getpeername, not the endpoint the split chose. Without it, a captured
   *  connection shows the endpoint it was headed for. */
  splitOrig?: { path: string; slots: number };
}

export type MtlsMode = 'STRICT' | 'PERMISSIVE';

export interface EnrolledWorkload {
  /** The workload's cgroup: its v2 directory or its id (the cgroup its processes run in, not an ancestor). */
  cgroup: string | bigint;
  /** The workload-wide mode (PeerAuthentication spec.mtls.mode); default PERMISSIVE. */
  mode?: MtlsMode;
  /** Port-level modes (portLevelMtls), overriding `mode`. */
  ports?: Record<number, MtlsMode>;
}

export interface MtlsSnapshot {
  dataplane: {
    /** Where captured connections go: the data plane's outbound listener, per family. */
    outbound: { port: number; ipv4?: string; ipv6?: string };
    /** The source address the data plane's inbound side connects to workloads from: the only source a STRICT
     *  port accepts. */
    inboundSource: { ipv4?: string; ipv6?: string };
    /** The cgroups (v2 directory or id) of the data plane's processes: the only ones whose bind() to the inbound
     *  source address the kernel lets through (at most 8). */
    cgroups?: (string | bigint)[];
  };
  enrolled: EnrolledWorkload[];
  /** Mesh workloads: "ip" (every port), "ip:port" or "[ipv6]:port". */
  destinations: string[];
  /**
   * The same-node shortcut: an enrolled workload (its cgroup) and a destination of this node ("ip:port" or
   * "[ipv6]:port", one of `destinations`) it may reach directly — its connect is left alone and STRICT lets the
   * connection in. Absent or empty: every connection to a destination goes to the data plane.
   */
  localPairs?: { cgroup: string | bigint; destination: string }[];
}

export interface MtlsApplyStats {
  written: number;
  deleted: number;
}

export class MtlsSnapshotError extends Error {
  override name = 'MtlsSnapshotError';
}

/** A captured connection: the workload it was headed for and what the application dialled. */
export interface OriginalDestination {
  dst: string;
  dialled: string;
}

/** The least each table holds when sized from a config (~0.9 MiB in all): a small mesh grows without a restart. */
export const MIN_MTLS_WORKLOADS = 1024;
export const MIN_MTLS_PORTS = 4096;
export const MIN_MTLS_DESTINATIONS = 4096;
export const MIN_MTLS_LOCAL_PAIRS = 4096;
/** The most local pairs sized from a config (~6 MiB): pairs grow with the square of a node's workloads, and a
 *  config that needs more is refused until --mtls-max-local-pairs says so (or the shortcut is off). */
export const MAX_AUTO_MTLS_LOCAL_PAIRS = 65536;

/** Capacities of the enrolled, per-port mode, destination and local pair tables for a config's counts: twice what
 *  it holds (the config can grow), at least the floors above, rounded up to a power of two (as the split's tables). */
export function mtlsTableSizesFor(counts: { workloads: number; ports: number; destinations: number; localPairs?: number }): {
  maxWorkloads: number;
  maxPorts: number;
  maxDestinations: number;
  maxLocalPairs: number;
} {
  const size = (n: number, floor: number) => 2 ** Math.ceil(Math.log2(Math.max(floor, 2 * n)));
  return {
    maxWorkloads: size(counts.workloads, MIN_MTLS_WORKLOADS),
    maxPorts: size(counts.ports, MIN_MTLS_PORTS),
    maxDestinations: size(counts.destinations, MIN_MTLS_DESTINATIONS),
    maxLocalPairs: Math.min(MAX_AUTO_MTLS_LOCAL_PAIRS, size(counts.localPairs ?? 0, MIN_MTLS_LOCAL_PAIRS)),
  };
}

function checkCapacity(name: string, n: number): number {
  if (!Number.isInteger(n) || n < 1 || n > 2 ** 24) throw new RangeError(`${name} must be an integer in [1, 2^24], got ${n}`);
  return n;
}

function checkPort(where: string, p: unknown): number {
  if (typeof p !== 'number' || !Number.isInteger(p) || p < 1 || p > 65535) {
    throw new MtlsSnapshotError(`${where}: expected a port from 1 to 65535, got ${JSON.stringify(p)}`);
  }
  return p;
}

function checkIp(where: string, ip: unknown, family: 4 | 6): Buffer {
  if (typeof ip !== 'string' || isIP(ip) === 0) throw new MtlsSnapshotError(`${where}: expected an IP address, got ${JSON.stringify(ip)}`);
  const n = normalIp(ip);
  if ((n.family === 2) !== (family === 4)) throw new MtlsSnapshotError(`${where}: expected an IPv${family} address, got ${JSON.stringify(ip)}`);
  return n.bytes;
}

function checkMode(where: string, m: unknown): number {
  if (m === 'STRICT') return MODE_STRICT;
  if (m === 'PERMISSIVE') return MODE_PERMISSIVE;
  throw new MtlsSnapshotError(`${where}: expected "STRICT" or "PERMISSIVE", got ${JSON.stringify(m)}`);
}

/** "ip", "ip:port" or "[ipv6]:port" → a destination key (port 0: every port). */
export function parseDestination(s: string, where = 'destination'): MtlsAddr {
  if (typeof s !== 'string') throw new MtlsSnapshotError(`${where}: expected a string, got ${JSON.stringify(s)}`);
  if (isIP(s) !== 0) return addrKey(s, 0);
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  if (!m || isIP(m[1]!) === 0) throw new MtlsSnapshotError(`${where}: expected "ip", "ip:port" or "[ipv6]:port", got ${JSON.stringify(s)}`);
  return addrKey(m[1]!, checkPort(where, Number(m[2])));
}

const hex = <T>(codec: c.Codec<T>, v: T) => c.encode(codec, v).toString('hex');

/** Writes `want` into `map` and deletes what it holds beyond it; unchanged entries are not written. */
function sync<K, V>(map: BpfMap<K, V>, keyCodec: c.Codec<K>, valueCodec: c.Codec<V>, want: Map<string, [K, V]>, stats: MtlsApplyStats): void {
  const stale: K[] = [];
  const have = new Map<string, string>();
  for (const [k, v] of map.entries()) {
    const kh = hex(keyCodec, k);
    if (want.has(kh)) have.set(kh, hex(valueCodec, v));
    else stale.push(k);
  }
  for (const [kh, [k, v]] of want) {
    if (have.get(kh) === hex(valueCodec, v)) continue;
    map.set(k, v);
    stats.written++;
  }
  for (const k of stale) if (map.delete(k)) stats.deleted++;
}

export class MtlsDatapath implements DatapathFamily<MtlsSnapshot, Registry> {
  private readonly obj: BpfObject;
  readonly enrolledMap: BpfMap<bigint, number>;
  readonly destsMap: BpfMap<MtlsAddr, number>;
  readonly portsMap: BpfMap<MtlsPortKey, number>;
  readonly configMap: BpfMap<number, MtlsConfig>;
  readonly origMap: BpfMap<MtlsAddr, MtlsOrig>;
  readonly bindAllowedMap: BpfMap<bigint, number>;
  readonly localPairsMap: BpfMap<MtlsPairKey, number>;
  readonly localConnsMap: BpfMap<MtlsConnKey, number>;
  private readonly countersMap: PerCpuMap<number, bigint>;

  private constructor(obj: BpfObject) {
    this.obj = obj;
    this.enrolledMap = obj.map(names.maps.mtls_enrolled, { key: c.u64, value: c.u32 });
    this.destsMap = obj.map(names.maps.mtls_dests, { key: mtlsAddr, value: c.u32 });
    this.portsMap = obj.map(names.maps.mtls_ports, { key: mtlsPortKey, value: c.u32 });
    this.configMap = obj.map(names.maps.mtls_config, { key: c.u32, value: mtlsConfig });
    this.origMap = obj.map(names.maps.mtls_orig, { key: mtlsAddr, value: mtlsOrig });
    this.bindAllowedMap = obj.map(names.maps.mtls_bind_allowed, { key: c.u64, value: c.u32 });
    this.localPairsMap = obj.map(names.maps.mtls_pairs, { key: mtlsPairKey, value: c.u32 });
    this.localConnsMap = obj.map(names.maps.mtls_direct, { key: mtlsConnKey, value: c.u32 });
    this.countersMap = obj.perCpuMap(names.maps.mtls_counters, { key: c.u32, value: c.u64 });
  }

  static load(opts: MtlsOptions = {}): MtlsDatapath {
    const spec = ObjectSpec.embedded(names.name);
    try {
      if (opts.maxConnections !== undefined) spec.setMaxEntries(names.maps.mtls_orig, checkCapacity('maxConnections', opts.maxConnections));
      if (opts.maxDestinations !== undefined) spec.setMaxEntries(names.maps.mtls_dests, checkCapacity('maxDestinations', opts.maxDestinations));
      if (opts.maxWorkloads !== undefined) {
        const n = checkCapacity('maxWorkloads', opts.maxWorkloads);
        spec.setMaxEntries(names.maps.mtls_enrolled, n);
      }
      if (opts.maxPorts !== undefined) spec.setMaxEntries(names.maps.mtls_ports, checkCapacity('maxPorts', opts.maxPorts));
      if (opts.maxLocalPairs !== undefined) spec.setMaxEntries(names.maps.mtls_pairs, checkCapacity('maxLocalPairs', opts.maxLocalPairs));
      if (opts.pinDir !== undefined) {
        spec.pinMaps(opts.pinDir);
        // The split owns split_orig (and may pin it in this very directory, at another size); without splitOrig
        // ours is a one-slot stand-in, pinned under a name of its own so that a restart adopts the programs that
        // read it instead of replacing them.
        spec.setPinPath(names.maps.split_orig, join(opts.pinDir, 'mtls_split_orig_standin'));
      }
      if (opts.splitOrig !== undefined) {
        const { path, slots } = opts.splitOrig;
        if (!Number.isInteger(slots) || slots < 1 || (slots & (slots - 1)) !== 0) {
          throw new RangeError(`splitOrig.slots must be a power of two (the split's table size), got ${slots}`);
        }
        spec.setMaxEntries(names.maps.split_orig, slots);
        spec.setConstant(names.constants.split_orig_mask, slots - 1);
        spec.setPinPath(names.maps.split_orig, path);
      }
    } catch (err) {
      spec.close();
      throw err;
    }
    return new MtlsDatapath(spec.load());
  }

  /** Attaches every hook (connect, getpeername, bind, sockops, cgroup_skb ingress) to a cgroup v2 directory. Attach
   *  after the split at the same cgroup: programs of one hook run in attach order, and capture must see the
   *  endpoint the split chose. */
  attach(cgroupPath: string): Link[] {
    return this.obj.attachCgroup(cgroupPath);
  }

  /** Attaches through links pinned in `linkDir` (see BpfObject.attachCgroupPinned). */
  attachPinned(cgroupPath: string, linkDir: string): PinnedAttachment[] {
    return this.obj.attachCgroupPinned(cgroupPath, linkDir);
  }

  /**
   * Validates the whole snapshot (cgroup paths resolved to ids included), then writes the difference: nothing is
   * written when any part is wrong. The data plane's addresses go first, so a newly enrolled workload is never
   * captured towards an old address.
   */
  apply(snap: MtlsSnapshot): MtlsApplyStats {
    const { cfg, bindAllowed, enrolled, ports, dests, pairs } = this.plan(snap);
    const stats: MtlsApplyStats = { written: 0, deleted: 0 };
    // Pairs the new snapshot drops go before anything else: a connect never bypasses a policy that now refuses it.
    this.dropPairs(pairs, stats);
    // The data plane's cgroups before the address they guard: its own binds never meet a refusal.
    sync(this.bindAllowedMap, c.u64, c.u32, bindAllowed, stats);
    sync(this.configMap, c.u32, mtlsConfig, new Map([['00000000', [0, cfg]]]), stats);
    sync(this.destsMap, mtlsAddr, c.u32, dests, stats);
    sync(this.portsMap, mtlsPortKey, c.u32, ports, stats);
    sync(this.enrolledMap, c.u64, c.u32, enrolled, stats);
    sync(this.localPairsMap, mtlsPairKey, c.u32, pairs, stats);
    return stats;
  }

  /** Deletes the local pairs `snap` no longer allows (after checking it whole; nothing is written when it is
   *  wrong), leaving the rest: call before anything else acts on a new policy (the agent, before the data plane
   *  reloads), so that new connections of a pair it refuses go to the data plane. */
  dropLocalPairs(snap: MtlsSnapshot): MtlsApplyStats {
    const { pairs } = this.plan(snap);
    const stats: MtlsApplyStats = { written: 0, deleted: 0 };
    this.dropPairs(pairs, stats);
    return stats;
  }

  private dropPairs(want: Map<string, [MtlsPairKey, number]>, stats: MtlsApplyStats): void {
    const stale: MtlsPairKey[] = [];
    for (const k of this.localPairsMap.keys()) if (!want.has(hex(mtlsPairKey, k))) stale.push(k);
    for (const k of stale) if (this.localPairsMap.delete(k)) stats.deleted++;
  }

  /** Throws, writing nothing, when `snap` is wrong or does not fit the tables (what apply() would refuse). */
  check(snap: MtlsSnapshot): void {
    this.plan(snap);
  }

  /** The entries `snap` makes, checked against the tables' capacities: the tables are not resized under a running
   *  agent (a restart sizes them from the config), so a config that outgrows one is refused whole. */
  private plan(snap: MtlsSnapshot) {
    if (!snap || typeof snap !== 'object') throw new MtlsSnapshotError('snapshot: expected an object');
    const dp = snap.dataplane;
    if (!dp || typeof dp !== 'object' || !dp.outbound || !dp.inboundSource) {
      throw new MtlsSnapshotError('dataplane: expected { outbound: { port, ipv4?, ipv6? }, inboundSource: { ipv4?, ipv6? } }');
    }
    const cfg: MtlsConfig = {
      out4: Buffer.alloc(4),
      out6: Buffer.alloc(16),
      in4: Buffer.alloc(4),
      in6: Buffer.alloc(16),
      outPort: checkPort('dataplane.outbound.port', dp.outbound.port),
      flags: 0,
    };
    if (dp.outbound.ipv4 !== undefined) {
      cfg.out4 = checkIp('dataplane.outbound.ipv4', dp.outbound.ipv4, 4).subarray(0, 4);
      cfg.flags |= CFG_OUT4;
    }
    if (dp.outbound.ipv6 !== undefined) {
      cfg.out6 = checkIp('dataplane.outbound.ipv6', dp.outbound.ipv6, 6);
      cfg.flags |= CFG_OUT6;
    }
    if (!(cfg.flags & (CFG_OUT4 | CFG_OUT6))) throw new MtlsSnapshotError('dataplane.outbound: expected ipv4, ipv6 or both');
    if (dp.inboundSource.ipv4 !== undefined) {
      cfg.in4 = checkIp('dataplane.inboundSource.ipv4', dp.inboundSource.ipv4, 4).subarray(0, 4);
      cfg.flags |= CFG_IN4;
    }
    if (dp.inboundSource.ipv6 !== undefined) {
      cfg.in6 = checkIp('dataplane.inboundSource.ipv6', dp.inboundSource.ipv6, 6);
      cfg.flags |= CFG_IN6;
    }

    const cgroupOf = (where: string, cg: unknown): bigint => {
      if (typeof cg === 'bigint') return cg;
      if (typeof cg !== 'string') throw new MtlsSnapshotError(`${where}: expected a cgroup v2 path or id`);
      try {
        return cgroupId(cg);
      } catch (err) {
        throw new MtlsSnapshotError(`${where}: ${(err as Error).message}`);
      }
    };
    const bindAllowed = new Map<string, [bigint, number]>();
    if (dp.cgroups !== undefined && !Array.isArray(dp.cgroups)) throw new MtlsSnapshotError('dataplane.cgroups: expected an array');
    (dp.cgroups ?? []).forEach((cg, i) => {
      const id = cgroupOf(`dataplane.cgroups[${i}]`, cg);
      bindAllowed.set(hex(c.u64, id), [id, 1]);
    });
    if (bindAllowed.size > this.bindAllowedMap.maxEntries) {
      throw new MtlsSnapshotError(`dataplane.cgroups: at most ${this.bindAllowedMap.maxEntries} cgroups, got ${bindAllowed.size}`);
    }

    if (!Array.isArray(snap.enrolled)) throw new MtlsSnapshotError('enrolled: expected an array');
    const enrolled = new Map<string, [bigint, number]>();
    const ports = new Map<string, [MtlsPortKey, number]>();
    snap.enrolled.forEach((w, i) => {
      const where = `enrolled[${i}]`;
      const id = cgroupOf(`${where}.cgroup`, w?.cgroup);
      const kh = hex(c.u64, id);
      if (enrolled.has(kh)) throw new MtlsSnapshotError(`${where}.cgroup: cgroup ${id} enrolled twice`);
      enrolled.set(kh, [id, 1]);
      const modes: [number, number][] = [];
      if (w.mode !== undefined) modes.push([0, checkMode(`${where}.mode`, w.mode)]);
      for (const [p, m] of Object.entries(w.ports ?? {})) modes.push([checkPort(`${where}.ports`, Number(p)), checkMode(`${where}.ports.${p}`, m)]);
      for (const [port, mode] of modes) {
        // PERMISSIVE workload-wide is what absence means; a port-level PERMISSIVE must be kept (it overrides).
        if (port === 0 && mode === MODE_PERMISSIVE) continue;
        const key: MtlsPortKey = { cgroupId: id, port };
        ports.set(hex(mtlsPortKey, key), [key, mode]);
      }
    });

    if (!Array.isArray(snap.destinations)) throw new MtlsSnapshotError('destinations: expected an array');
    const dests = new Map<string, [MtlsAddr, number]>();
    snap.destinations.forEach((d, i) => {
      const key = parseDestination(d, `destinations[${i}]`);
      dests.set(hex(mtlsAddr, key), [key, 1]);
    });

    if (snap.localPairs !== undefined && !Array.isArray(snap.localPairs)) throw new MtlsSnapshotError('localPairs: expected an array');
    const pairs = new Map<string, [MtlsPairKey, number]>();
    (snap.localPairs ?? []).forEach((p, i) => {
      const where = `localPairs[${i}]`;
      const cgroupId = cgroupOf(`${where}.cgroup`, p?.cgroup);
      if (!enrolled.has(hex(c.u64, cgroupId))) throw new MtlsSnapshotError(`${where}.cgroup: cgroup ${cgroupId} is not enrolled`);
      const dst = parseDestination(p.destination, `${where}.destination`);
      if (dst.port === 0) throw new MtlsSnapshotError(`${where}.destination: expected "ip:port" or "[ipv6]:port", got ${JSON.stringify(p.destination)}`);
      if (!dests.has(hex(mtlsAddr, dst))) throw new MtlsSnapshotError(`${where}.destination: ${p.destination} is not a mesh destination`);
      const key: MtlsPairKey = { cgroupId, dst };
      pairs.set(hex(mtlsPairKey, key), [key, 1]);
    });

    const fits = (n: number, map: BpfMap<any, any>, what: string, option: string, flag: string) => {
      if (n > map.maxEntries) {
        throw new MtlsSnapshotError(
          `${n} ${what} do not fit ${map.name} (${map.maxEntries} entries): raise ${option} (mesh-agent: ${flag}, or a restart, which sizes the tables from the config)`,
        );
      }
    };
    fits(enrolled.size, this.enrolledMap, 'enrolled workload cgroups', 'maxWorkloads', '--mtls-max-workloads');
    fits(ports.size, this.portsMap, 'port modes (a STRICT workload default, or a port with a mode)', 'maxPorts', '--mtls-max-ports');
    fits(dests.size, this.destsMap, 'mesh destinations', 'maxDestinations', '--mtls-max-destinations');
    fits(pairs.size, this.localPairsMap, 'allowed local pairs (enrolled workload × destination of this node)', 'maxLocalPairs', '--mtls-max-local-pairs');
    return { cfg, bindAllowed, enrolled, ports, dests, pairs };
  }

  /** apply() as a datapath family: the agent's share of a config (see families.ts in the agent). */
  async applyPart(input: MtlsSnapshot): Promise<PartApplied> {
    const r = this.apply(input);
    return {
      mapWrites: r.written + r.deleted,
      log: { mtlsWorkloads: input.enrolled.length, mtlsDestinations: input.destinations.length, mtlsLocalPairs: input.localPairs?.length ?? 0 },
    };
  }

  registerMetrics(registry: Registry): void {
    registerMtlsMetrics(registry, { counters: () => this.counters(), fill: () => this.fill() });
  }

  /** The original destination the programs recorded for a connection the data plane accepted from `peer`
   *  ("ip:port" or "[ipv6]:port": the client's local address). */
  originalDestination(peer: string): OriginalDestination | undefined {
    const key = parseDestination(peer, 'peer');
    if (key.port === 0) throw new TypeError(`peer: expected "ip:port", got ${JSON.stringify(peer)}`);
    const v = this.origMap.get(key);
    return v && { dst: addrString(v.dst), dialled: addrString(v.dialled) };
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
  fill(): Record<'workloads' | 'destinations' | 'ports' | 'connections' | 'local_pairs' | 'local_connections', { used: number; max: number }> {
    return {
      local_pairs: { used: this.localPairsMap.count(), max: this.localPairsMap.maxEntries },
      local_connections: { used: this.localConnsMap.count(), max: this.localConnsMap.maxEntries },
      workloads: { used: this.enrolledMap.count(), max: this.enrolledMap.maxEntries },
      destinations: { used: this.destsMap.count(), max: this.destsMap.maxEntries },
      ports: { used: this.portsMap.count(), max: this.portsMap.maxEntries },
      connections: { used: this.origMap.count(), max: this.origMap.maxEntries },
    };
  }

  /** Detaches (unless links were pinned) and closes everything. */
  close(): void {
    this.obj.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
