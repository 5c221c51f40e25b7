/** The metrics datapath: the embedded http programs attached to a cgroup v2 subtree, and their aggregates
 *  read at scrape time (summed over CPUs). */
import { randomInt } from 'node:crypto';
import { isIP } from 'node:net';

import {
  type BpfMap,
  type BpfObject,
  codec as c,
  type DatapathFamily,
  dropResizedPins,
  embedded,
  type FamilyLoadOptions,
  type Link,
  type MapFill,
  type MeshView,
  ObjectSpec,
  type PartApplied,
  type PerCpuMap,
  type PinnedAttachment,
  type RingBuffer,
  runSliced,
  runSteps,
} from '@mesh/bpf';
import type { Registry } from 'prom-client';

import { type IdentityResolver, KernelMetrics } from './exporter.js';

import { H2Streams, type H2Counters, type H2HttpSample, type H2StreamsOptions, type RpcSample } from './h2/streams.js';

import {
  counterNames,
  type CounterName,
  HTTP_BUCKETS,
  httpKey,
  httpValue,
  METHODS,
  OVERFLOW_CGROUP,
  pairKey,
  pairValue,
  peerKey,
  pendingKey,
  pendingValue,
  type HttpKey,
  type PairKey,
  type PeerKey,
  type PendingKey,
  type PendingValue,
} from './maps.js';

const names = embedded.http;
const { AF_INET, AF_INET6 } = c;
const DIRECTIONS = ['client', 'server'] as const;
/** h2_events' default size (H2_RINGBUF_SIZE in bpf/include/http.h). */
const H2_RING_BYTES = 1 << 20;
/** How often the consumer drains the ring when not woken (see h2_wakeup_bytes in http.bpf.c): records wait at
 *  most this long, and a scrape (readH2) reads what is there at once. */
const H2_POLL_MS = 20;

export type Direction = 'client' | 'server';

/** One aggregate: requests of one local workload with one peer, method and status. */
export interface HttpSample {
  direction: Direction;
  /** cgroup id of the local workload's socket; undefined for the overflow series. */
  cgroupId: bigint | undefined;
  /** The peer's address; '' for a peer that is not a known peer (see setKnownPeers), and for the overflow series. */
  remoteIp: string;
  /** client: the server port dialled; server: the local port served. */
  port: number;
  method: (typeof METHODS)[number];
  /** 0 when the response did not start with a status line. */
  status: number;
  count: number;
  sumSeconds: number;
  /** Non-cumulative counts per bucket (HTTP_BUCKETS: the OpenTelemetry bounds, then +Inf). */
  buckets: number[];
  /** '2' for HTTP/2 streams (readH2); absent: HTTP/1.x. */
  protocolVersion?: '1.1' | '2';
  /** HTTP/2: how a stream ended without its response ending (RST_STREAM's error code, GOAWAY, CLOSED). */
  errorType?: string;
}

export interface TcpSample {
  direction: Direction;
  cgroupId: bigint | undefined;
  remoteIp: string;
  port: number;
  opened: number;
  closed: number;
  bytesSent: number;
  bytesReceived: number;
}

export interface MetricsSnapshot {
  http: HttpSample[];
  tcp: TcpSample[];
  counters: Record<CounterName, number>;
}

export interface MetricsOptions extends FamilyLoadOptions {
  /** Capacity of the request aggregation (distinct workload/peer/method/status series); default 8,192. */
  maxHttpKeys?: number;
  /** Capacity of the TCP pair map; default 8,192. */
  maxTcpKeys?: number;
  /** Capacity of the known-peer set (see setKnownPeers); default 65,536 (the agent sizes it from its config:
   *  peerTableSizeFor). */
  maxPeers?: number;
  /** Bytes of the HTTP/2 ring buffer (h2_events): a power of two, at least 4,096; default 1 MiB. A record
   *  that finds no room is lost and its connection direction decoded no further. */
  h2RingBytes?: number;
  /** Pin every map here and adopt maps already pinned: a restarted agent keeps the counts and the state of
   *  connections in flight. A pinned known-peer set of another capacity is made anew (see onResize); the
   *  others are kept. */
  pinDir?: string;
  /** Told which pinned maps were dropped for a new capacity (the attached programs use them until their links
   *  are switched). */
  onResize?: (maps: string[]) => void;
}

/** The known-peer table's smallest capacity when sized from a config: ~0.3 MiB of kernel memory. */
export const MIN_PEERS = 4096;

/** Capacity of the known-peer table for a config's peer addresses: twice them (room to grow without a restart),
 *  at least MIN_PEERS, rounded up to a power of two; as the split's routing tables (tableSizesFor). */
export function peerTableSizeFor(addresses: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(MIN_PEERS, 2 * addresses)));
}

/** Maps made anew when their capacity changes; the aggregates (counts) are kept whatever the peers' size. */
// A pinned ring of another size (another h2RingBytes, or a build with another default) is made anew rather
// than refused: it holds only records in flight, and the other maps' counts are kept.
const RESIZE_GROUPS = [[names.maps.http_peers], [names.maps.h2_events]];


/** The identity fields both aggregation keys carry; the overflow key has no workload and no peer, and a peer
 *  that is not known is the all-zero address. */
function where(k: { cgroupId: bigint; remoteIp: Buffer; port: number; dir: number; family: number }) {
  const overflow = k.cgroupId === OVERFLOW_CGROUP;
  return {
    direction: (k.dir === 1 ? 'server' : 'client') as Direction,
    cgroupId: overflow ? undefined : k.cgroupId,
    remoteIp: overflow || k.remoteIp.every((b) => b === 0) ? '' : c.bytesToIp(k.remoteIp, k.family),
    port: k.port,
  };
}

type HttpValue = c.Infer<typeof httpValue>;

/** The key that stands for every address (nothing written yet). */
const ANY_PEER: PeerKey = { ip: Buffer.alloc(16), family: 0 };
/** A peer key as one flat string (the family byte, then the 16 address bytes, in hex). The agent keeps the known
 *  peers as these: 50,000 of them take ~4 MB as strings, ~19 MB as PeerKeys (a Buffer each). */
function peerId(k: PeerKey): string {
  const b = Buffer.allocUnsafe(17);
  b[0] = k.family;
  k.ip.copy(b, 1);
  return b.toString('hex');
}
function peerKeyOf(id: string): PeerKey {
  const b = Buffer.from(id, 'hex');
  return { family: b[0]!, ip: b.subarray(1) };
}

/** One cell's per-CPU counts summed; undefined when it counted nothing. */
function sumCpus(perCpu: HttpValue[] | undefined): Pick<HttpSample, 'count' | 'sumSeconds' | 'buckets'> | undefined {
  if (perCpu === undefined) return undefined;
  const buckets = new Array<number>(HTTP_BUCKETS).fill(0);
  let count = 0, sumNs = 0;
  for (const v of perCpu) {
    count += v.count;
    sumNs += v.sumNs;
    v.buckets.forEach((b, i) => (buckets[i]! += b));
  }
  return count === 0 ? undefined : { count, sumSeconds: sumNs / 1e9, buckets };
}

/** The metrics family's part of a snapshot: who the mesh's workloads and peers are (labels, known peers). */
export interface MetricsInput extends IdentityResolver {
  /** Every address of the mesh's workloads and endpoints (see setKnownPeers). */
  knownAddresses(): Iterable<string>;
}

export class MetricsDatapath implements DatapathFamily<MetricsInput, Registry> {
  private readonly obj: BpfObject;
  /** Series → the cell of http_cells holding their per-CPU counts (see bpf/metrics/http.bpf.c). */
  private readonly series: BpfMap<HttpKey, number>;
  private readonly cells: PerCpuMap<number, HttpValue>;
  /** Per direction, the requests that found no series of their own (a full map). */
  private readonly overflow: PerCpuMap<number, HttpValue>;
  private readonly tcp: PerCpuMap<PairKey, { opened: number; closed: number; bytesSent: number; bytesReceived: number }>;
  private readonly countersMap: PerCpuMap<number, bigint>;
  /** Names workloads and peers in the metrics' labels: the last applied input's. */
  private resolver: IdentityResolver = { local: () => undefined, peer: () => undefined };
  /** Client connections waiting for their server's socket (read only for its fill). */
  private readonly pending: BpfMap<PendingKey, PendingValue>;
  /** The addresses series may name; other peers are "unknown". */
  private readonly peers: BpfMap<PeerKey, number>;
  /** What setKnownPeers last wrote there (undefined: read the map). */
  private known: Set<string> | undefined;
  /** Addresses of the last set written that did not fit the table (see setKnownPeers). */
  private unnamed = 0;
  /** HTTP/2 streams from the h2_events ring buffer, once consumeH2 started them. */
  private h2: { streams: H2Streams; ring: RingBuffer } | undefined;

  private constructor(obj: BpfObject) {
    this.obj = obj;
    this.series = obj.map(names.maps.http_requests, { key: httpKey, value: c.u32 });
    this.cells = obj.perCpuMap(names.maps.http_cells, { key: c.u32, value: httpValue });
    this.tcp = obj.perCpuMap(names.maps.tcp_stats, { key: pairKey, value: pairValue });
    this.countersMap = obj.perCpuMap(names.maps.http_counters, { key: c.u32, value: c.u64 });
    this.overflow = obj.perCpuMap(names.maps.http_overflow, { key: c.u32, value: httpValue });
    this.pending = obj.map(names.maps.http_pending, { key: pendingKey, value: pendingValue });
    this.peers = obj.map(names.maps.http_peers, { key: peerKey, value: c.u32 });
    // Until the known peers are written, every address is known (the all-zero key): a datapath used without
    // them names every peer, as before. An adopted set is kept.
    if (this.peers.count() === 0) this.peers.set(ANY_PEER, 1, 'any');
    // The TCP overflow entry exists before any program runs, so a full map always has somewhere to count. Maps
    // adopted from pins already have it (with counts that must not be reset). Requests that find no series are
    // counted per direction in http_overflow (maps pinned by earlier builds may still hold an overflow key in
    // http_requests, whose cell 0 is read as the client side's).
    const zero16 = Buffer.alloc(16);
    const tcpOverflow = { cgroupId: OVERFLOW_CGROUP, remoteIp: zero16, port: 0, dir: 0, family: 0 };
    if (this.tcp.get(tcpOverflow) === undefined) this.tcp.set(tcpOverflow, { opened: 0, closed: 0, bytesSent: 0, bytesReceived: 0 }, 'noexist');
  }

  static load(opts: MetricsOptions = {}): MetricsDatapath {
    const spec = ObjectSpec.embedded(names.name);
    try {
      if (opts.maxHttpKeys !== undefined) {
        spec.setMaxEntries(names.maps.http_requests, opts.maxHttpKeys);
        spec.setMaxEntries(names.maps.http_cells, opts.maxHttpKeys);
      }
      // Sockets remember their last series' cell under this load's number (see cell_epoch in http.bpf.c).
      spec.setConstant(names.constants.cell_epoch, randomInt(1, 2 ** 32));
      if (opts.maxTcpKeys !== undefined) spec.setMaxEntries(names.maps.tcp_stats, opts.maxTcpKeys);
      if (opts.maxPeers !== undefined) spec.setMaxEntries(names.maps.http_peers, opts.maxPeers);
      if (opts.h2RingBytes !== undefined) {
        const n = opts.h2RingBytes;
        if (!Number.isInteger(n) || n < 4096 || n > 2 ** 30 || (n & (n - 1)) !== 0) throw new RangeError(`h2RingBytes must be a power of two in [4096, 2^30], got ${n}`);
        spec.setMaxEntries(names.maps.h2_events, n);
      }
      // Records wake the consumer only when another quarter of the ring waits (see h2_wakeup_bytes in http.bpf.c).
      spec.setConstant(names.constants.h2_wakeup_bytes, (opts.h2RingBytes ?? H2_RING_BYTES) / 4);
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
    return new MetricsDatapath(spec.load());
  }

  /** Attaches sockops and cgroup_skb ingress/egress to a cgroup v2 directory: its TCP sockets are measured. */
  attach(cgroupPath: string): Link[] {
    return this.obj.attachCgroup(cgroupPath);
  }

  /** Attaches through links pinned in `linkDir`, adopting or replacing in place what is pinned there
   *  (see BpfObject.attachCgroupPinned): restarts never attach a second copy. */
  attachPinned(cgroupPath: string, linkDir: string): PinnedAttachment[] {
    return this.obj.attachCgroupPinned(cgroupPath, linkDir);
  }

  /**
   * The peers that series may name: the addresses of the mesh's workloads and endpoints. A connection with any
   * other peer (any local process can connect from any 127/8 address) is counted under one "unknown" peer
   * (remoteIp ''), so that what a peer can create in the aggregation tables is bounded by the config. Applies to
   * connections established from now on. Throws before changing anything when an address is not one.
   * A set larger than the table is written as far as it fits, never refused (metrics capacity must not refuse
   * the config routing is part of): the peers already known stay (their series keep their names), then new
   * ones in the order given; the rest count as "unknown" and are counted in `unnamed` (unnamedPeers).
   */
  setKnownPeers(addresses: Iterable<string>): { known: number; unnamed: number } {
    this.written = undefined;
    runSteps(this.writePeerSteps(runSteps(this.peerKeySteps(addresses))));
    return { known: this.known?.size ?? 0, unnamed: this.unnamed };
  }

  /** Addresses of the last known-peer set that did not fit http_peers: their connections count as "unknown". */
  unnamedPeers(): number {
    return this.unnamed;
  }

  /** The addresses in the known-peer table now (none but the all-zero "every address" key before a set is
   *  written: then empty). */
  knownPeers(): string[] {
    const out: string[] = [];
    for (const [k] of this.peers.getBatch({ batchSize: PEER_BATCH })) if (k.family !== 0) out.push(c.bytesToIp(k.ip, k.family));
    return out;
  }

  /** The keys of a set of peer addresses a slice of time at a time, the event loop served in between (20,000
   *  workloads' addresses). */
  private peerKeysAsync(addresses: Iterable<string>): Promise<Set<string>> {
    return runSliced(this.peerKeySteps(addresses));
  }

  /** The keys (peerId) of a set of peer addresses, yielding every 256; throws when one is not an address. */
  private *peerKeySteps(addresses: Iterable<string>): Generator<void, Set<string>, void> {
    const want = new Set<string>();
    let n = 0;
    for (const a of addresses) {
      if (++n % 256 === 0) yield;
      if (isIP(a) === 0) throw new TypeError(`setKnownPeers: ${JSON.stringify(a)} is not an IP address`);
      let b = c.ipToBytes(a);
      // The kernel names an IPv4 peer of a dual-stack socket (::ffff:a.b.c.d) by its IPv4 address.
      if (b.length === 16 && b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) b = b.subarray(12);
      const ip = Buffer.alloc(16);
      b.copy(ip);
      const key = { ip, family: b.length === 4 ? AF_INET : AF_INET6 };
      want.add(peerId(key));
    }
    return want;
  }

  /** Writes the known-peer set `want`, PEER_BATCH keys a syscall, yielding after each batch; as much of it as
   *  fits, the peers already known first (see setKnownPeers). */
  private *writePeerSteps(want: Set<string>): Generator<void, void, void> {
    let have = this.known;
    if (!have) {
      have = new Set();
      for (const [k] of this.peers.getBatch({ batchSize: PEER_BATCH })) have.add(peerId(k));
      yield;
    }
    this.known = undefined; // re-read from the map if the writes below fail half-way
    // Removed first, so that the map has room for the new set; a connection established meanwhile may name a
    // peer that stays known as "unknown".
    const gone: PeerKey[] = [];
    let n = 0;
    // Yielding every 1,024 keys here and below: 20,000 peers looked up at once held the event loop ~40 ms.
    for (const id of have) {
      if (++n % 1024 === 0) yield;
      if (!want.has(id)) gone.push(peerKeyOf(id));
    }
    for (let i = 0; i < gone.length; i += PEER_BATCH) {
      const chunk = gone.slice(i, i + PEER_BATCH);
      try {
        this.peers.deleteBatch(chunk);
      } catch (err) {
        // A key already gone (ENOENT) stops the batch: delete the rest one by one.
        if ((err as { code?: string }).code !== 'ENOENT') throw err;
        for (const k of chunk) this.peers.delete(k);
      }
      yield;
    }
    const kept = have.size - gone.length;
    const room = Math.max(0, this.peers.maxEntries - kept);
    const added: [PeerKey, number][] = [];
    const written = new Set<string>();
    for (const id of want) {
      if (++n % 1024 === 0) yield;
      if (have.has(id)) written.add(id);
      else if (added.length < room) {
        added.push([peerKeyOf(id), 1]);
        written.add(id);
      }
    }
    for (let i = 0; i < added.length; i += PEER_BATCH) {
      this.peers.setBatch(added.slice(i, i + PEER_BATCH));
      yield;
    }
    this.known = written;
    this.unnamed = want.size - written.size;
  }

  /** The input checked last and its keys: applyPart of the same input does not make them again. */
  private checked: { input: MetricsInput; keys: Set<string> } | undefined;

  /** Throws, writing nothing, when an address is not one. Peers beyond the known-peer table's capacity are not
   *  an error (see setKnownPeers): they are named "unknown", and applyPart reports how many. */
  async check(input: MetricsInput): Promise<void> {
    this.checked = undefined;
    this.checked = this.written?.input === input ? this.written : { input, keys: await this.peerKeysAsync(input.knownAddresses()) };
  }

  /** The input last written whole and its keys: the same input again (the agent keeps its names across a
   *  reload that changes no workload or endpoint) writes nothing. */
  private written: { input: MetricsInput; keys: Set<string> } | undefined;

  /** The family's apply (see DatapathFamily): the known peers, and the names the metrics' labels use. */
  async applyPart(input: MetricsInput): Promise<PartApplied> {
    const keys = this.checked?.input === input ? this.checked.keys : await this.peerKeysAsync(input.knownAddresses());
    this.checked = undefined;
    const max = this.peers.maxEntries;
    const same = this.written?.input === input && this.known !== undefined;
    this.written = undefined;
    try {
      // Each batch is a syscall of ~1 ms: the event loop turns after every one (/healthz during a 20,000-peer apply).
      if (!same) await runSliced(this.writePeerSteps(keys), 0);
    } catch (err) {
      // The families before this one (the split) have written their parts by now: a write the kernel refuses
      // (no memory for an element, a table someone else filled) must not make the agent report a config it
      // routes as refused. The peers the table holds stay named; the rest count as "unknown".
      let named = 0;
      for (const [k] of this.peers.getBatch({ batchSize: PEER_BATCH })) if (keys.has(peerId(k))) named++;
      this.unnamed = keys.size - named;
      this.resolver = input;
      return {
        log: { unnamedPeers: this.unnamed },
        warnings: [
          {
            msg: `the known-peer table could not be written (${(err as Error).message}): the connections of ${this.unnamed} peers are counted under the "unknown" peer; it is written again with the next config`,
            fields: { unnamed: this.unnamed, peers: keys.size, capacity: max, map: names.maps.http_peers },
          },
        ],
      };
    }
    this.resolver = input;
    this.written = { input, keys };
    if (this.unnamed === 0) return {};
    return {
      log: { unnamedPeers: this.unnamed },
      warnings: [
        {
          msg: `peer addresses do not fit the known-peer table: their connections are counted under the "unknown" peer until the agent restarts (which sizes it from the config) or runs with a larger --max-peers (at least ${keys.size})`,
          fields: { unnamed: this.unnamed, peers: keys.size, capacity: max, map: names.maps.http_peers },
        },
      ],
    };
  }

  /** The request, gRPC and TCP metrics (KernelMetrics) and the mesh's map fill; starts consuming HTTP/2 frames
   *  from the kernel's ring buffer. */
  registerMetrics(registry: Registry, mesh: MeshView): void {
    this.consumeH2();
    const metrics = new KernelMetrics(
      { read: () => this.read(), fill: () => mesh.fill(), readH2: () => this.readH2(), unnamedPeers: () => this.unnamedPeers() },
      { resolver: { local: (...a) => this.resolver.local(...a), peer: (...a) => this.resolver.peer(...a) } },
    );
    metrics.register(registry);
  }

  /** The kernel's event counters (see readCounters). */
  counters(): Record<CounterName, number> {
    return this.readCounters();
  }

  /** Reads every aggregate (one batch read per map), summed over CPUs. */
  read(): MetricsSnapshot {
    const http = this.readHttp();
    const tcp: TcpSample[] = [];
    for (const [k, perCpu] of this.tcp.getBatch()) {
      const s = perCpu.reduce(
        (a, v) => ({ opened: a.opened + v.opened, closed: a.closed + v.closed, bytesSent: a.bytesSent + v.bytesSent, bytesReceived: a.bytesReceived + v.bytesReceived }),
        { opened: 0, closed: 0, bytesSent: 0, bytesReceived: 0 },
      );
      if (s.opened + s.closed + s.bytesSent + s.bytesReceived === 0) continue;
      tcp.push({ ...where(k), ...s });
    }
    return { http, tcp, counters: this.readCounters() };
  }

  /** The kernel's event counters alone (not-HTTP connections, unparsed responses, overflows), summed over CPUs. */
  readCounters(): Record<CounterName, number> {
    const counters = {} as Record<CounterName, number>;
    const all = this.countersMap.getBatch({ batchSize: counterNames.length, max: counterNames.length });
    counterNames.forEach((n, i) => (counters[n] = Number((all[i]?.[1] ?? []).reduce((a, b) => a + b, 0n))));
    // Records the user-space queue had no room for are lost the same way as the kernel's.
    counters.h2_drops += this.h2?.ring.stats().dropped ?? 0;
    return counters;
  }

  /** Reads only the request aggregates (what a caller sampling request rates needs), summed over CPUs. */
  readHttp(): HttpSample[] {
    const http: HttpSample[] = [];
    const series = this.series.getBatch();
    // The programs hand out cells from the array's start: one batch read of the cells up to the highest in use,
    // not one lookup per series.
    let top = -1;
    for (const [, cell] of series) if (cell > top) top = cell;
    const cells = top < 0 ? [] : this.cells.getBatch({ batchSize: Math.min(top + 1, 1024), max: top + 1 });
    for (const [k, cell] of series) {
      const v = sumCpus(cells[cell]?.[1]);
      if (v) http.push({ ...where(k), method: METHODS[k.method] ?? '_OTHER', status: k.status, ...v });
    }
    DIRECTIONS.forEach((direction, i) => {
      const v = sumCpus(this.overflow.get(i));
      if (v) http.push({ direction, cgroupId: undefined, remoteIp: '', port: 0, method: '', status: 0, ...v });
    });
    return http;
  }

  /**
   * Starts consuming the kernel's HTTP/2 header frames (h2_events): a native thread empties the ring as records
   * arrive (a busy or starved event loop would let it overflow), into a queue of up to `queueBytes` (default
   * 64 MiB) that the event loop decodes from: HPACK per connection direction, streams aggregated in user space
   * (see readH2). A record the full queue has no room for is lost like one the ring had no room for (a sequence
   * gap; counted in h2_drops). Calling it again changes nothing.
   */
  consumeH2(opts: H2StreamsOptions & { ref?: boolean; queueBytes?: number } = {}): void {
    if (this.h2) return;
    const streams = new H2Streams(opts);
    const ring = this.obj.ringBuffer(names.maps.h2_events, (batches: Buffer[]) => streams.packed(batches), {
      ref: opts.ref ?? false,
      // Ahead of the workloads (nice -10): a starved drain thread is what lets the ring overflow.
      // Drained every H2_POLL_MS, and at once when another quarter of the ring waits: a record has no wake-up of its own.
      // Packed: one Buffer per batch, records read in place (not an allocation and a JS object per record); reused
      // from batch to batch, since H2Streams keeps nothing of a batch past its call (it copies what it keeps).
      thread: { queueBytes: opts.queueBytes, nice: -10, pollMs: H2_POLL_MS, packed: true, reuse: true },
    });
    this.h2 = { streams, ring };
  }

  /** Reads what is in the ring buffer now, without waiting for the event loop (tests, a scrape). */
  pollH2(): void {
    this.h2?.ring.consume();
  }

  /** HTTP/2 and gRPC aggregates so far (empty until consumeH2), and the decoding layer's counters. */
  readH2(): { http: H2HttpSample[]; rpc: RpcSample[]; counters: H2Counters | undefined; connections: number } {
    if (!this.h2) return { http: [], rpc: [], counters: undefined, connections: 0 };
    this.h2.ring.consume();
    return { ...this.h2.streams.read(), counters: { ...this.h2.streams.counters }, connections: this.h2.streams.connections };
  }

  /** Entries in use and capacity of the aggregation maps and of the pairing table (map pressure). */
  fill(): Record<'http_requests' | 'tcp_stats' | 'http_pending' | 'http_peers', MapFill> {
    return {
      http_requests: { used: this.series.count(), max: this.series.maxEntries },
      http_pending: { used: this.pending.count(), max: this.pending.maxEntries },
      http_peers: { used: this.peers.count(), max: this.peers.maxEntries },
      tcp_stats: { used: this.tcp.count(), max: this.tcp.maxEntries },
    };
  }

  close(): void {
    this.h2?.ring.close();
    this.h2 = undefined;
    this.obj.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Known peers written or deleted per syscall. */
const PEER_BATCH = 1024;


