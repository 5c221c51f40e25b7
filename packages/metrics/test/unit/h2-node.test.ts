// 10,000 HTTP/2 responses with statuses outside the static table, over one h2c connection with a 4,096-octet
// dynamic table, encoded by an independent encoder (node:http2, i.e. nghttp2): a plain TCP relay between a real
// client and server records both directions, and the frames + HPACK decoders must give every stream the status
// the server sent. Then the same capture with a block lost, cut short or corrupted: the direction turns unknown
// and every later stream is undecodable, never labelled with a wrong status.
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { beforeAll, describe, expect, it } from 'vitest';

import { HeaderDirection, type DecodedBlock } from '../../src/h2/direction.js';
import { FrameType, Setting, parseSettings } from '../../src/h2/frames.js';
import { frames, get, runCalls, startRelay, type Frame } from '../h2-relay.js';

const RESPONSES = 10_000;
// Only 200, 204, 206, 304, 400, 404 and 500 are static-table entries (RFC 7541 Appendix A): these are not.
const STATUSES = [201, 202, 203, 205, 207, 301, 302, 303, 307, 308, 401, 403, 405, 409, 410, 418, 422, 429, 451, 501, 502, 503, 504];

interface Capture {
  /** Status the server sent, per stream id. */
  sent: Map<number, number>;
  /** Status the client saw, per stream id. */
  received: Map<number, number>;
  down: Frame[];
  up: Frame[];
}

/** Runs `calls` exchanges between a node:http2 server and client through a recording relay. */
async function relayed(
  onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void,
  call: (session: http2.ClientHttp2Session, i: number) => Promise<void>,
  calls: number,
): Promise<{ down: Frame[]; up: Frame[] }> {
  const server = http2.createServer();
  server.on('stream', onStream);
  server.on('sessionError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const relay = await startRelay((server.address() as AddressInfo).port);
  try {
    await runCalls(relay.port, call, calls);
  } finally {
    await relay.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  return { down: frames(relay.down, false), up: frames(relay.up, true) };
}

async function captureExchange(): Promise<Capture> {
  const sent = new Map<number, number>();
  const received = new Map<number, number>();
  const onStream = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
    const i = Number(String(headers[':path']).split('/')[2]);
    const status = STATUSES[(i * 7 + (i >> 4)) % STATUSES.length]!;
    sent.set(stream.id!, status);
    // Two in three carry a body (DATA frames the reader skips); 205 never does (node ends it at respond()).
    const body = i % 3 !== 0 && status !== 205;
    // A value unique per response keeps the table churning: entries are evicted and statuses re-inserted.
    stream.respond({ ':status': status, 'x-request': `r${i}`, 'content-type': 'text/plain' }, { endStream: !body });
    if (body) stream.end(`body ${i}`);
  };
  const call = async (session: http2.ClientHttp2Session, i: number) => {
    const r = await get(session, `/r/${i}`);
    received.set(r.streamId, r.status);
  };
  return { sent, received, ...(await relayed(onStream, call, RESPONSES)) };
}

/** Decodes the server→client frames; the client's SETTINGS_HEADER_TABLE_SIZE bounds the server's encoder. */
function decodeDown(c: Capture, edit?: (frames: Frame[]) => Frame[]): { blocks: DecodedBlock[]; dir: HeaderDirection } {
  const dir = new HeaderDirection();
  for (const f of c.up) {
    if (f.header.type !== FrameType.SETTINGS || f.header.flags & 1) continue;
    for (const [id, value] of parseSettings(f.payload)) if (id === Setting.HEADER_TABLE_SIZE) dir.hpack.setTableSizeLimit(value);
  }
  const blocks: DecodedBlock[] = [];
  for (const f of edit ? edit(c.down) : c.down) {
    const b = dir.frame(f.header, f.payload);
    if (b) blocks.push(b);
  }
  return { blocks, dir };
}

/** The response HEADERS frames (not trailers: node sends none here), in wire order. */
const responseFrames = (c: Capture) => c.down.filter((f) => f.header.type === FrameType.HEADERS);

/** Every decoded status must be the one sent; returns how many streams were decoded and undecodable. */
function tally(c: Capture, blocks: DecodedBlock[]): { decoded: number; unparsed: number; wrong: number } {
  let decoded = 0;
  let unparsed = 0;
  let wrong = 0;
  for (const b of blocks) {
    if (b.signals) {
      decoded++;
      if (b.signals.status !== c.sent.get(b.streamId)) wrong++;
    } else {
      unparsed++;
    }
  }
  return { decoded, unparsed, wrong };
}

describe('HPACK against node:http2 (nghttp2) over a real connection', () => {
  let c: Capture;
  beforeAll(async () => {
    c = await captureExchange();
  }, 90_000);

  it('decodes all 10,000 statuses exactly, with the dynamic table in use and evicting', () => {
    expect(c.sent.size).toBe(RESPONSES);
    expect(c.received).toEqual(c.sent);
    const { blocks, dir } = decodeDown(c);
    expect(dir.error).toBeUndefined();
    expect(blocks).toHaveLength(RESPONSES);
    const decoded = new Map(blocks.map((b) => [b.streamId, b.signals?.status]));
    expect(decoded).toEqual(c.sent);
    expect(blocks.every((b) => b.signals?.contentType === 'text/plain')).toBe(true);
    expect(dir.hpack.tableSize).toBeLessThanOrEqual(4096);
    expect(dir.hpack.stats.evicted).toBeGreaterThan(1000);

    // On the wire :status comes first: an index ≥ 62 (first octet ≥ 0xbe) refers to the dynamic table, 0x48 is a
    // literal with incremental indexing and :status's static name. Most responses must be dynamic references.
    let dynamic = 0;
    let literal = 0;
    for (const f of responseFrames(c)) {
      const first = f.payload[0]!;
      if (first >= 0xbe) dynamic++;
      else if (first === 0x48) literal++;
    }
    expect(dynamic + literal).toBe(RESPONSES);
    expect(dynamic).toBeGreaterThan(RESPONSES / 2);
    expect(literal).toBeGreaterThan(STATUSES.length); // re-inserted after evictions
  });

  it('decodes the requests of the other direction (method, path)', () => {
    const dir = new HeaderDirection();
    const paths = new Set<string>();
    for (const f of c.up) {
      const b = dir.frame(f.header, f.payload);
      if (b?.signals) {
        expect(b.signals.method).toBe('GET');
        paths.add(b.signals.path!);
      }
    }
    expect(dir.error).toBeUndefined();
    expect(paths.size).toBe(RESPONSES);
  });

  it('a block lost (its sequence number missing): later streams are unparsed, none mislabelled', () => {
    const lost = responseFrames(c)[5000]!;
    const dir = new HeaderDirection();
    const blocks: DecodedBlock[] = [];
    let seq = 0;
    for (const f of c.down) {
      const numbered = f.header.type === FrameType.HEADERS || f.header.type === FrameType.CONTINUATION;
      const n = numbered ? seq++ : undefined;
      if (f === lost) continue; // dropped, as a full ring buffer drops a record: only the gap in numbers tells
      const b = dir.frame(f.header, f.payload, n);
      if (b) blocks.push(b);
    }
    expect(dir.error?.reason).toBe('lost');
    expect(tally(c, blocks)).toEqual({ decoded: 5000, unparsed: RESPONSES - 5001, wrong: 0 });
  });

  it('a block cut short (a record truncated): the direction turns unknown, none mislabelled', () => {
    const cut = responseFrames(c)[3000]!;
    const { blocks, dir } = decodeDown(c, (frames) =>
      frames.map((f) => (f === cut ? { header: f.header, payload: f.payload.subarray(0, f.payload.length - 2) } : f)),
    );
    expect(dir.error?.name).toBe('H2FrameError');
    expect((dir.error as { reason: string }).reason).toBe('truncated');
    expect(tally(c, blocks)).toEqual({ decoded: 3000, unparsed: RESPONSES - 3000, wrong: 0 });
  });

  it('a corrupted block (an index past the table): the decoder is broken, none mislabelled', () => {
    const bad = responseFrames(c)[7000]!;
    const { blocks, dir } = decodeDown(c, (frames) =>
      frames.map((f) => {
        if (f !== bad) return f;
        const payload = Buffer.concat([Buffer.from([0xff, 0x7f]), f.payload.subarray(1)]); // index 127 + 127 = 254
        return { header: { ...f.header, length: payload.length }, payload };
      }),
    );
    expect(dir.error?.name).toBe('HpackError');
    expect((dir.error as { reason: string }).reason).toBe('index-out-of-range');
    expect(tally(c, blocks)).toEqual({ decoded: 7000, unparsed: RESPONSES - 7000, wrong: 0 });
  });
});

// gRPC's wire shape from node:http2: POST /package.Service/Method with application/grpc, a response HEADERS, a
// length-prefixed message, then trailers with grpc-status; errors also as trailers-only responses (one HEADERS
// frame with END_STREAM carrying :status and grpc-status).
describe('gRPC-shaped exchanges over node:http2', () => {
  const CALLS = 600;
  const METHODS = ['/mesh.test.Echo/Unary', '/mesh.test.Echo/ServerStream'];
  const CODES = [0, 5, 14]; // OK, NOT_FOUND, UNAVAILABLE
  const plan = (i: number) => ({ path: METHODS[i % 2]!, code: CODES[Math.floor(i / 2) % 3]!, trailersOnly: i % 5 === 4 });

  it('gives every call its service, method and grpc-status, from requests, responses and trailers', async () => {
    const truth = new Map<string, number>(); // "path code" → calls
    const onStream = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
      const i = Number(headers['x-call']);
      const { code, trailersOnly } = plan(i);
      if (trailersOnly) {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': code, 'grpc-message': 'only' }, { endStream: true });
        return;
      }
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': code, 'grpc-message': `call ${i}` }));
      stream.end(Buffer.from([0, 0, 0, 0, 1, 0x2a])); // one 1-octet message
    };
    const call = (session: http2.ClientHttp2Session, i: number) =>
      new Promise<void>((resolve, reject) => {
        const { path, code } = plan(i);
        truth.set(`${path} ${code}`, (truth.get(`${path} ${code}`) ?? 0) + 1);
        const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', 'x-call': String(i) });
        req.on('error', reject);
        req.resume();
        req.on('end', resolve);
        req.end(Buffer.from([0, 0, 0, 0, 0]));
      });
    const { down, up } = await relayed(onStream, call, CALLS);

    const requests = new HeaderDirection();
    const rpc = new Map<number, string>();
    for (const f of up) {
      const b = requests.frame(f.header, f.payload);
      if (b?.signals) {
        expect(b.signals).toMatchObject({ method: 'POST', grpc: true, rpcService: 'mesh.test.Echo' });
        rpc.set(b.streamId, b.signals.path!);
      }
    }
    const responses = new HeaderDirection();
    const counted = new Map<string, number>();
    let trailers = 0;
    for (const f of down) {
      const b = responses.frame(f.header, f.payload);
      if (!b?.signals || b.signals.grpcStatus === undefined) continue;
      expect(b.endStream).toBe(true);
      if (b.signals.status === undefined) trailers++;
      const key = `${rpc.get(b.streamId)} ${b.signals.grpcStatus}`;
      counted.set(key, (counted.get(key) ?? 0) + 1);
    }
    expect(requests.error).toBeUndefined();
    expect(responses.error).toBeUndefined();
    expect(counted).toEqual(truth);
    expect(trailers).toBe(CALLS - CALLS / 5);
  }, 60_000);
});

// Server push: a PUSH_PROMISE carries the pushed request's headers, encoded with the server's table like its
// responses. Those blocks must be decoded too, or the table goes out of step.
describe('server push over node:http2', () => {
  it('PUSH_PROMISE blocks and pushed responses decode in step with the responses around them', async () => {
    const CALLS = 600;
    const sent = new Map<number, number>();
    const promised = new Map<number, string>();
    const onStream = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
      const i = Number(String(headers[':path']).split('/')[2]);
      if (i % 2 === 0) {
        stream.pushStream({ ':path': `/pushed/${i}`, 'x-push': `p${i}` }, (err, push) => {
          if (err) return;
          const status = STATUSES[(i * 3) % STATUSES.length]!;
          sent.set(push.id!, status);
          promised.set(push.id!, `/pushed/${i}`);
          push.respond({ ':status': status, 'x-pushed': `q${i}` }, { endStream: true });
        });
      }
      const status = STATUSES[(i * 5 + 1) % STATUSES.length]!;
      sent.set(stream.id!, status);
      stream.respond({ ':status': status, 'x-request': `r${i}` }, { endStream: true });
    };
    const call = async (session: http2.ClientHttp2Session, i: number) => {
      await get(session, `/r/${i}`);
    };
    const server = http2.createServer();
    server.on('stream', onStream);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const relay = await startRelay((server.address() as AddressInfo).port);
    try {
      await runCalls(relay.port, call, CALLS, 50, (session) => session.on('stream', (pushed) => pushed.resume()));
    } finally {
      await relay.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    const dir = new HeaderDirection();
    const decoded = new Map<number, number | undefined>();
    const paths = new Map<number, string | undefined>();
    for (const f of frames(relay.down, false)) {
      const b = dir.frame(f.header, f.payload);
      if (b?.type === FrameType.PUSH_PROMISE) paths.set(b.promisedStreamId, b.signals?.path);
      else if (b) decoded.set(b.streamId, b.signals?.status);
    }
    expect(dir.error).toBeUndefined();
    expect(promised.size).toBe(CALLS / 2);
    expect(paths).toEqual(promised);
    expect(decoded).toEqual(sent);
  }, 60_000);
});
