/**
 * HTTP/2 and gRPC golden signals from the kernel's h2_events records (struct h2_record in bpf/include/http.h):
 * one HeaderDirection per connection direction, streams followed from the request's HEADERS to their end, and
 * aggregates per side (local cgroup, peer, port) with the OpenTelemetry buckets of the HTTP/1.x series.
 *
 * An HTTP/1.1 request that switched the connection to h2c ("Upgrade: h2c", 101) is stream 1: the kernel hands
 * over its method and start (KIND_UPGRADE), its answer comes as HTTP/2.
 *
 * A stream ends at the response's END_STREAM (HEADERS, trailers, or a DATA frame's header), at RST_STREAM, or
 * at a GOAWAY that did not cover it. Its duration is, as for HTTP/1.x, first byte of the request to first byte
 * of the response (the response's HEADERS); a gRPC call's runs to its trailers (the call's lifetime). A stream
 * whose blocks could not be decoded (a direction lost: a record dropped, a decoding error) is counted with an
 * empty status, never with a label read from a table out of step.
 */
import { codec as c } from '@mesh/bpf';

import { BUCKET_BOUNDS_S, HTTP_BUCKETS, METHODS } from '../maps.js';
import { HeaderDirection } from './direction.js';
import { FrameType, type FrameHeader } from './frames.js';

/** struct h2_record's layout (32 bytes, then the items of a frames record, or a connection record's identity). */
const REC = { cookie: 0, ts: 8, seq: 16, length: 20, frames: 24, kind: 26, flags: 27, method: 28, data: 32 } as const;
export const H2_RECORD_HEADER = 32;
/** struct h2_ident, a connection record's payload: who the connection's records are about. */
const IDENT = { cgroup: 0, peerCgroup: 8, remoteIp: 16, localIp: 32, remotePort: 48, localPort: 50, family: 52, flags: 53 } as const;
export const H2_IDENT = 56;
/** struct h2_item: a frame's 9-byte header, a pad byte, the payload bytes captured (u16), then those bytes. */
export const H2_ITEM_HEADER = 12;
const ITEM_CAPTURED = 10;
const KIND_FRAME = 1;
const KIND_LOST = 2;
const KIND_CLOSE = 3;
const KIND_UPGRADE = 4;
const KIND_CONN = 5;
const F_RESPONSE = 1;
const F_SERVER = 2;
const F_PAIRED = 4;
const SETTINGS_HEADER_TABLE_SIZE = 1;
/** Finished streams' objects kept for reuse (see H2Streams.free). */
const FREE_STREAMS = 1024;

/** RST_STREAM / GOAWAY error codes (RFC 9113 §7), as error_type names them. */
const ERROR_CODES = [
  'NO_ERROR', 'PROTOCOL_ERROR', 'INTERNAL_ERROR', 'FLOW_CONTROL_ERROR', 'SETTINGS_TIMEOUT', 'STREAM_CLOSED', 'FRAME_SIZE_ERROR',
  'REFUSED_STREAM', 'CANCEL', 'COMPRESSION_ERROR', 'CONNECT_ERROR', 'ENHANCE_YOUR_CALM', 'INADEQUATE_SECURITY', 'HTTP_1_1_REQUIRED',
] as const;
const errorName = (code: number) => ERROR_CODES[code] ?? '_OTHER';

type Direction = 'client' | 'server';

/** One side of a connection as the aggregates name it (as HttpSample does). */
interface Side {
  direction: Direction;
  cgroupId: bigint;
  remoteIp: string;
  port: number;
}

export interface H2HttpSample extends Side {
  method: (typeof METHODS)[number];
  /** 0: the response could not be decoded (or never came before a reset). */
  status: number;
  /** Set when the stream ended with RST_STREAM (its error code) or GOAWAY ('GOAWAY'). */
  errorType: string;
  count: number;
  sumSeconds: number;
  buckets: number[];
}

export interface RpcSample extends Side {
  service: string;
  method: string;
  /** grpc-status; '' when the call ended without one (reset) or it could not be decoded. */
  grpcStatus: string;
  errorType: string;
  count: number;
  sumSeconds: number;
  buckets: number[];
}

export interface H2Counters {
  /** Records whose direction's sequence number skipped (a record the ring buffer had no room for). */
  gaps: number;
  /** Connection directions marked unknown (gaps, cut records, decoding errors, kernel LOST records). */
  lostDirections: number;
  /** Streams counted without a decoded label (status ''). */
  unparsedStreams: number;
  /** Streams whose request was never seen (its record lost): not in a histogram, counted here. */
  orphanStreams: number;
  /** Records of connections past maxConnections, or streams past maxStreams: ignored. */
  untracked: number;
  /** gRPC methods folded into _OTHER past maxRpcMethods. */
  rpcMethodsCapped: number;
  /** Ring entries read (each one record, or a record the kernel held back and the next, or a connection's identity
   *  and its first record), their bytes (without the ring's 8-byte header each), the records in them (every kind)
   *  and the frames those carried: what a stream costs the ring and the consumer. */
  entries: number;
  bytes: number;
  records: number;
  frames: number;
}

export interface H2StreamsOptions {
  /** Connections followed at once (two decoders each); default 16,384. */
  maxConnections?: number;
  /** Open streams per connection; default 1,024. */
  maxStreams?: number;
  /** Distinct gRPC service/method pairs; later ones are `_OTHER`. Default 1,000. */
  maxRpcMethods?: number;
}

interface Stream {
  start: number | undefined;
  method: (typeof METHODS)[number];
  grpc: boolean;
  service: string;
  rpcMethod: string;
  /** A block of the stream could not be decoded. */
  unknown: boolean;
  status: number;
  /** When the final response's HEADERS came. */
  respAt: number | undefined;
  grpcStatus: string;
  /** Reset by the client before any response was read: its error type, and when (see Conn.resets). */
  reset: string | undefined;
  resetAt: number;
}

interface DirState {
  decoder: HeaderDirection;
  /** The next record's expected sequence number. */
  next: number;
  /** Header-carrying frames seen (HeaderDirection's numbering). */
  headerSeq: number;
}

interface Conn {
  /** Empty until the connection's identity (a KIND_CONN record) came: its streams then count on no side. */
  sides: Side[];
  /** Each side's part of the aggregates' keys, made once per connection. */
  keys: string[];
  dirs: [DirState, DirState];
  streams: StreamTable;
  /** The aggregates this connection's streams went to, one per side, by label: a stream's key is then short
   *  (a number for an HTTP stream without error), not side + labels made and hashed per stream. */
  accs: Map<number | string, Acc[]>;
  /**
   * Streams the client reset before any response was read. The kernel may hold back a response's HEADERS until
   * the direction's next packet (H2_HOLD in bpf/include/http.h): such a stream ends once the response direction's
   * next record was read (what was held comes first), at the close, or at the next read(), with the status it
   * got by then.
   */
  resets: number[];
}

interface Acc {
  count: number;
  sumNs: number;
  buckets: number[];
}

const BOUNDS_NS = BUCKET_BOUNDS_S.map((s) => Math.round(s * 1e9));
function bucketOf(ns: number): number {
  for (let i = 0; i < BOUNDS_NS.length; i++) if (ns <= BOUNDS_NS[i]!) return i;
  return HTTP_BUCKETS - 1;
}

/** An address as HttpSample names it: '' for the all-zero one (a peer that is not known). */
const ipString = (b: Buffer, family: number): string => (b.every((x) => x === 0) ? '' : c.bytesToIp(b, family));

const methodOf = (m: string | undefined): (typeof METHODS)[number] => (m === undefined ? '' : ((METHODS as readonly string[]).includes(m) && m !== '' ? (m as (typeof METHODS)[number]) : '_OTHER'));

/**
 * A connection's open streams: two parallel arrays, searched from the newest, an entry removed by moving the last
 * into its place. A Map here allocated a new hash table every few streams (growing past its deleted entries, and
 * shrinking again once empty), most of the consumer's garbage; a connection has a few streams open at a time
 * (at most maxStreams). Iterate from the end (size - 1 down to 0): a removal moves only an entry already seen.
 */
class StreamTable {
  readonly ids: number[] = [];
  readonly streams: Stream[] = [];

  get size(): number {
    return this.ids.length;
  }

  indexOf(id: number): number {
    const ids = this.ids;
    for (let i = ids.length - 1; i >= 0; i--) if (ids[i] === id) return i;
    return -1;
  }

  get(id: number): Stream | undefined {
    const i = this.indexOf(id);
    return i < 0 ? undefined : this.streams[i];
  }

  has(id: number): boolean {
    return this.indexOf(id) >= 0;
  }

  /** Adds a stream whose id is not in the table. */
  add(id: number, s: Stream): void {
    this.ids.push(id);
    this.streams.push(s);
  }

  delete(id: number): void {
    const i = this.indexOf(id);
    if (i < 0) return;
    const last = this.ids.length - 1;
    this.ids[i] = this.ids[last]!;
    this.streams[i] = this.streams[last]!;
    this.ids.pop();
    this.streams.pop();
  }
}

export class H2Streams {
  readonly counters: H2Counters = { gaps: 0, lostDirections: 0, unparsedStreams: 0, orphanStreams: 0, untracked: 0, rpcMethodsCapped: 0, entries: 0, bytes: 0, records: 0, frames: 0 };
  private readonly conns = new Map<number | bigint, Conn>();
  private readonly http = new Map<string, { sample: Omit<H2HttpSample, 'count' | 'sumSeconds' | 'buckets'>; acc: Acc }>();
  private readonly rpc = new Map<string, { sample: Omit<RpcSample, 'count' | 'sumSeconds' | 'buckets'>; acc: Acc }>();
  private readonly rpcMethods = new Set<string>();
  private readonly header: FrameHeader = { length: 0, type: 0, flags: 0, streamId: 0 };
  /** Connections with streams in Conn.resets. */
  private readonly resetting = new Set<Conn>();
  /** Finished streams' objects, for new streams: a stream then allocates nothing that outlives it. */
  private readonly free: Stream[] = [];
  private readonly maxConnections: number;
  private readonly maxStreams: number;
  private readonly maxRpcMethods: number;

  constructor(opts: H2StreamsOptions = {}) {
    this.maxConnections = opts.maxConnections ?? 16_384;
    this.maxStreams = opts.maxStreams ?? 1024;
    this.maxRpcMethods = opts.maxRpcMethods ?? 1000;
    for (const [k, v] of Object.entries({ maxConnections: this.maxConnections, maxStreams: this.maxStreams, maxRpcMethods: this.maxRpcMethods })) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`H2Streams: ${k} must be a positive integer, got ${v}`);
    }
  }

  /** Connections followed now. */
  get connections(): number {
    return this.conns.size;
  }

  /** Records as the ring buffer hands them over. */
  records(batch: Buffer[]): void {
    for (const r of batch) this.record(r);
  }

  /** Packed batches (RingBuffer thread.packed): records read in place, no Buffer each. Nothing of a batch is kept
   *  past the call (a block split across frames and a replayed block are copies), so its memory may be reused. */
  packed(batches: Buffer[]): void {
    for (const buf of batches) {
      let at = 0;
      while (at < buf.length) {
        if (at + 4 > buf.length) throw new RangeError(`h2 records: ${buf.length - at} octets left, short of a record length`);
        const end = at + 4 + u32(buf, at);
        if (end > buf.length) throw new RangeError(`h2 records: a record of ${end - at - 4} octets with ${buf.length - at - 4} left`);
        this.entryAt(buf, at + 4, end);
        at = end;
      }
    }
  }

  /** One ring entry: a record, or a record held back by the kernel and the one that followed it. */
  record(r: Buffer): void {
    this.entryAt(r, 0, r.length);
  }

  /** The records of the ring entry r[o, end), back to back: each its header and `length` bytes of items. */
  private entryAt(r: Buffer, o: number, end: number): void {
    this.counters.entries++;
    this.counters.bytes += end - o;
    do {
      if (end - o < H2_RECORD_HEADER) throw new RangeError(`h2 record of ${end - o} bytes, shorter than its ${H2_RECORD_HEADER}-byte header`);
      const next = o + H2_RECORD_HEADER + u32(r, o + REC.length);
      if (next > end) throw new RangeError(`h2 record of ${next - o} bytes with ${end - o} left in its ring entry`);
      const conn = this.recordAt(r, o, next);
      if (conn?.resets.length && r[o + REC.flags]! & F_RESPONSE) this.endResets(conn);
      o = next;
    } while (o < end);
  }

  /** The streams the client reset, waiting for the response direction's next record (see Conn.resets). */
  private endResets(conn: Conn): void {
    for (const id of conn.resets) {
      const s = conn.streams.get(id);
      if (s?.reset !== undefined) this.finish(conn, id, s, s.resetAt, s.reset);
    }
    conn.resets = [];
    this.resetting.delete(conn);
  }

  /** The record r[o, end); returns its connection while it is followed. */
  private recordAt(r: Buffer, o: number, end: number): Conn | undefined {
    const cookie = cookieOf(r, o);
    const kind = r[o + REC.kind]!;
    this.counters.records++;
    if (kind === KIND_CLOSE) {
      const conn = this.conns.get(cookie);
      // Streams still open when the connection closes ended without their response ending; unless the response
      // direction was lost after their status came: then how they ended is not known, and they count as answered.
      if (conn) {
        const lost = conn.dirs[1].decoder.error !== undefined;
        const t = conn.streams;
        for (let i = t.size - 1; i >= 0; i--) {
          const id = t.ids[i]!, s = t.streams[i]!;
          if (s.reset !== undefined) this.finish(conn, id, s, s.resetAt, s.reset);
          else this.finish(conn, id, s, tsOf(r, o), lost && s.respAt !== undefined ? '' : 'CLOSED');
        }
        this.resetting.delete(conn);
      }
      this.conns.delete(cookie);
      return;
    }
    let conn = this.conns.get(cookie);
    if (kind === KIND_CONN) {
      // Once per direction, before its first record (the same ring entry), or again after the kernel lost it.
      if (end - o - H2_RECORD_HEADER < H2_IDENT) throw new RangeError(`h2 connection record of ${end - o} bytes, short of its ${H2_RECORD_HEADER + H2_IDENT}`);
      if (!conn) {
        if (this.conns.size >= this.maxConnections) {
          this.counters.untracked++;
          return;
        }
        this.conns.set(cookie, (conn = this.newConn()));
      }
      if (!conn.sides.length) this.identify(conn, r, o + REC.data);
      return conn;
    }
    const di = r[o + REC.flags]! & F_RESPONSE ? 1 : 0;
    if (!conn) {
      if (this.conns.size >= this.maxConnections) {
        this.counters.untracked++;
        return;
      }
      this.conns.set(cookie, (conn = this.newConn()));
      // Its identity was lost (or came before this consumer): nothing of this direction is trusted.
      this.lose(conn.dirs[di], 'a record before its connection\'s identity');
    }
    const dir = conn.dirs[di];
    const seq = u32(r, o + REC.seq);
    if (seq !== dir.next) {
      this.counters.gaps++;
      this.lose(dir, `records ${dir.next}..${seq - 1} of this direction were lost`);
    }
    dir.next = (seq + 1) >>> 0;
    if (kind === KIND_LOST) {
      this.lose(dir, 'the kernel lost its place in the frames');
      return conn;
    }
    if (kind === KIND_UPGRADE) {
      // An HTTP/1.1 request upgraded to h2c: stream 1, answered on the response direction that starts now. The
      // client's first SETTINGS were its request's HTTP2-Settings header, which the kernel does not hand over:
      // whatever SETTINGS_HEADER_TABLE_SIZE it allowed there, the server's encoder may use, so table size updates
      // are accepted up to the decoder's own bound (maxTableSize) until the client's SETTINGS say otherwise. A
      // larger table than allowed is the encoder's error, never a wrong label: the updates it sends say the size.
      const hpack = dir.decoder.hpack;
      hpack.setTableSizeLimit(hpack.maxTableSize);
      if (conn.streams.size >= this.maxStreams) this.counters.untracked++;
      else {
        conn.streams.delete(1);
        conn.streams.add(1, this.newStream(tsOf(r, o), METHODS[r[o + REC.method]!] ?? '_OTHER'));
      }
      return conn;
    }
    if (kind !== KIND_FRAME) return conn;
    // The frames of one packet, in order: one time for all.
    const frames = r[o + REC.frames]! | (r[o + REC.frames + 1]! << 8);
    const ts = tsOf(r, o);
    this.counters.frames += frames;
    let f = o + REC.data;
    // One header object for every frame: nothing keeps it past the call (an open header block copies its fields).
    const header = this.header;
    for (let i = 0; i < frames; i++) {
      if (f + H2_ITEM_HEADER > end) throw new RangeError(`h2 record: frame ${i} of ${frames} past the record's ${end - o} bytes`);
      header.length = (r[f]! << 16) | (r[f + 1]! << 8) | r[f + 2]!;
      header.type = r[f + 3]!;
      header.flags = r[f + 4]!;
      header.streamId = ((r[f + 5]! & 0x7f) << 24) | (r[f + 6]! << 16) | (r[f + 7]! << 8) | r[f + 8]!;
      const data = f + H2_ITEM_HEADER;
      const next = data + (r[f + ITEM_CAPTURED]! | (r[f + ITEM_CAPTURED + 1]! << 8));
      if (next > end) throw new RangeError(`h2 record: frame ${i} of ${frames} with ${next - data} payload bytes past the record's end`);
      this.frame(conn, di, header, r, data, next, ts);
      f = next;
    }
    return conn;
  }

  private newConn(): Conn {
    const dir = (): DirState => ({ decoder: new HeaderDirection(), next: 0, headerSeq: 0 });
    return { sides: [], keys: [], dirs: [dir(), dir()], streams: new StreamTable(), accs: new Map(), resets: [] };
  }

  /** The connection's sides from its identity (struct h2_ident at r[i]). */
  private identify(conn: Conn, r: Buffer, i: number): void {
    const flags = r[i + IDENT.flags]!;
    const family = r[i + IDENT.family]!;
    const server = (flags & F_SERVER) !== 0;
    const cgroupId = r.readBigUInt64LE(i + IDENT.cgroup);
    const remoteIp = ipString(r.subarray(i + IDENT.remoteIp, i + IDENT.remoteIp + 16), family);
    const remotePort = r.readUInt16LE(i + IDENT.remotePort);
    const localPort = r.readUInt16LE(i + IDENT.localPort);
    const sides: Side[] = [server ? { direction: 'server', cgroupId, remoteIp, port: localPort } : { direction: 'client', cgroupId, remoteIp, port: remotePort }];
    // A server socket measuring its client's side too names it as the client's own socket would (see http.h).
    if (server && flags & F_PAIRED) sides.push({ direction: 'client', cgroupId: r.readBigUInt64LE(i + IDENT.peerCgroup), remoteIp: ipString(r.subarray(i + IDENT.localIp, i + IDENT.localIp + 16), family), port: localPort });
    conn.sides = sides;
    conn.keys = sides.map((x) => `${x.direction}|${x.cgroupId}|${x.remoteIp}|${x.port}`);
    conn.accs.clear();
  }

  private lose(dir: DirState, why: string): void {
    if (!dir.decoder.error) this.counters.lostDirections++;
    dir.decoder.markLost(why);
  }

  /** A frame of the record r, its payload r[start, end) (a view made only for the few frames that read one). */
  private frame(conn: Conn, di: number, h: FrameHeader, r: Buffer, start: number, end: number, ts: number): void {
    const dir = conn.dirs[di]!;
    switch (h.type) {
      case FrameType.SETTINGS: {
        const payload = r.subarray(start, end);
        // The receiver's table size limit: it bounds the other direction's encoder.
        for (let i = 0; i + 6 <= payload.length; i += 6) {
          if (payload.readUInt16BE(i) === SETTINGS_HEADER_TABLE_SIZE) {
            try {
              conn.dirs[1 - di]!.decoder.hpack.setTableSizeLimit(payload.readUInt32BE(i + 2));
            } catch {
              this.lose(conn.dirs[1 - di]!, 'a table size the decoder does not allow');
            }
          }
        }
        return;
      }
      case FrameType.HEADERS:
      case FrameType.CONTINUATION:
      case FrameType.PUSH_PROMISE: {
        if (h.type === FrameType.HEADERS && di === 0 && !conn.streams.has(h.streamId)) {
          if (conn.streams.size >= this.maxStreams) {
            this.counters.untracked++;
          } else {
            conn.streams.add(h.streamId, this.newStream(ts, ''));
          }
        }
        if (!dir.decoder.error && end - start < h.length) this.counters.lostDirections++;
        const b = dir.decoder.frameAt(h, r, start, end, dir.headerSeq);
        dir.headerSeq = (dir.headerSeq + 1) >>> 0;
        if (!b || b.type !== FrameType.HEADERS) return;
        const s = conn.streams.get(b.streamId);
        if (di === 0) {
          if (!s) return;
          if (!b.signals) s.unknown = true;
          else if (s.method === '' && !s.unknown) {
            s.method = methodOf(b.signals.method);
            s.grpc = b.signals.grpc;
            s.service = b.signals.rpcService ?? '';
            s.rpcMethod = b.signals.rpcMethod ?? '';
          }
          return;
        }
        if (!s) {
          // Its request was never seen (lost): nothing to time it from.
          if (b.endStream || (b.signals?.status ?? 200) >= 200) this.counters.orphanStreams++;
          return;
        }
        if (!b.signals) s.unknown = true;
        if (s.respAt === undefined) {
          const status = b.signals?.status;
          // Interim responses (1xx) are not the answer.
          if (status !== undefined && status < 200) return;
          s.respAt = ts;
          s.status = s.unknown ? 0 : (status ?? 0);
        }
        if (b.signals?.grpcStatus !== undefined) s.grpcStatus = String(b.signals.grpcStatus);
        // A stream the client reset ends as reset, with the status read (see Conn.resets).
        if (b.endStream) this.finish(conn, b.streamId, s, s.reset === undefined ? ts : s.resetAt, s.reset ?? '');
        return;
      }
      case FrameType.DATA: {
        // Only DATA frames that end a stream come (header only).
        const s = conn.streams.get(h.streamId);
        if (di === 1 && s && s.respAt !== undefined) this.finish(conn, h.streamId, s, s.reset === undefined ? ts : s.resetAt, s.reset ?? '');
        return;
      }
      case FrameType.RST_STREAM: {
        const s = conn.streams.get(h.streamId);
        if (!s) return;
        const error = end - start >= 4 ? errorName(r.readUInt32BE(start)) : '_OTHER';
        if (di === 0 && s.respAt === undefined) {
          // The client's, before any response was read: the kernel may still hold its response's HEADERS.
          if (s.reset === undefined) {
            s.reset = error;
            s.resetAt = ts;
            conn.resets.push(h.streamId);
            this.resetting.add(conn);
          }
          return;
        }
        this.finish(conn, h.streamId, s, ts, error);
        return;
      }
      case FrameType.GOAWAY: {
        // The server's: streams above the last one it processed were not answered. (A client's GOAWAY names the
        // last server-initiated stream, and ends none of the client's.)
        if (di !== 1 || end - start < 4) return;
        const last = r.readUInt32BE(start) & 0x7fffffff;
        const t = conn.streams;
        for (let i = t.size - 1; i >= 0; i--) {
          const id = t.ids[i]!;
          if (id > last && (id & 1) === 1) this.finish(conn, id, t.streams[i]!, ts, 'GOAWAY');
        }
        return;
      }
      default:
        return;
    }
  }

  /** A stream starting at `start`: a finished one's object when there is one (see finish). */
  private newStream(start: number, method: Stream['method']): Stream {
    const s = this.free.pop();
    if (!s) return { start, method, grpc: false, service: '', rpcMethod: '', unknown: false, status: 0, respAt: undefined, grpcStatus: '', reset: undefined, resetAt: 0 };
    s.start = start;
    s.method = method;
    s.grpc = false;
    s.service = s.rpcMethod = s.grpcStatus = '';
    s.unknown = false;
    s.status = 0;
    s.respAt = s.reset = undefined;
    s.resetAt = 0;
    return s;
  }

  /** Counts the stream and removes it; its object then starts a later stream (nothing holds it past this). */
  private finish(conn: Conn, id: number, s: Stream, ts: number, errorType: string): void {
    conn.streams.delete(id);
    this.count(conn, s, ts, errorType);
    if (this.free.length < FREE_STREAMS) this.free.push(s);
  }

  private count(conn: Conn, s: Stream, ts: number, errorType: string): void {
    if (s.start === undefined) return;
    // A connection whose identity never came: no side to count it on, and nothing read from it is trusted.
    if (!conn.sides.length) {
      this.counters.unparsedStreams++;
      return;
    }
    if (s.unknown) this.counters.unparsedStreams++;
    if (s.grpc && !s.unknown) {
      const end = errorType === '' ? ts : (s.respAt ?? ts);
      const d = end > s.start ? end - s.start : 0;
      let service = s.service, method = s.rpcMethod;
      const name = `${service}/${method}`;
      if (!this.rpcMethods.has(name)) {
        if (this.rpcMethods.size < this.maxRpcMethods) this.rpcMethods.add(name);
        else {
          this.counters.rpcMethodsCapped++;
          service = method = '_OTHER';
        }
      }
      const rest = `|${service}|${method}|${s.grpcStatus}|${errorType}`;
      let accs = conn.accs.get(rest);
      if (!accs) {
        accs = conn.sides.map((side, i) => {
          const key = conn.keys[i]! + rest;
          let e = this.rpc.get(key);
          if (!e) this.rpc.set(key, (e = { sample: { ...side, service, method, grpcStatus: s.grpcStatus, errorType }, acc: newAcc() }));
          return e.acc;
        });
        conn.accs.set(rest, accs);
      }
      for (const acc of accs) add(acc, d);
      return;
    }
    const end = s.respAt ?? ts;
    const d = end > s.start ? end - s.start : 0;
    const status = s.unknown ? 0 : s.status;
    const method = s.unknown ? '' : s.method;
    // An HTTP stream's labels as one number (method index, status below 1000) when it ended without error;
    // a gRPC one's key starts with '|', so the two never meet.
    const short = errorType === '' ? METHODS.indexOf(method) * 1000 + status : `${method}|${status}|${errorType}`;
    let accs = conn.accs.get(short);
    if (!accs) {
      const rest = `|${method}|${status}|${errorType}`;
      accs = conn.sides.map((side, i) => {
        const key = conn.keys[i]! + rest;
        let e = this.http.get(key);
        if (!e) this.http.set(key, (e = { sample: { ...side, method, status, errorType }, acc: newAcc() }));
        return e.acc;
      });
      conn.accs.set(short, accs);
    }
    for (const acc of accs) add(acc, d);
  }

  /** The aggregates so far (counts only grow). Streams the client reset are counted by now, whatever came. */
  read(): { http: H2HttpSample[]; rpc: RpcSample[] } {
    for (const conn of this.resetting) this.endResets(conn);
    const out = <T>(m: Map<string, { sample: T; acc: Acc }>) =>
      [...m.values()].map(({ sample, acc }) => ({ ...sample, count: acc.count, sumSeconds: acc.sumNs / 1e9, buckets: [...acc.buckets] }));
    return { http: out(this.http), rpc: out(this.rpc) };
  }
}

/** A record's time (ns since boot) as a number, not a BigInt allocated per record: exact below 2^53 ns (104
 *  days of uptime), and past that off by a few nanoseconds at most. */
const tsOf = (r: Buffer, o: number): number => u32(r, o + REC.ts + 4) * 0x100000000 + u32(r, o + REC.ts);

/** A socket's cookie as a Map key: a number while it fits one exactly (a BigInt key hashes slower), else a BigInt. */
function cookieOf(r: Buffer, o: number): number | bigint {
  const hi = u32(r, o + REC.cookie + 4);
  return hi < 0x200000 ? hi * 0x100000000 + u32(r, o + REC.cookie) : r.readBigUInt64LE(o + REC.cookie);
}

/** A little-endian u32 at o, which the caller checked is inside r (Buffer#readUInt32LE checks it again). */
const u32 = (r: Buffer, o: number): number => (r[o]! | (r[o + 1]! << 8) | (r[o + 2]! << 16) | (r[o + 3]! << 24)) >>> 0;

const newAcc = (): Acc => ({ count: 0, sumNs: 0, buckets: new Array<number>(HTTP_BUCKETS).fill(0) });

function add(acc: Acc, d: number): void {
  acc.count++;
  acc.sumNs += d;
  acc.buckets[bucketOf(d)]!++;
}
