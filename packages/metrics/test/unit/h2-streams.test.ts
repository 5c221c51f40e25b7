// H2Streams over hand-made kernel records (struct h2_record): stream timing, a record gap making the direction's
// later streams unparsed, RST_STREAM and GOAWAY as errors, close records freeing connections, the connection's
// identity sent once per direction (and what happens when it is lost), and the bounds.
import { describe, expect, it } from 'vitest';

import { H2_IDENT, H2_ITEM_HEADER, H2_RECORD_HEADER, H2Streams } from '../../src/h2/streams.js';

const F_RESPONSE = 1, F_SERVER = 2;
const HEADERS = 1, DATA = 0, RST_STREAM = 3, GOAWAY = 7;
const END_STREAM = 1, END_HEADERS = 4;
// HPACK static-table indices (RFC 7541 Appendix A): a request GET / and responses 200 / 404.
const GET = Buffer.from([0x82, 0x84]);
const S200 = Buffer.from([0x88]);
const S404 = Buffer.from([0x8d]);

interface Frame {
  type?: number;
  fflags?: number;
  stream?: number;
  payload?: Buffer;
}

interface Rec extends Frame {
  cookie?: bigint;
  kind?: number;
  flags: number;
  seq: number;
  ts: number;
  /** A frames record's frames: by default the one the fields above describe (none for other kinds). */
  frames?: Frame[];
  /** Not preceded by the connection's identity (which the kernel sends in the entry of a direction's first record,
   *  seq 0): by default the identity comes with seq 0 only. */
  bare?: boolean;
  method?: number;
}

/** A connection record (KIND_CONN): the identity of connection `cookie` (cgroup 7, a server on port 8080, peer 127.0.0.2). */
function conn(cookie = 1n, peer = [127, 0, 0, 2]): Buffer {
  const b = Buffer.alloc(H2_RECORD_HEADER + H2_IDENT);
  b.writeBigUInt64LE(cookie, 0);
  b.writeUInt32LE(H2_IDENT, 20);
  b[26] = 5;
  const i = H2_RECORD_HEADER;
  b.writeBigUInt64LE(7n, i);
  b.set(peer, i + 16);
  b.writeUInt16LE(40000, i + 48);
  b.writeUInt16LE(8080, i + 50);
  b[i + 52] = 2;
  b[i + 53] = F_SERVER;
  return b;
}

/** A record (with its connection's identity in front when it is its direction's first: seq 0, not `bare`). */
function rec(r: Rec): Buffer {
  const frames = r.frames ?? ((r.kind ?? 1) === 1 ? [r] : []);
  const items = frames.map((f) => {
    const payload = f.payload ?? Buffer.alloc(0);
    const item = Buffer.alloc(H2_ITEM_HEADER + payload.length);
    item.writeUIntBE(payload.length, 0, 3);
    item[3] = f.type ?? HEADERS;
    item[4] = f.fflags ?? END_HEADERS;
    item.writeUInt32BE(f.stream ?? 1, 5);
    item.writeUInt16LE(payload.length, 10);
    payload.copy(item, H2_ITEM_HEADER);
    return item;
  });
  const b = Buffer.alloc(H2_RECORD_HEADER);
  b.writeBigUInt64LE(r.cookie ?? 1n, 0);
  b.writeBigUInt64LE(BigInt(r.ts) * 1_000_000n, 8);
  b.writeUInt32LE(r.seq, 16);
  b.writeUInt32LE(items.reduce((a, x) => a + x.length, 0), 20);
  b.writeUInt16LE(frames.length, 24);
  b[26] = r.kind ?? 1;
  b[27] = r.flags;
  b[28] = r.method ?? 0;
  const ident = r.seq === 0 && !r.bare && r.kind !== 3 ? [conn(r.cookie ?? 1n)] : [];
  return Buffer.concat([...ident, b, ...items]);
}

const counts = (h: H2Streams) => Object.fromEntries(h.read().http.map((s) => [`${s.method} ${s.status}${s.errorType ? ` ${s.errorType}` : ''}`, s.count]));

describe('H2Streams', () => {
  it('times a stream from its request HEADERS to the response HEADERS, ends it at END_STREAM (a DATA header)', () => {
    const h = new H2Streams();
    h.records([
      rec({ flags: 0, seq: 0, ts: 0, fflags: END_HEADERS | END_STREAM, payload: GET }),
      rec({ flags: F_RESPONSE, seq: 0, ts: 30, payload: S200 }),
    ]);
    expect(h.read().http).toEqual([]); // not ended yet
    h.record(rec({ flags: F_RESPONSE, seq: 1, ts: 90, type: DATA, fflags: END_STREAM }));
    const [s] = h.read().http;
    expect(s).toMatchObject({ direction: 'server', remoteIp: '127.0.0.2', port: 8080, method: 'GET', status: 200, errorType: '', count: 1 });
    expect(s!.sumSeconds).toBeCloseTo(0.03, 9);
    expect(s!.buckets[3]).toBe(1); // (25 ms, 50 ms]
  });

  it('one record carries a packet\'s frames in order: streams answered and ended by one response record each', () => {
    const h = new H2Streams();
    h.records([
      // Two requests in one packet, then one packet answering both: HEADERS, the DATA that ends each stream.
      rec({ flags: 0, seq: 0, ts: 0, frames: [
        { stream: 1, fflags: END_HEADERS | END_STREAM, payload: GET },
        { stream: 3, fflags: END_HEADERS | END_STREAM, payload: GET },
      ] }),
      rec({ flags: F_RESPONSE, seq: 0, ts: 20, frames: [
        { stream: 1, payload: S200 },
        { stream: 3, payload: S404 },
        { stream: 1, type: DATA, fflags: END_STREAM },
        { stream: 3, type: DATA, fflags: END_STREAM },
      ] }),
    ]);
    expect(counts(h)).toEqual({ 'GET 200': 1, 'GET 404': 1 });
    expect(h.read().http.every((x) => Math.abs(x.sumSeconds - 0.02) < 1e-9)).toBe(true);
    expect(h.counters).toMatchObject({ gaps: 0, lostDirections: 0, unparsedStreams: 0, entries: 2, records: 4, frames: 6 });
  });

  it('a ring entry of two records: a response HEADERS held back by the kernel, then the record that ends its stream', () => {
    const h = new H2Streams();
    h.record(rec({ flags: 0, seq: 0, ts: 0, fflags: END_HEADERS | END_STREAM, payload: GET }));
    h.record(Buffer.concat([
      rec({ flags: F_RESPONSE, seq: 0, ts: 30, payload: S200 }),
      rec({ flags: F_RESPONSE, seq: 1, ts: 90, type: DATA, fflags: END_STREAM }),
    ]));
    expect(counts(h)).toEqual({ 'GET 200': 1 });
    expect(h.read().http[0]!.sumSeconds).toBeCloseTo(0.03, 9); // to the held HEADERS' time
    expect(h.counters).toMatchObject({ gaps: 0, lostDirections: 0, entries: 2, records: 5, frames: 3 });
  });

  it('a client\'s reset read before the response\'s held HEADERS: the stream keeps its status; with none, counted at the next read', () => {
    const h = new H2Streams();
    const cancel = Buffer.alloc(4);
    cancel.writeUInt32BE(8); // CANCEL
    h.records([
      rec({ flags: 0, seq: 0, ts: 0, stream: 1, fflags: END_HEADERS | END_STREAM, payload: GET }),
      rec({ flags: 0, seq: 1, ts: 50, stream: 1, type: RST_STREAM, payload: cancel }),
      // The response's HEADERS (sent at 30 ms), held back by the kernel until the direction's next packet.
      rec({ flags: F_RESPONSE, seq: 0, ts: 30, stream: 1, payload: S200 }),
      rec({ flags: 0, seq: 2, ts: 60, stream: 3, fflags: END_HEADERS | END_STREAM, payload: GET }),
      rec({ flags: 0, seq: 3, ts: 70, stream: 3, type: RST_STREAM, payload: cancel }),
    ]);
    expect(counts(h)).toEqual({ 'GET 200 CANCEL': 1, 'GET 0 CANCEL': 1 });
    expect(h.read().http.find((x) => x.status === 200)!.sumSeconds).toBeCloseTo(0.03, 9);
    expect(h.counters).toMatchObject({ orphanStreams: 0, unparsedStreams: 0 });
  });

  it('an h2c upgrade record opens stream 1 (its method and start), numbered in the response direction', () => {
    const h = new H2Streams();
    const upgrade = rec({ kind: 4, flags: F_RESPONSE, seq: 0, ts: 0, method: 3 }); // the request's method: POST (METHODS[3])
    h.records([
      upgrade,
      rec({ flags: F_RESPONSE, seq: 1, ts: 20, stream: 1, fflags: END_HEADERS | END_STREAM, payload: S404 }),
      rec({ flags: 0, seq: 0, ts: 30, stream: 3, fflags: END_HEADERS | END_STREAM, payload: GET }),
      rec({ flags: F_RESPONSE, seq: 2, ts: 40, stream: 3, fflags: END_HEADERS | END_STREAM, payload: S200 }),
    ]);
    expect(counts(h)).toEqual({ 'POST 404': 1, 'GET 200': 1 });
    expect(h.read().http.find((x) => x.status === 404)!.sumSeconds).toBeCloseTo(0.02, 9);
    expect(h.counters).toMatchObject({ gaps: 0, lostDirections: 0, unparsedStreams: 0 });
  });

  it('a gap in a direction\'s record numbers: its later streams count unparsed, never with a status', () => {
    const h = new H2Streams();
    h.records([
      rec({ flags: 0, seq: 0, ts: 0, stream: 1, fflags: END_HEADERS | END_STREAM, payload: GET }),
      rec({ flags: F_RESPONSE, seq: 0, ts: 1, stream: 1, fflags: END_HEADERS | END_STREAM, payload: S404 }),
      rec({ flags: 0, seq: 1, ts: 2, stream: 3, fflags: END_HEADERS | END_STREAM, payload: GET }),
      // Response records 1 and 2 were lost.
      rec({ flags: F_RESPONSE, seq: 3, ts: 3, stream: 3, fflags: END_HEADERS | END_STREAM, payload: S200 }),
    ]);
    expect(counts(h)).toEqual({ 'GET 404': 1, ' 0': 1 });
    expect(h.counters).toMatchObject({ gaps: 1, lostDirections: 1, unparsedStreams: 1 });
  });

  it('RST_STREAM ends a stream with its error code; the server\'s GOAWAY ends the streams above its last; a client\'s ends none', () => {
    const h = new H2Streams();
    const rst = Buffer.alloc(4);
    rst.writeUInt32BE(8); // CANCEL
    const goaway = Buffer.alloc(8);
    goaway.writeUInt32BE(3); // last stream 3
    h.records([
      rec({ flags: 0, seq: 0, ts: 0, stream: 1, payload: GET }),
      rec({ flags: F_RESPONSE, seq: 0, ts: 5, stream: 1, payload: S200 }),
      rec({ flags: 0, seq: 1, ts: 6, stream: 1, type: RST_STREAM, payload: rst }),
      rec({ flags: 0, seq: 2, ts: 7, stream: 5, payload: GET }),
      rec({ flags: 0, seq: 3, ts: 8, stream: 0, type: GOAWAY, payload: goaway }), // the client's: ends nothing
      rec({ flags: F_RESPONSE, seq: 1, ts: 9, stream: 0, type: GOAWAY, payload: goaway }),
    ]);
    expect(counts(h)).toEqual({ 'GET 200 CANCEL': 1, 'GET 0 GOAWAY': 1 });
  });

  it('a close record frees the connection (its open streams end as CLOSED); connections past the bound are not followed', () => {
    const h = new H2Streams({ maxConnections: 1 });
    h.record(rec({ cookie: 1n, flags: 0, seq: 0, ts: 0, payload: GET }));
    h.record(rec({ cookie: 2n, flags: 0, seq: 0, ts: 0, payload: GET }));
    expect(h.connections).toBe(1);
    expect(h.counters.untracked).toBe(2); // its identity and its record
    h.record(rec({ cookie: 1n, kind: 3, flags: 0, seq: 0, ts: 4 }));
    expect(h.connections).toBe(0);
    expect(counts(h)).toEqual({ 'GET 0 CLOSED': 1 });
  });

  it('the identity comes once per connection direction (a 32-byte record header, not 96 with the addresses each time)', () => {
    expect(H2_RECORD_HEADER).toBe(32);
    const h = new H2Streams();
    const first = rec({ cookie: 9n, flags: 0, seq: 0, ts: 0, stream: 1, fflags: END_HEADERS | END_STREAM, payload: GET });
    expect(first.length).toBe(H2_RECORD_HEADER + H2_IDENT + H2_RECORD_HEADER + H2_ITEM_HEADER + GET.length);
    h.records([
      first,
      rec({ cookie: 9n, flags: F_RESPONSE, seq: 0, ts: 10, stream: 1, fflags: END_HEADERS | END_STREAM, payload: S200 }),
      rec({ cookie: 9n, flags: 0, seq: 1, ts: 20, stream: 3, fflags: END_HEADERS | END_STREAM, payload: GET }),
      rec({ cookie: 9n, flags: F_RESPONSE, seq: 1, ts: 30, stream: 3, fflags: END_HEADERS | END_STREAM, payload: S404 }),
    ]);
    expect(h.read().http.map((s) => ({ direction: s.direction, cgroupId: s.cgroupId, remoteIp: s.remoteIp, port: s.port, status: s.status, count: s.count }))).toEqual([
      { direction: 'server', cgroupId: 7n, remoteIp: '127.0.0.2', port: 8080, status: 200, count: 1 },
      { direction: 'server', cgroupId: 7n, remoteIp: '127.0.0.2', port: 8080, status: 404, count: 1 },
    ]);
    expect(h.counters).toMatchObject({ entries: 4, records: 6, bytes: 2 * (H2_RECORD_HEADER + H2_IDENT) + 4 * (H2_RECORD_HEADER + H2_ITEM_HEADER) + 2 * GET.length + 2 });
  });

  it('a connection whose identity was lost: its records count on no side (unparsed), and once it comes again (with a gap) the lost direction stays unparsed', () => {
    const h = new H2Streams();
    // The request direction's first entry (identity and record 0) found no room: record 1 comes bare, after a gap.
    h.records([
      rec({ flags: 0, seq: 1, ts: 0, stream: 3, fflags: END_HEADERS | END_STREAM, payload: GET, bare: true }),
      rec({ flags: F_RESPONSE, seq: 0, ts: 1, stream: 3, fflags: END_HEADERS | END_STREAM, payload: S200, bare: true }),
    ]);
    expect(h.read().http).toEqual([]);
    expect(h.counters).toMatchObject({ unparsedStreams: 1, lostDirections: 1 });
    // The kernel sends the identity again with the direction's next entry: the connection has sides from then on,
    // and the lost direction's streams still count unparsed, never with a status.
    h.records([
      Buffer.concat([conn(), rec({ flags: 0, seq: 2, ts: 2, stream: 5, fflags: END_HEADERS | END_STREAM, payload: GET, bare: true })]),
      Buffer.concat([conn(), rec({ flags: F_RESPONSE, seq: 1, ts: 3, stream: 5, fflags: END_HEADERS | END_STREAM, payload: S404, bare: true })]),
    ]);
    expect(counts(h)).toEqual({ ' 0': 1 });
    expect(h.counters).toMatchObject({ unparsedStreams: 2 });
    // A connection record alone, for another connection, then its records: counted on its side.
    h.records([conn(2n, [127, 0, 0, 3]), rec({ cookie: 2n, flags: 0, seq: 0, ts: 0, bare: true, fflags: END_HEADERS | END_STREAM, payload: GET }), rec({ cookie: 2n, flags: F_RESPONSE, seq: 0, ts: 1, fflags: END_HEADERS | END_STREAM, payload: S200 })]);
    expect(h.read().http.find((s) => s.remoteIp === '127.0.0.3')).toMatchObject({ method: 'GET', status: 200, count: 1 });
  });

  it('checks its options and its records', () => {
    expect(() => new H2Streams({ maxRpcMethods: 0 })).toThrow(/maxRpcMethods must be a positive integer/);
    expect(() => new H2Streams().record(Buffer.alloc(10))).toThrow(/h2 record of 10 bytes/);
    const cut = rec({ flags: 0, seq: 0, ts: 0, payload: GET, bare: true });
    expect(() => new H2Streams().record(cut.subarray(0, cut.length - 1))).toThrow(/h2 record of 46 bytes with 45 left in its ring entry/);
    expect(() => new H2Streams().record(conn().subarray(0, H2_RECORD_HEADER + 8))).toThrow(/h2 record of 88 bytes with 40 left/);
  });
});

describe('H2Streams garbage', () => {
  // The consumer's garbage collections (scavenges) follow the bytes it allocates per stream: measured with V8's
  // sampling heap profiler (objects collected since included) over 12,000 h2load-shaped streams on 16
  // connections, one open at a time on each: request HEADERS, response HEADERS, the DATA header that ends it.
  it('allocates under 300 bytes per stream (~140 optimized; a Map per connection made it ~440: a new table every few streams)', async () => {
    const { Session } = await import('node:inspector/promises');
    const conns = 16, perConn = 750;
    const entries: Buffer[] = [];
    for (let i = 0; i < perConn; i++) {
      for (let c = 0; c < conns; c++) {
        const cookie = BigInt(c + 1), stream = 2 * i + 1, ts = i * 10;
        entries.push(rec({ cookie, flags: 0, seq: i, ts, stream, fflags: END_HEADERS | END_STREAM, payload: GET }));
        entries.push(rec({ cookie, flags: F_RESPONSE, seq: i, ts: ts + 1, frames: [{ stream, payload: S200 }, { stream, type: DATA, fflags: END_STREAM }] }));
      }
    }
    const batch = Buffer.concat(entries.flatMap((e) => { const len = Buffer.alloc(4); len.writeUInt32LE(e.length); return [len, e]; }));
    for (let i = 0; i < 5; i++) new H2Streams().packed([batch]); // warm-up: optimized code, as a running consumer's
    const session = new Session();
    session.connect();
    try {
      // The least of a few measurements: on a loaded machine the optimizing compiler (a background thread) may not
      // have finished after the warm-up, and unoptimized code boxes numbers a running consumer's does not. The
      // Map-per-connection design allocated ~440 bytes per stream optimized too, so the least of several still fails it.
      const measured: number[] = [];
      for (let attempt = 0; attempt < 5 && !(measured.length && Math.min(...measured) < 300); attempt++) {
        const h = new H2Streams();
        await session.post('HeapProfiler.startSampling', { samplingInterval: 256, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
        h.packed([batch]);
        const { profile } = await session.post('HeapProfiler.stopSampling');
        let bytes = 0;
        const walk = (n: typeof profile.head): void => {
          bytes += n.selfSize;
          n.children.forEach(walk);
        };
        walk(profile.head);
        expect(counts(h)).toEqual({ 'GET 200': conns * perConn });
        measured.push(Math.round(bytes / (conns * perConn)));
      }
      expect(Math.min(...measured), `bytes allocated per stream in ${measured.length} runs: ${measured.join(', ')}`).toBeLessThan(300);
    } finally {
      session.disconnect();
    }
  });
});
