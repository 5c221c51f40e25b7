// Codecs lay values out as C does; bad values are TypeError/RangeError.
import { describe, expect, it } from 'vitest';

import { codec as c } from '../../src/index.js';

describe('struct layout follows C alignment', () => {
  it.each([
    // [fields, size, offsets] — sizes as clang computes them for x86-64.
    ['u8,u64', { a: c.u8, b: c.u64 }, 16, { a: 0, b: 8 }],
    ['u8,u16,u32', { a: c.u8, b: c.u16, d: c.u32 }, 8, { a: 0, b: 2, d: 4 }],
    ['u32,u8', { a: c.u32, b: c.u8 }, 8, { a: 0, b: 4 }],
    ['u16,bytes(3)', { a: c.u16, b: c.bytes(3) }, 6, { a: 0, b: 2 }],
    ['u8,ipv6,u16be', { a: c.u8, b: c.ipv6, d: c.u16be }, 20, { a: 0, b: 1, d: 18 }],
    ['u64,u32[3]', { a: c.u64, b: c.array(c.u32, 3) }, 24, { a: 0, b: 8 }],
  ] as const)('%s', (_name, fields, size, offsets) => {
    const s = c.struct(fields as Record<string, c.Codec<any>>);
    expect(s.size).toBe(size);
    // Write 0xff..-ish values field by field and find where each one landed.
    for (const [k, off] of Object.entries(offsets)) {
      const f = (fields as Record<string, c.Codec<any>>)[k]!;
      const b = Buffer.alloc(size);
      const sample: Record<string, unknown> = {};
      for (const [k2, f2] of Object.entries(fields as Record<string, c.Codec<any>>)) sample[k2] = zeroOf(f2);
      sample[k] = oneOf(f);
      s.encode(sample as never, b, 0);
      expect(b.findIndex((x) => x !== 0)).toBe(off);
    }
  });

  it('packed structs have no padding', () => {
    expect(c.struct({ a: c.u8, b: c.u64 }, { packed: true }).size).toBe(9);
  });

  it('padding is zeroed on encode and omitted on decode', () => {
    const s = c.struct({ a: c.u8, p: c.pad(3), b: c.u32 });
    const b = Buffer.alloc(8, 0xee);
    s.encode({ a: 1, b: 2 }, b, 0);
    expect([...b]).toEqual([1, 0, 0, 0, 2, 0, 0, 0]);
    expect(s.decode(b, 0)).toEqual({ a: 1, b: 2 });
  });

  it('round-trips nested structs and arrays', () => {
    const inner = c.struct({ x: c.u16, y: c.i32 });
    const s = c.struct({ v: c.array(inner, 2), n: c.u64, ok: c.bool, ip: c.ipv4 });
    const v = { v: [{ x: 1, y: -2 }, { x: 65535, y: 2 ** 31 - 1 }], n: 2n ** 64n - 1n, ok: true, ip: '198.18.0.1' };
    expect(c.decode(s, c.encode(s, v))).toEqual(v);
  });
});

describe('integers', () => {
  it.each([
    ['u8', c.u8, 256], ['u8', c.u8, -1], ['u16', c.u16, 65536], ['u32', c.u32, 2 ** 32], ['i32', c.i32, 2 ** 31],
    ['i8', c.i8, -129], ['u32', c.u32, 1.5],
  ] as const)('%s rejects %s with RangeError', (_name, codec, v) => {
    expect(() => c.encode(codec as c.Codec<number>, v)).toThrow(RangeError);
  });

  it('type errors are TypeErrors', () => {
    expect(() => c.encode(c.u32, '1' as never)).toThrow(TypeError);
    expect(() => c.encode(c.u64, 'x' as never)).toThrow(TypeError);
    expect(() => c.encode(c.bool, 1 as never)).toThrow(TypeError);
    expect(() => c.encode(c.bytes(2), [1, 2] as never)).toThrow(TypeError);
  });

  it('u64 takes bigints and safe integers; u64n reads as number', () => {
    expect(c.encode(c.u64, 5 as never /* numbers are accepted at run time */)).toEqual(Buffer.from([5, 0, 0, 0, 0, 0, 0, 0]));
    expect(() => c.encode(c.u64, (2 ** 60) as never)).toThrow(RangeError);
    expect(() => c.encode(c.u64, -1n)).toThrow(RangeError);
    expect(c.decode(c.i64, c.encode(c.i64, -5n))).toBe(-5n);
    expect(c.decode(c.u64n, c.encode(c.u64n, 2 ** 53 - 1))).toBe(2 ** 53 - 1);
  });

  it('network byte order codecs are big-endian', () => {
    expect([...c.encode(c.u16be, 0x1f90)]).toEqual([0x1f, 0x90]);
    expect([...c.encode(c.u32be, 0x7f000001)]).toEqual([127, 0, 0, 1]);
    expect([...c.encode(c.u16, 0x1f90)]).toEqual([0x90, 0x1f]);
  });
});

describe('addresses', () => {
  it.each([
    ['::', '00000000000000000000000000000000'],
    ['::1', '00000000000000000000000000000001'],
    ['fd00::2', 'fd000000000000000000000000000002'],
    ['2001:db8:0:0:1:0:0:1', '20010db8000000000001000000000001'],
    ['::ffff:198.18.0.1', '00000000000000000000ffffc6120001'],
    ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008'],
  ])('ipv6 %s', (text, hex) => {
    expect(c.encode(c.ipv6, text).toString('hex')).toBe(hex);
  });

  it('formats IPv6 per RFC 5952 (longest zero run, leftmost on ties, no single-group ::)', () => {
    const fmt = (hex: string) => c.bytesToIp(Buffer.from(hex, 'hex'));
    expect(fmt('20010db8000000000001000000000001')).toBe('2001:db8::1:0:0:1');
    expect(fmt('20010db8000000010001000100010001')).toBe('2001:db8:0:1:1:1:1:1');
    expect(fmt('00000000000000000000000000000001')).toBe('::1');
    expect(fmt('fd000000000000000000000000000000')).toBe('fd00::');
  });

  it('formats an address held in 16 bytes by its family, as the programs\' structs keep it', () => {
    const held = Buffer.alloc(16);
    held.set([198, 18, 0, 1]);
    expect(c.bytesToIp(held, c.AF_INET)).toBe('198.18.0.1');
    expect(c.bytesToIp(c.ipToBytes('fd00::1'), c.AF_INET6)).toBe('fd00::1');
    expect([c.AF_INET, c.AF_INET6]).toEqual([2, 10]); // linux/socket.h
  });

  it('rejects what is not an address of the family', () => {
    expect(() => c.encode(c.ipv4, '::1')).toThrow(TypeError);
    expect(() => c.encode(c.ipv6, '1.2.3.4')).toThrow(TypeError);
    expect(() => c.encode(c.ipv4, '256.1.1.1')).toThrow(TypeError);
    expect(() => c.bytesToIp(Buffer.alloc(5))).toThrow(RangeError);
  });
});

function zeroOf(f: c.Codec<any>): unknown {
  const b = Buffer.alloc(f.size);
  return f.decode(b, 0);
}

function oneOf(f: c.Codec<any>): unknown {
  const z = zeroOf(f);
  // Big-endian codecs put the low byte last: set the high one so the field's first byte is non-zero.
  if (typeof z === 'number') return f.name.endsWith('be') ? 2 ** (8 * (f.size - 1)) : 1;
  if (typeof z === 'bigint') return 1n;
  if (typeof z === 'boolean') return true;
  if (typeof z === 'string') return z.includes(':') ? '100::' : '1.0.0.0';
  if (Buffer.isBuffer(z)) return Buffer.alloc(f.size, 1);
  if (Array.isArray(z)) return z.map((x, i) => (i === 0 ? 1 : x));
  throw new Error(`no sample for ${f.name}`);
}
