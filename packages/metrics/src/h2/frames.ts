/**
 * HTTP/2 framing (RFC 9113, formerly RFC 7540) as far as header blocks need it: frame headers, the header-block
 * fragment inside HEADERS, PUSH_PROMISE and CONTINUATION payloads, reassembly of a block across CONTINUATION
 * frames, SETTINGS entries, the client connection preface, and a reader cutting a byte stream into frames.
 */

export const FRAME_HEADER_LENGTH = 9;

export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

export const FrameFlag = {
  END_STREAM: 0x1,
  ACK: 0x1,
  END_HEADERS: 0x4,
  PADDED: 0x8,
  PRIORITY: 0x20,
} as const;

export const Setting = {
  HEADER_TABLE_SIZE: 0x1,
  ENABLE_PUSH: 0x2,
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
} as const;

/** The client connection preface (RFC 9113 §3.4). */
export const CLIENT_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export type H2FrameErrorReason =
  /** Pad Length larger than what follows it, i.e. not smaller than the payload (a PROTOCOL_ERROR, §6.1). */
  | 'padding'
  /** A payload shorter than its fixed fields (Pad Length, priority, promised stream id). */
  | 'frame-too-short'
  /** HEADERS, PUSH_PROMISE or CONTINUATION on stream 0. */
  | 'stream-zero'
  /** CONTINUATION with no open header block. */
  | 'continuation-unexpected'
  /** A frame other than CONTINUATION of the same stream while a header block is open (§6.10). */
  | 'header-block-interrupted'
  /** A header block over the reassembly bound. */
  | 'header-block-too-large'
  /** A frame longer than the reader accepts. */
  | 'frame-too-large'
  /** Fewer payload octets than the frame header announces (e.g. a record cut short). */
  | 'truncated'
  /** A SETTINGS payload that is not a multiple of 6 octets. */
  | 'settings-length'
  /** The stream did not start with the client preface. */
  | 'preface';

export class H2FrameError extends Error {
  override readonly name = 'H2FrameError';
  constructor(
    readonly reason: H2FrameErrorReason,
    message: string,
  ) {
    super(message);
  }
}

export interface FrameHeader {
  length: number;
  type: number;
  flags: number;
  streamId: number;
}

/** The 9-octet frame header at offset, or undefined when fewer than 9 octets are there. */
export function parseFrameHeader(buf: Uint8Array, offset = 0): FrameHeader | undefined {
  if (buf.length - offset < FRAME_HEADER_LENGTH) return undefined;
  return {
    length: (buf[offset]! << 16) | (buf[offset + 1]! << 8) | buf[offset + 2]!,
    type: buf[offset + 3]!,
    flags: buf[offset + 4]!,
    // The reserved high bit is ignored on receipt (§4.1).
    streamId: ((buf[offset + 5]! & 0x7f) << 24) | (buf[offset + 6]! << 16) | (buf[offset + 7]! << 8) | buf[offset + 8]!,
  };
}

/** Whether buf starts with the client preface: 'incomplete' when it is a proper prefix of it. */
export function matchPreface(buf: Uint8Array): 'preface' | 'not-preface' | 'incomplete' {
  const n = Math.min(buf.length, CLIENT_PREFACE.length);
  for (let i = 0; i < n; i++) if (buf[i] !== CLIENT_PREFACE[i]) return 'not-preface';
  return n === CLIENT_PREFACE.length ? 'preface' : 'incomplete';
}

/**
 * The header-block fragment of a HEADERS, PUSH_PROMISE or CONTINUATION payload (a view, not a copy): padding and
 * the priority fields (HEADERS) or the promised stream id (PUSH_PROMISE) removed.
 */
export function headerBlockFragment(header: FrameHeader, payload: Uint8Array): Uint8Array {
  const { type, flags } = header;
  if (header.streamId === 0) throw new H2FrameError('stream-zero', `${frameTypeName(type)} frame on stream 0`);
  if (type === FrameType.CONTINUATION) return payload;
  // The common case, no padding and no priority: the payload itself, no view to allocate.
  if (type === FrameType.HEADERS && !(flags & (FrameFlag.PADDED | FrameFlag.PRIORITY))) return payload;
  let start = 0;
  let end = payload.length;
  if (flags & FrameFlag.PADDED) {
    if (end < 1) throw new H2FrameError('frame-too-short', `${frameTypeName(type)} frame too short for its Pad Length`);
    const pad = payload[0]!;
    start = 1;
    if (pad > end - start) {
      throw new H2FrameError('padding', `${frameTypeName(type)} Pad Length ${pad} exceeds the ${end - start} octets after it`);
    }
    end -= pad;
  }
  const fixed = type === FrameType.HEADERS ? (flags & FrameFlag.PRIORITY ? 5 : 0) : type === FrameType.PUSH_PROMISE ? 4 : -1;
  if (fixed < 0) throw new TypeError(`headerBlockFragment: frame type ${type} carries no header block`);
  if (end - start < fixed) throw new H2FrameError('frame-too-short', `${frameTypeName(type)} frame too short for its ${fixed}-octet fields`);
  return payload.subarray(start + fixed, end);
}

/** Promised stream id of a PUSH_PROMISE payload. */
export function promisedStreamId(header: FrameHeader, payload: Uint8Array): number {
  const at = header.flags & FrameFlag.PADDED ? 1 : 0;
  if (payload.length < at + 4) throw new H2FrameError('frame-too-short', 'PUSH_PROMISE frame too short for its promised stream id');
  return ((payload[at]! & 0x7f) << 24) | (payload[at + 1]! << 16) | (payload[at + 2]! << 8) | payload[at + 3]!;
}

/** The [identifier, value] pairs of a SETTINGS payload (§6.5.1). */
export function parseSettings(payload: Uint8Array): [number, number][] {
  if (payload.length % 6 !== 0) throw new H2FrameError('settings-length', `SETTINGS payload of ${payload.length} octets is not a multiple of 6`);
  const out: [number, number][] = [];
  for (let i = 0; i < payload.length; i += 6) {
    const id = (payload[i]! << 8) | payload[i + 1]!;
    const value = ((payload[i + 2]! << 24) | (payload[i + 3]! << 16) | (payload[i + 4]! << 8) | payload[i + 5]!) >>> 0;
    out.push([id, value]);
  }
  return out;
}

/**
 * The SETTINGS of an HTTP/1.1 `Upgrade: h2c` request's HTTP2-Settings header (RFC 7540 §3.2.1: a SETTINGS
 * payload in base64url without padding). On an upgraded connection these are the client's first settings.
 */
export function parseHttp2SettingsHeader(value: string): [number, number][] {
  const v = value.trim();
  if (!/^[A-Za-z0-9_-]*$/.test(v) || v.length % 4 === 1) {
    throw new H2FrameError('settings-length', `HTTP2-Settings is not base64url without padding: ${JSON.stringify(value.slice(0, 40))}`);
  }
  return parseSettings(Buffer.from(v, 'base64url'));
}

const TYPE_NAMES = ['DATA', 'HEADERS', 'PRIORITY', 'RST_STREAM', 'SETTINGS', 'PUSH_PROMISE', 'PING', 'GOAWAY', 'WINDOW_UPDATE', 'CONTINUATION'];
export function frameTypeName(type: number): string {
  return TYPE_NAMES[type] ?? `type 0x${type.toString(16)}`;
}

/** A complete header block. */
export interface HeaderBlock {
  streamId: number;
  /** HEADERS or PUSH_PROMISE: the frame that opened the block. */
  type: number;
  /** END_STREAM of the opening HEADERS frame (trailers, or a response with no body). */
  endStream: boolean;
  /** For PUSH_PROMISE, the stream it reserves. */
  promisedStreamId: number;
  /** The block; a view of the last payload when the block fits in one frame, valid until the next push. */
  block: Uint8Array;
}

/**
 * Reassembles header blocks from HEADERS/PUSH_PROMISE + CONTINUATION frames of one connection direction. A block
 * must be followed only by CONTINUATION frames of its stream until END_HEADERS (§6.10), so one open block per
 * direction is all there can be; anything else is an error.
 */
export class HeaderBlockAssembler {
  readonly maxBlockSize: number;
  #open: HeaderBlock | undefined;
  #parts: Uint8Array[] = [];
  #size = 0;

  constructor(options: { maxBlockSize?: number } = {}) {
    const max = options.maxBlockSize ?? 65536;
    if (!Number.isInteger(max) || max < 0) throw new RangeError(`HeaderBlockAssembler: maxBlockSize must be a non-negative integer, got ${max}`);
    this.maxBlockSize = max;
  }

  /** Whether a block is open (waiting for CONTINUATION). */
  get open(): boolean {
    return this.#open !== undefined;
  }

  /**
   * Feeds a frame of this direction. Returns the block it completes, if any. Frames that carry no header block
   * only check that no block is open.
   */
  push(header: FrameHeader, payload: Uint8Array): HeaderBlock | undefined {
    const { type, flags, streamId } = header;
    const open = this.#open;
    if (open) {
      if (type !== FrameType.CONTINUATION || streamId !== open.streamId) {
        this.reset();
        throw new H2FrameError(
          'header-block-interrupted',
          `${frameTypeName(type)} on stream ${streamId} inside the header block of stream ${open.streamId} (only its CONTINUATION may follow)`,
        );
      }
      const fragment = headerBlockFragment(header, payload);
      this.#add(fragment);
      if (!(flags & FrameFlag.END_HEADERS)) return undefined;
      const block = concat(this.#parts, this.#size);
      this.reset();
      open.block = block;
      return open;
    }
    if (type === FrameType.CONTINUATION) throw new H2FrameError('continuation-unexpected', `CONTINUATION on stream ${streamId} with no open header block`);
    if (type !== FrameType.HEADERS && type !== FrameType.PUSH_PROMISE) return undefined;
    const fragment = headerBlockFragment(header, payload);
    const block: HeaderBlock = {
      streamId,
      type,
      endStream: type === FrameType.HEADERS && (flags & FrameFlag.END_STREAM) !== 0,
      promisedStreamId: type === FrameType.PUSH_PROMISE ? promisedStreamId(header, payload) : 0,
      block: fragment,
    };
    if (flags & FrameFlag.END_HEADERS) {
      if (fragment.length > this.maxBlockSize) throw this.#tooLarge(fragment.length);
      return block;
    }
    // The payload is only valid during this call: keep a copy.
    this.#open = block;
    this.#add(fragment);
    return undefined;
  }

  /** Drops an open block (e.g. after a lost record). */
  reset(): void {
    this.#open = undefined;
    this.#parts = [];
    this.#size = 0;
  }

  #add(fragment: Uint8Array): void {
    if (this.#size + fragment.length > this.maxBlockSize) {
      const size = this.#size + fragment.length;
      this.reset();
      throw this.#tooLarge(size);
    }
    // Payloads are views valid only during push: keep copies (new Uint8Array, as Buffer#slice would not copy).
    this.#parts.push(new Uint8Array(fragment));
    this.#size += fragment.length;
  }

  #tooLarge(size: number): H2FrameError {
    return new H2FrameError('header-block-too-large', `header block of at least ${size} octets over the bound of ${this.maxBlockSize}`);
  }
}

function concat(parts: Uint8Array[], size: number): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(size);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export interface FrameReaderOptions {
  /** The stream starts with the client preface (client-to-server direction). */
  preface?: boolean;
  /** Longest frame payload buffered (default 16384, HTTP/2's initial SETTINGS_MAX_FRAME_SIZE). DATA is never buffered. */
  maxFrameSize?: number;
}

/**
 * Cuts one direction's byte stream into frames, buffering at most one frame (DATA payloads are skipped, not
 * buffered). onFrame receives a view valid only during the call; DATA frames come with an empty payload.
 */
export class FrameReader {
  readonly maxFrameSize: number;
  #preface: boolean;
  #pending: Buffer = Buffer.alloc(0);
  #skip = 0;
  readonly #onFrame: (header: FrameHeader, payload: Uint8Array) => void;

  constructor(onFrame: (header: FrameHeader, payload: Uint8Array) => void, options: FrameReaderOptions = {}) {
    const max = options.maxFrameSize ?? 16384;
    if (!Number.isInteger(max) || max < 0 || max > 0xffffff) throw new RangeError(`FrameReader: maxFrameSize must be in [0, 16777215], got ${max}`);
    this.maxFrameSize = max;
    this.#preface = options.preface ?? false;
    this.#onFrame = onFrame;
  }

  push(chunk: Uint8Array): void {
    const buf = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let at = 0;
    if (this.#skip > 0) {
      const n = Math.min(this.#skip, buf.length);
      this.#skip -= n;
      at = n;
    }
    if (this.#preface) {
      const m = matchPreface(buf.subarray(at));
      if (m === 'not-preface') throw new H2FrameError('preface', 'the stream does not start with the HTTP/2 client preface');
      if (m === 'incomplete') {
        this.#pending = Buffer.from(buf.subarray(at));
        return;
      }
      at += CLIENT_PREFACE.length;
      this.#preface = false;
    }
    for (;;) {
      const h = parseFrameHeader(buf, at);
      if (!h) break;
      if (h.type === FrameType.DATA) {
        this.#onFrame(h, EMPTY);
        const n = Math.min(h.length, buf.length - at - FRAME_HEADER_LENGTH);
        at += FRAME_HEADER_LENGTH + n;
        this.#skip = h.length - n;
        if (this.#skip > 0) break;
        continue;
      }
      if (h.length > this.maxFrameSize) {
        throw new H2FrameError('frame-too-large', `${frameTypeName(h.type)} frame of ${h.length} octets over the bound of ${this.maxFrameSize}`);
      }
      if (buf.length - at - FRAME_HEADER_LENGTH < h.length) break;
      const start = at + FRAME_HEADER_LENGTH;
      at = start + h.length;
      this.#onFrame(h, buf.subarray(start, at));
    }
    this.#pending = at < buf.length ? Buffer.from(buf.subarray(at)) : EMPTY;
  }
}

const EMPTY = Buffer.alloc(0);
