// HTTP/2 framing for header blocks: the client preface, frame headers, the fragment inside HEADERS/PUSH_PROMISE
// (padding, priority, promised stream id), reassembly across CONTINUATION, SETTINGS, a reader over a byte stream
// split anywhere, and what golden signals take from a decoded block.
import { describe, expect, it } from 'vitest';

import { HeaderDirection } from '../../src/h2/direction.js';
import {
  CLIENT_PREFACE,
  FrameFlag,
  FrameReader,
  FrameType,
  H2FrameError,
  HeaderBlockAssembler,
  headerBlockFragment,
  matchPreface,
  parseFrameHeader,
  parseHttp2SettingsHeader,
  parseSettings,
  type FrameHeader,
} from '../../src/h2/frames.js';
import { SignalCollector, grpcPath, isGrpcContentType } from '../../src/h2/signals.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function frame(type: number, flags: number, streamId: number, payload: Uint8Array): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId, 5);
  return Buffer.concat([h, payload]);
}
const header = (type: number, flags: number, streamId: number, length: number): FrameHeader => ({ type, flags, streamId, length });

function reason(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof H2FrameError) return err.reason;
    throw err;
  }
  return 'no error';
}

// C.3.1 of RFC 7541: GET http://www.example.com/
const REQUEST = hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d');

describe('client preface', () => {
  it('matches PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n, a prefix of it, or neither', () => {
    expect(CLIENT_PREFACE.toString('latin1')).toBe('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
    expect(matchPreface(Buffer.concat([CLIENT_PREFACE, frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(0))]))).toBe('preface');
    expect(matchPreface(CLIENT_PREFACE.subarray(0, 10))).toBe('incomplete');
    expect(matchPreface(Buffer.alloc(0))).toBe('incomplete');
    expect(matchPreface(Buffer.from('GET / HTTP/1.1\r\n'))).toBe('not-preface');
    expect(matchPreface(Buffer.from('PRI * HTTP/1.1\r\n'))).toBe('not-preface');
  });
});

describe('frame header', () => {
  it('reads length, type, flags and stream id, ignoring the reserved bit', () => {
    expect(parseFrameHeader(hex('00 40 01  01  25  80 00 00 07'))).toEqual({ length: 0x4001, type: 1, flags: 0x25, streamId: 7 });
    expect(parseFrameHeader(hex('ff 00 00 01 04 00 00 00 00 03 aa'), 1)).toEqual({ length: 1, type: 4, flags: 0, streamId: 3 });
    expect(parseFrameHeader(hex('00 00 00 01 04 00 00 00'))).toBeUndefined();
  });
});

describe('header-block fragment', () => {
  const H = FrameType.HEADERS;
  it('HEADERS: plain, padded, with priority, both', () => {
    expect(headerBlockFragment(header(H, 0, 1, 3), hex('828684'))).toEqual(hex('828684'));
    expect(headerBlockFragment(header(H, FrameFlag.PADDED, 1, 7), hex('03 828684 000000'))).toEqual(hex('828684'));
    expect(headerBlockFragment(header(H, FrameFlag.PRIORITY, 1, 8), hex('80000003 10 828684'))).toEqual(hex('828684'));
    expect(headerBlockFragment(header(H, FrameFlag.PADDED | FrameFlag.PRIORITY, 1, 11), hex('02 00000003 ff 828684 0000'))).toEqual(
      hex('828684'),
    );
    // Padding may take the whole rest: an empty fragment
    expect(headerBlockFragment(header(H, FrameFlag.PADDED, 1, 3), hex('02 0000'))).toEqual(hex(''));
  });

  it('PUSH_PROMISE: the promised stream id is not part of the fragment', () => {
    expect(headerBlockFragment(header(FrameType.PUSH_PROMISE, 0, 1, 6), hex('00000002 8286'))).toEqual(hex('8286'));
  });

  it.each([
    ['Pad Length equal to the payload length', FrameFlag.PADDED, '04 828684', 'padding'],
    ['Pad Length over the payload', FrameFlag.PADDED, 'ff 82', 'padding'],
    ['PADDED with no payload', FrameFlag.PADDED, '', 'frame-too-short'],
    ['PRIORITY with 4 octets', FrameFlag.PRIORITY, '00000003', 'frame-too-short'],
    ['padding eating the priority fields', FrameFlag.PADDED | FrameFlag.PRIORITY, '02 000000 0000', 'frame-too-short'],
  ])('%s', (_name, flags, payload, why) => {
    const p = hex(payload);
    expect(reason(() => headerBlockFragment(header(H, flags, 1, p.length), p))).toBe(why);
  });

  it('names the Pad Length and what follows it', () => {
    expect(() => headerBlockFragment(header(H, FrameFlag.PADDED, 1, 4), hex('04 828684'))).toThrow('HEADERS Pad Length 4 exceeds the 3 octets after it');
  });

  it('HEADERS on stream 0', () => {
    expect(reason(() => headerBlockFragment(header(H, 0, 0, 1), hex('82')))).toBe('stream-zero');
  });
});

describe('header block reassembly', () => {
  it('HEADERS + CONTINUATION + CONTINUATION make one block, END_STREAM from HEADERS', () => {
    const a = new HeaderBlockAssembler();
    const p1 = hex('01 8286 00'); // padded: pad length 1
    expect(a.push(header(FrameType.HEADERS, FrameFlag.PADDED | FrameFlag.END_STREAM, 5, p1.length), p1)).toBeUndefined();
    p1.fill(0); // the reader reuses its buffers: the assembler kept a copy
    expect(a.open).toBe(true);
    const p2 = hex('8441 0f77 7777');
    expect(a.push(header(FrameType.CONTINUATION, 0, 5, p2.length), p2)).toBeUndefined();
    const p3 = hex('2e65 7861 6d70 6c65 2e63 6f6d');
    const b = a.push(header(FrameType.CONTINUATION, FrameFlag.END_HEADERS, 5, p3.length), p3);
    expect({ ...b, block: Buffer.from(b!.block) }).toEqual({ streamId: 5, type: FrameType.HEADERS, endStream: true, promisedStreamId: 0, block: REQUEST });
    expect(a.open).toBe(false);
  });

  it('a one-frame block is a view of its payload; other frames pass', () => {
    const a = new HeaderBlockAssembler();
    expect(a.push(header(FrameType.DATA, 0, 1, 3), hex('616263'))).toBeUndefined();
    const b = a.push(header(FrameType.HEADERS, FrameFlag.END_HEADERS, 1, REQUEST.length), REQUEST);
    expect(b?.block.buffer).toBe(REQUEST.buffer);
    expect(b?.endStream).toBe(false);
    const pp = hex('00000004 82');
    expect(a.push(header(FrameType.PUSH_PROMISE, FrameFlag.END_HEADERS, 1, pp.length), pp)).toMatchObject({
      type: FrameType.PUSH_PROMISE,
      promisedStreamId: 4,
      block: hex('82'),
    });
  });

  it.each([
    ['a DATA frame inside a block', FrameType.DATA, 1, 'header-block-interrupted'],
    ['a CONTINUATION of another stream', FrameType.CONTINUATION, 3, 'header-block-interrupted'],
    ['a HEADERS frame of another stream', FrameType.HEADERS, 3, 'header-block-interrupted'],
  ])('%s', (_name, type, streamId, why) => {
    const a = new HeaderBlockAssembler();
    a.push(header(FrameType.HEADERS, 0, 1, 2), hex('8286'));
    expect(reason(() => a.push(header(type, FrameFlag.END_HEADERS, streamId, 1), hex('84')))).toBe(why);
    expect(a.open).toBe(false);
  });

  it('a CONTINUATION with no open block', () => {
    expect(reason(() => new HeaderBlockAssembler().push(header(FrameType.CONTINUATION, FrameFlag.END_HEADERS, 1, 1), hex('84')))).toBe(
      'continuation-unexpected',
    );
  });

  it('a block over maxBlockSize, in one frame or across CONTINUATION', () => {
    const a = new HeaderBlockAssembler({ maxBlockSize: 4 });
    expect(reason(() => a.push(header(FrameType.HEADERS, FrameFlag.END_HEADERS, 1, 5), hex('8286848788')))).toBe('header-block-too-large');
    a.push(header(FrameType.HEADERS, 0, 1, 3), hex('828684'));
    expect(reason(() => a.push(header(FrameType.CONTINUATION, 0, 1, 2), hex('8788')))).toBe('header-block-too-large');
  });
});

describe('SETTINGS', () => {
  it('reads identifier/value pairs; a length not a multiple of 6 is an error', () => {
    expect(parseSettings(hex('0001 00001000  0003 00000064  0004 ffffffff'))).toEqual([
      [1, 4096],
      [3, 100],
      [4, 0xffffffff],
    ]);
    expect(reason(() => parseSettings(hex('0001 000010')))).toBe('settings-length');
  });
});

describe('HTTP2-Settings (h2c upgrade)', () => {
  it('decodes the base64url SETTINGS payload of the header', () => {
    // What node:http2 and curl send: HEADER_TABLE_SIZE 4096, ENABLE_PUSH 0, INITIAL_WINDOW_SIZE 65535 …
    const payload = hex('0001 00001000  0002 00000000  0004 0000ffff');
    const header = payload.toString('base64url');
    expect(header).not.toContain('=');
    expect(parseHttp2SettingsHeader(` ${header} `)).toEqual([
      [1, 4096],
      [2, 0],
      [4, 65535],
    ]);
    expect(parseHttp2SettingsHeader('')).toEqual([]);
  });

  it('refuses padding, other alphabets and a payload not a multiple of 6', () => {
    for (const bad of ['AAEAABAA=', 'AAEAA+AA', 'AAEAABAAA']) expect(reason(() => parseHttp2SettingsHeader(bad)), bad).toBe('settings-length');
    expect(reason(() => parseHttp2SettingsHeader(hex('0001 0000').toString('base64url')))).toBe('settings-length');
  });
});

describe('FrameReader', () => {
  const stream = Buffer.concat([
    CLIENT_PREFACE,
    frame(FrameType.SETTINGS, 0, 0, hex('0001 00001000')),
    frame(FrameType.HEADERS, FrameFlag.END_HEADERS, 1, REQUEST),
    frame(FrameType.DATA, FrameFlag.END_STREAM, 1, Buffer.from('hello world')),
    frame(FrameType.HEADERS, FrameFlag.END_HEADERS | FrameFlag.END_STREAM, 3, hex('8286 84be')),
  ]);
  const expected = [
    [FrameType.SETTINGS, 0, '000100001000'],
    [FrameType.HEADERS, 1, REQUEST.toString('hex')],
    [FrameType.DATA, 1, ''], // DATA is skipped, not buffered
    [FrameType.HEADERS, 3, '828684be'],
  ];

  it.each([1, 2, 7, 1000])('cuts a stream delivered in %i-octet chunks', (size) => {
    const got: (string | number)[][] = [];
    const r = new FrameReader((h, p) => got.push([h.type, h.streamId, Buffer.from(p).toString('hex')]), { preface: true });
    for (let i = 0; i < stream.length; i += size) r.push(stream.subarray(i, i + size));
    expect(got).toEqual(expected);
  });

  it('refuses a stream without the preface and a frame over maxFrameSize', () => {
    expect(reason(() => new FrameReader(() => {}, { preface: true }).push(Buffer.from('GET / HTTP/1.1\r\n')))).toBe('preface');
    const big = frame(FrameType.HEADERS, FrameFlag.END_HEADERS, 1, Buffer.alloc(100));
    expect(reason(() => new FrameReader(() => {}, { maxFrameSize: 99 }).push(big))).toBe('frame-too-large');
    // DATA is never buffered, so its size does not matter
    expect(reason(() => new FrameReader(() => {}, { maxFrameSize: 99 }).push(frame(FrameType.DATA, 0, 1, Buffer.alloc(100))))).toBe(
      'no error',
    );
  });
});

describe('HeaderDirection', () => {
  it('decodes a block split over CONTINUATION, then refuses everything after a record cut short', () => {
    const d = new HeaderDirection();
    expect(d.frame(header(FrameType.HEADERS, 0, 1, 4), REQUEST.subarray(0, 4))).toBeUndefined();
    const b = d.frame(header(FrameType.CONTINUATION, FrameFlag.END_HEADERS, 1, REQUEST.length - 4), REQUEST.subarray(4));
    expect(b?.signals).toMatchObject({ method: 'GET', path: '/', grpc: false, malformed: false });
    // A HEADERS frame announcing 6 octets, of which the capture kept 4
    const cut = d.frame(header(FrameType.HEADERS, FrameFlag.END_HEADERS, 3, 6), hex('8286 84be'));
    expect(cut?.error?.message).toBe('frame of stream 3 with 4 of its 6 payload octets');
    const later = d.frame(header(FrameType.HEADERS, FrameFlag.END_HEADERS, 5, 4), hex('8286 84be'));
    expect(later).toMatchObject({ streamId: 5, error: cut?.error });
    expect(later?.signals).toBeUndefined();
    expect(d.hpack.broken?.reason).toBe('lost');
  });

  it('a cut DATA frame does not matter', () => {
    const d = new HeaderDirection();
    expect(d.frame(header(FrameType.DATA, 0, 1, 1000), Buffer.alloc(0))).toBeUndefined();
    expect(d.frame(header(FrameType.HEADERS, FrameFlag.END_HEADERS, 1, REQUEST.length), REQUEST)?.signals?.path).toBe('/');
  });

  it('frameAt (a payload inside a larger buffer, read in place when it is a whole block) gives what frame gives', () => {
    // Whole blocks, a padded one, a block over CONTINUATION, a cut one, then blocks after the error.
    const padded = Buffer.concat([Buffer.from([2]), REQUEST, Buffer.alloc(2)]);
    const frames: [FrameHeader, Buffer][] = [
      [header(FrameType.HEADERS, FrameFlag.END_HEADERS, 1, REQUEST.length), REQUEST],
      [header(FrameType.HEADERS, FrameFlag.END_HEADERS | FrameFlag.END_STREAM, 3, REQUEST.length), REQUEST],
      [header(FrameType.HEADERS, FrameFlag.END_HEADERS | FrameFlag.PADDED, 5, padded.length), padded],
      [header(FrameType.DATA, 0, 5, 1000), Buffer.alloc(0)],
      [header(FrameType.HEADERS, 0, 7, 4), REQUEST.subarray(0, 4)],
      [header(FrameType.CONTINUATION, FrameFlag.END_HEADERS, 7, REQUEST.length - 4), REQUEST.subarray(4)],
      [header(FrameType.HEADERS, FrameFlag.END_HEADERS, 9, 6), hex('8286 84be')],
      [header(FrameType.HEADERS, FrameFlag.END_HEADERS, 11, REQUEST.length), REQUEST],
    ];
    const d = new HeaderDirection();
    const at = new HeaderDirection();
    let seq = 0;
    for (const [i, [h, payload]] of frames.entries()) {
      const inside = Buffer.concat([Buffer.from('before'), payload, Buffer.from('after')]);
      expect(at.frameAt(h, inside, 6, 6 + payload.length, seq), `frame ${i}`).toEqual(d.frame(h, payload, seq));
      if (h.type !== FrameType.DATA) seq++;
    }
    expect(at.hpack.stats).toEqual(d.hpack.stats);
    expect(at.error?.message).toBe('frame of stream 9 with 4 of its 6 payload octets');
  });
});

describe('signals', () => {
  it('gRPC service and method from :path', () => {
    expect(grpcPath('/helloworld.Greeter/SayHello')).toEqual(['helloworld.Greeter', 'SayHello']);
    expect(grpcPath('/Greeter/SayHello')).toEqual(['Greeter', 'SayHello']);
    for (const p of ['/', '//x', '/a/', '/a/b/c', 'a/b', '/abc', '']) expect(grpcPath(p), p).toBeUndefined();
  });

  it('gRPC content types', () => {
    for (const t of ['application/grpc', 'application/grpc+proto', 'application/grpc;charset=utf-8', 'Application/GRPC+json'])
      expect(isGrpcContentType(t), t).toBe(true);
    for (const t of ['application/grpc-web', 'application/grpcx', 'application/json', 'text/plain', ''])
      expect(isGrpcContentType(t), t).toBe(false);
  });

  function collect(fields: [string, string][]) {
    const c = new SignalCollector();
    for (const [n, v] of fields) c.sink(n, v, false);
    return c.take();
  }

  it('a gRPC request, its response headers and its trailers', () => {
    expect(
      collect([
        [':method', 'POST'],
        [':scheme', 'http'],
        [':path', '/pkg.Svc/Get'],
        [':authority', 'x'],
        ['content-type', 'application/grpc'],
        ['te', 'trailers'],
      ]),
    ).toEqual({ method: 'POST', path: '/pkg.Svc/Get', contentType: 'application/grpc', grpc: true, rpcService: 'pkg.Svc', rpcMethod: 'Get', malformed: false });
    expect(collect([[':status', '200'], ['content-type', 'application/grpc+proto']])).toEqual({
      status: 200,
      contentType: 'application/grpc+proto',
      grpc: true,
      malformed: false,
    });
    expect(collect([['grpc-status', '14'], ['grpc-message', 'unavailable']])).toEqual({ grpcStatus: 14, grpc: false, malformed: false });
  });

  it.each([
    ['a :status that is not three digits', [[':status', '20']]],
    ['a :status with a letter', [[':status', '2x0']]],
    ['a :status out of range', [[':status', '600']]],
    ['two :status', [[':status', '200'], [':status', '404']]],
    ['two :path', [[':path', '/a'], [':path', '/b']]],
    ['a non-numeric grpc-status', [['grpc-status', 'OK']]],
  ] as [string, [string, string][]][])('%s is malformed', (_name, fields) => {
    expect(collect(fields).malformed).toBe(true);
  });

  it('each take starts a new block', () => {
    const c = new SignalCollector();
    c.sink(':status', '503', false);
    expect(c.take().status).toBe(503);
    expect(c.take()).toEqual({ grpc: false, malformed: false });
  });
});

describe('HeaderDirection sequence numbers', () => {
  const H = (streamId: number) => header(FrameType.HEADERS, FrameFlag.END_HEADERS, streamId, REQUEST.length);

  it('consecutive numbers decode; a gap turns the direction unknown, naming the missing frames', () => {
    const d = new HeaderDirection();
    expect(d.frame(H(1), REQUEST, 0)?.signals?.path).toBe('/');
    expect(d.frame(header(FrameType.DATA, 0, 1, 0), Buffer.alloc(0), 7)).toBeUndefined(); // DATA is not numbered
    expect(d.frame(H(3), REQUEST, 1)?.signals?.path).toBe('/');
    const after = d.frame(H(5), REQUEST, 4);
    expect(after?.signals).toBeUndefined();
    expect(after?.error?.message).toBe('HPACK: header frames 2..3 of this direction were lost; the dynamic table is out of step');
    expect(d.frame(H(7), REQUEST, 5)?.error).toBe(after?.error);
  });

  it('a first frame numbered above 0 means the first ones were lost; numbers wrap at 2^32', () => {
    expect(new HeaderDirection().frame(H(1), REQUEST, 1)?.error?.reason).toBe('lost');
    const w = new HeaderDirection();
    expect(w.frame(H(1), REQUEST, 0)?.signals).toBeDefined();
    expect(w.frame(H(3), REQUEST, 2 ** 32 + 1)?.signals).toBeDefined(); // ≡ 1 (mod 2^32)
  });

  it('the first error is kept: a gap that lands on a CONTINUATION reports the loss, not the orphan CONTINUATION', () => {
    const d = new HeaderDirection();
    d.frame(header(FrameType.HEADERS, 0, 1, 4), REQUEST.subarray(0, 4), 0);
    const b = d.frame(header(FrameType.CONTINUATION, FrameFlag.END_HEADERS, 1, 4), REQUEST.subarray(8), 2);
    expect(b?.error?.reason).toBe('lost');
  });
});

describe('frames on hostile input', () => {
  it('5,000 random streams: the reader refuses only with H2FrameError, HeaderDirection never throws', () => {
    let seed = 9113;
    const rand = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed >>> 8;
    };
    let blocks = 0;
    for (let i = 0; i < 5000; i++) {
      // Mostly small frames with random types and flags, so that many are header-carrying frames.
      const parts: Buffer[] = [];
      for (let f = 0; f < 1 + (rand() % 6); f++) {
        const payload = Buffer.from(Array.from({ length: rand() % 24 }, () => rand() & 0xff));
        parts.push(frame(rand() % 11, rand() & 0xff, rand() % 4, payload));
      }
      const bytes = Buffer.concat(parts);
      if (i % 3 === 0) bytes[rand() % bytes.length] = rand() & 0xff; // sometimes a broken length
      const d = new HeaderDirection({ maxBlockSize: 256 });
      const reader = new FrameReader(
        (h, p) => {
          if (d.frame(h, p)) blocks++;
        },
        { maxFrameSize: 64 },
      );
      try {
        reader.push(bytes);
      } catch (err) {
        if (!(err instanceof H2FrameError)) throw err;
      }
    }
    expect(blocks).toBeGreaterThan(100);
  });
});
