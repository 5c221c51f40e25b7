/** Codecs: how a TS value is laid out in a BPF map key or value. Sizes and alignment follow C, so a struct
 *  codec mirrors the C struct of the shared header; its size is checked against the kernel's when a map opens.
 *  Integers are little-endian (host order on every platform this package ships for). */
import { isIPv4, isIPv6 } from 'node:net';

export interface Codec<T> {
  /** Bytes the value occupies. */
  readonly size: number;
  /** C alignment, for struct layout. */
  readonly align: number;
  /** Human-readable type, for error messages. */
  readonly name: string;
  encode(value: T, buf: Buffer, offset: number): void;
  decode(buf: Buffer, offset: number): T;
}

export type Infer<C> = C extends Codec<infer T> ? T : never;

function intCodec(name: string, size: 1 | 2 | 4, signed: boolean, be = false): Codec<number> {
  const min = signed ? -(2 ** (size * 8 - 1)) : 0;
  const max = signed ? 2 ** (size * 8 - 1) - 1 : 2 ** (size * 8) - 1;
  const check = (v: number) => {
    if (typeof v !== 'number') throw new TypeError(`${name} value must be a number, got ${typeof v}`);
    if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${name} value ${v} is out of range [${min}, ${max}]`);
  };
  const enc: (b: Buffer, v: number, o: number) => void =
    size === 1 ? (b, v, o) => { b[o] = v & 0xff; }
    : size === 2 ? (be ? (b, v, o) => { b.writeUInt16BE(v & 0xffff, o); } : (b, v, o) => { b.writeUInt16LE(v & 0xffff, o); })
    : be ? (b, v, o) => { b.writeUInt32BE(v >>> 0, o); } : (b, v, o) => { b.writeUInt32LE(v >>> 0, o); };
  const dec: (b: Buffer, o: number) => number =
    size === 1 ? (signed ? (b, o) => b.readInt8(o) : (b, o) => b[o]!)
    : size === 2 ? (signed ? (b, o) => b.readInt16LE(o) : be ? (b, o) => b.readUInt16BE(o) : (b, o) => b.readUInt16LE(o))
    : signed ? (b, o) => b.readInt32LE(o) : be ? (b, o) => b.readUInt32BE(o) : (b, o) => b.readUInt32LE(o);
  return {
    size,
    align: size,
    name,
    encode(v, b, o) {
      check(v);
      enc(b, v, o);
    },
    decode: dec,
  };
}

// Buffer.writeBig(U)Int64LE costs about three times a DataView's setBig(U)int64, so 64-bit encodes go through a
// DataView cached per ArrayBuffer (buffers of the pool share one; byteOffset locates each in it).
const views = new WeakMap<ArrayBufferLike, DataView>();
function viewOf(b: Buffer): DataView {
  let v = views.get(b.buffer);
  if (!v) {
    v = new DataView(b.buffer);
    views.set(b.buffer, v);
  }
  return v;
}

function bigCodec(name: string, signed: boolean): Codec<bigint> {
  const min = signed ? -(1n << 63n) : 0n;
  const max = signed ? (1n << 63n) - 1n : (1n << 64n) - 1n;
  return {
    size: 8,
    align: 8,
    name,
    encode(v, b, o) {
      let x = v as bigint | number;
      if (typeof x === 'number') {
        if (!Number.isSafeInteger(x)) throw new RangeError(`${name} value ${x} is not a safe integer; pass a bigint`);
        x = BigInt(x);
      }
      if (typeof x !== 'bigint') throw new TypeError(`${name} value must be a bigint, got ${typeof x}`);
      if (x < min || x > max) throw new RangeError(`${name} value ${x} is out of range`);
      if (o < 0 || o + 8 > b.length) throw new RangeError(`${name}: offset ${o} is outside the buffer`);
      if (signed) viewOf(b).setBigInt64(b.byteOffset + o, x, true);
      else viewOf(b).setBigUint64(b.byteOffset + o, x, true);
    },
    decode: signed ? (b, o) => b.readBigInt64LE(o) : (b, o) => b.readBigUInt64LE(o),
  };
}

export const u8 = intCodec('u8', 1, false);
export const u16 = intCodec('u16', 2, false);
export const u32 = intCodec('u32', 4, false);
export const i8 = intCodec('i8', 1, true);
export const i16 = intCodec('i16', 2, true);
export const i32 = intCodec('i32', 4, true);
export const u64 = bigCodec('u64', false);
export const i64 = bigCodec('i64', true);
/** 16/32-bit integers in network byte order (ports and addresses as the kernel's socket structs hold them). */
export const u16be = intCodec('u16be', 2, false, true);
export const u32be = intCodec('u32be', 4, false, true);

/** A 64-bit counter read as a JS number (exact up to 2^53). */
export const u64n: Codec<number> = {
  size: 8,
  align: 8,
  name: 'u64n',
  encode(v, b, o) {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`u64n value ${v} is not a safe non-negative integer`);
    u64.encode(BigInt(v), b, o);
  },
  decode: (b, o) => Number(b.readBigUInt64LE(o)),
};

export const bool: Codec<boolean> = {
  size: 1,
  align: 1,
  name: 'bool',
  encode(v, b, o) {
    if (typeof v !== 'boolean') throw new TypeError(`bool value must be a boolean, got ${typeof v}`);
    b[o] = v ? 1 : 0;
  },
  decode: (b, o) => b[o] !== 0,
};

/** Raw bytes of a fixed length. Decoding copies, so the value outlives the scratch buffer. */
export function bytes(n: number): Codec<Buffer> {
  return {
    size: n,
    align: 1,
    name: `bytes(${n})`,
    encode(v, b, o) {
      if (!((v as unknown) instanceof Uint8Array)) throw new TypeError(`bytes(${n}) value must be a Buffer`);
      if (v.length !== n) throw new RangeError(`bytes(${n}) value has ${v.length} bytes`);
      b.set(v, o);
    },
    decode: (b, o) => Buffer.from(b.subarray(o, o + n)),
  };
}

const padCodecs = new WeakSet<Codec<undefined>>();

/** Zero bytes that keep a struct's layout explicit; they decode to undefined and are omitted. */
export function pad(n: number): Codec<undefined> {
  const c: Codec<undefined> = {
    size: n,
    align: 1,
    name: `pad(${n})`,
    encode(_v, b, o) {
      b.fill(0, o, o + n);
    },
    decode: () => undefined,
  };
  padCodecs.add(c);
  return c;
}

export function array<T>(of: Codec<T>, n: number): Codec<T[]> {
  return {
    size: of.size * n,
    align: of.align,
    name: `${of.name}[${n}]`,
    encode(v, b, o) {
      if (!Array.isArray(v)) throw new TypeError(`${of.name}[${n}] value must be an array`);
      if (v.length !== n) throw new RangeError(`${of.name}[${n}] value has ${v.length} elements`);
      for (let i = 0; i < n; i++) of.encode(v[i]!, b, o + i * of.size);
    },
    decode(b, o) {
      const out = new Array<T>(n);
      for (let i = 0; i < n; i++) out[i] = of.decode(b, o + i * of.size);
      return out;
    },
  };
}

type Fields = Record<string, Codec<any>>;
type StructValue<F extends Fields> = {
  [K in keyof F as F[K] extends Codec<undefined> ? never : K]: Infer<F[K]>;
};

/**
 * A C struct: fields in declaration order, each at its natural alignment, the size rounded up to the
 * largest alignment — the layout clang gives the same struct. Pass `{ packed: true }` for
 * `__attribute__((packed))`.
 */
export function struct<F extends Fields>(fields: F, opts: { packed?: boolean; name?: string } = {}): Codec<StructValue<F>> {
  const layout: { key: string; codec: Codec<any>; offset: number; skip: boolean }[] = [];
  let offset = 0;
  let align = 1;
  for (const [key, codec] of Object.entries(fields)) {
    const a = opts.packed ? 1 : codec.align;
    offset = Math.ceil(offset / a) * a;
    layout.push({ key, codec, offset, skip: padCodecs.has(codec) });
    offset += codec.size;
    align = Math.max(align, a);
  }
  const size = Math.ceil(offset / align) * align;
  const name = opts.name ?? `struct{${layout.map((f) => `${f.key}:${f.codec.name}`).join(',')}}`;
  return {
    size,
    align,
    name,
    encode(v, b, o) {
      if (v === null || typeof v !== 'object') throw new TypeError(`${name} value must be an object`);
      // Holes left by alignment are zeroed: hash keys compare every byte.
      b.fill(0, o, o + size);
      for (const f of layout) {
        if (f.skip) continue;
        const fv = (v as Record<string, unknown>)[f.key];
        if (fv === undefined) throw new TypeError(`${name}: field ${f.key} is missing`);
        try {
          f.codec.encode(fv, b, o + f.offset);
        } catch (err) {
          if (err instanceof TypeError || err instanceof RangeError) {
            const E = err instanceof TypeError ? TypeError : RangeError;
            throw new E(`field ${f.key}: ${err.message}`);
          }
          throw err;
        }
      }
    },
    decode(b, o) {
      const out: Record<string, unknown> = {};
      for (const f of layout) if (!f.skip) out[f.key] = f.codec.decode(b, o + f.offset);
      return out as StructValue<F>;
    },
  };
}

function parseIpv6(s: string): Buffer {
  if (!isIPv6(s)) throw new TypeError(`not an IPv6 address: ${JSON.stringify(s)}`);
  let text = s;
  const out = Buffer.alloc(16);
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const p = v4[1]!.split('.').map(Number);
    text = text.slice(0, -v4[1]!.length) + `${((p[0]! << 8) | p[1]!).toString(16)}:${((p[2]! << 8) | p[3]!).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...new Array(8 - h.length - t.length).fill('0'), ...t];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function formatIpv6(b: Buffer): string {
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push(b.readUInt16BE(i));
  // RFC 5952: compress the longest run (length ≥ 2) of zero groups.
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/** Parses an IPv4 or IPv6 address to its network-order bytes (4 or 16). */
export function ipToBytes(s: string): Buffer {
  const b = Buffer.allocUnsafe(4);
  if (ipv4Into(s, b, 0)) return b;
  return parseIpv6(s);
}

/**
 * Writes a dotted-quad IPv4 address's 4 bytes at `offset` and returns true; false (writing nothing) for any
 * other string. Accepts what node:net's isIPv4 accepts (decimal octets up to 255, no leading zero), parsed by
 * hand: the regular expression and the split cost more than the rest of an entry's encoding (100,000 at once).
 */
export function ipv4Into(s: string, buf: Uint8Array, offset: number): boolean {
  const n = s.length;
  if (n < 7 || n > 15) return false;
  let octet = 0;
  let digits = 0;
  let part = 0;
  let a = 0;
  let b = 0;
  let c = 0;
  for (let i = 0; i <= n; i++) {
    const ch = i < n ? s.charCodeAt(i) : 46;
    if (ch === 46) {
      if (digits === 0 || (part === 3 && i < n)) return false;
      if (part === 0) a = octet;
      else if (part === 1) b = octet;
      else if (part === 2) c = octet;
      else {
        buf[offset] = a;
        buf[offset + 1] = b;
        buf[offset + 2] = c;
        buf[offset + 3] = octet;
      }
      part++;
      octet = 0;
      digits = 0;
    } else if (ch >= 48 && ch <= 57) {
      if (digits > 0 && octet === 0) return false; // a leading zero
      octet = octet * 10 + (ch - 48);
      if (++digits > 3 || octet > 255) return false;
    } else return false;
  }
  return part === 4;
}

/** Address families as linux/socket.h numbers them, as the programs' structs carry them beside an address. */
export const AF_INET = 2;
export const AF_INET6 = 10;

/** The text form of 4 or 16 address bytes; with `family`, of an address kept in 16 bytes whatever its family
 *  (an AF_INET one in the first 4), as the programs' structs hold them. */
export function bytesToIp(b: Uint8Array, family?: number): string {
  if (family === AF_INET) b = b.subarray(0, 4);
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (buf.length === 4) return Array.from(buf).join('.');
  if (buf.length === 16) return formatIpv6(buf);
  throw new RangeError(`an IP address is 4 or 16 bytes, got ${buf.length}`);
}

/** An IPv4 address as 4 bytes in network order ("198.18.0.1"). */
export const ipv4: Codec<string> = {
  size: 4,
  align: 1,
  name: 'ipv4',
  encode(v, b, o) {
    if (typeof v !== 'string' || !isIPv4(v)) throw new TypeError(`ipv4 value must be an IPv4 address, got ${JSON.stringify(v)}`);
    ipToBytes(v).copy(b, o);
  },
  decode: (b, o) => bytesToIp(b.subarray(o, o + 4)),
};

/** An IPv6 address as 16 bytes in network order ("fd00::1"). */
export const ipv6: Codec<string> = {
  size: 16,
  align: 1,
  name: 'ipv6',
  encode(v, b, o) {
    if (typeof v !== 'string' || !isIPv6(v)) throw new TypeError(`ipv6 value must be an IPv6 address, got ${JSON.stringify(v)}`);
    parseIpv6(v).copy(b, o);
  },
  decode: (b, o) => bytesToIp(b.subarray(o, o + 16)),
};

/** The codec for an empty key or value (queues, stacks, ring buffers have no key). */
export const none: Codec<undefined> = { size: 0, align: 1, name: 'none', encode() {}, decode: () => undefined };

/** Encodes one value into a fresh Buffer. */
export function encode<T>(codec: Codec<T>, value: T): Buffer {
  const b = Buffer.alloc(codec.size);
  codec.encode(value, b, 0);
  return b;
}

export function decode<T>(codec: Codec<T>, buf: Buffer): T {
  if (buf.length < codec.size) throw new RangeError(`${codec.name} needs ${codec.size} bytes, got ${buf.length}`);
  return codec.decode(buf, 0);
}
