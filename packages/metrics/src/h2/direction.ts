/**
 * One connection direction's header blocks, from frames to signals: reassembly, HPACK decoding with that
 * direction's dynamic table, and extraction. After the first error (a bad frame, a decoding error, a record cut
 * short, a block reported lost) the direction is unknown for good: later blocks are still reported, with the
 * error instead of signals, so their streams are counted as unparsed rather than labelled from a wrong table.
 *
 * A header block lost without notice is the one failure HPACK cannot see: the encoder's table gained entries the
 * decoder never saw, later indices resolve to other entries, and statuses come out wrong with no decoding error
 * (measured on node:http2 traffic: one block of 2,000 dropped silently gave 6–19 wrong statuses and no error).
 * Whoever delivers frames must therefore number them: pass `seq`, counting this direction's header-carrying frames
 * (HEADERS, PUSH_PROMISE, CONTINUATION) from 0, and a gap marks the direction lost.
 */
import { FrameFlag, FrameType, H2FrameError, HeaderBlockAssembler, type FrameHeader, type HeaderBlock } from './frames.js';
import { HpackDecoder, HpackError, type HpackDecoderOptions } from './hpack.js';
import { SIGNAL_FIELDS, SignalCollector, type HeaderSignals } from './signals.js';

export interface DecodedBlock {
  streamId: number;
  /** FrameType.HEADERS or FrameType.PUSH_PROMISE. */
  type: number;
  endStream: boolean;
  promisedStreamId: number;
  /** Present when the block was decoded. */
  signals?: HeaderSignals;
  /** Why the block could not be decoded (this one or an earlier error). */
  error?: HpackError | H2FrameError;
}

export interface DirectionOptions extends HpackDecoderOptions {
  /** Bound of a reassembled header block (default 65536). */
  maxBlockSize?: number;
}

export class HeaderDirection {
  readonly hpack: HpackDecoder;
  readonly #assembler: HeaderBlockAssembler;
  readonly #collector = new SignalCollector();
  /** frameAt's result, reused (see there). */
  readonly #out: DecodedBlock = { streamId: 0, type: 0, endStream: false, promisedStreamId: 0, signals: undefined, error: undefined };
  #error: HpackError | H2FrameError | undefined;
  #seq = 0;

  constructor(options: DirectionOptions = {}) {
    // Values of fields the signals do not read are only measured (the table still needs their sizes).
    this.hpack = new HpackDecoder({ valuesOf: SIGNAL_FIELDS, ...options });
    this.#assembler = new HeaderBlockAssembler(options.maxBlockSize === undefined ? {} : { maxBlockSize: options.maxBlockSize });
  }

  /** The first error of this direction; once set, no block is decoded again. */
  get error(): HpackError | H2FrameError | undefined {
    return this.#error;
  }

  /** A header block (or a frame of one) of this direction was lost. */
  markLost(detail?: string): void {
    this.hpack.markLost(detail);
    this.#assembler.reset();
    this.#error ??= this.hpack.broken;
  }

  /**
   * Feeds one frame. `payload` may be shorter than header.length when the capture cut it: that is an error for
   * header-carrying frames (the table would go out of step) and ignored for the others. `seq`, when given, is the
   * frame's number among this direction's header-carrying frames (from 0, modulo 2^32): a gap means frames were
   * lost.
   */
  frame(header: FrameHeader, payload: Uint8Array, seq?: number): DecodedBlock | undefined {
    const carries = header.type === FrameType.HEADERS || header.type === FrameType.PUSH_PROMISE || header.type === FrameType.CONTINUATION;
    if (carries && seq !== undefined) this.#number(seq);
    let block: HeaderBlock | undefined;
    try {
      if (carries && payload.length < header.length) {
        throw new H2FrameError('truncated', `frame of stream ${header.streamId} with ${payload.length} of its ${header.length} payload octets`);
      }
      block = this.#assembler.push(header, payload);
    } catch (err) {
      if (!(err instanceof H2FrameError)) throw err;
      // The first error is the one to report; this one still means the table is out of step.
      this.#error ??= err;
      this.hpack.markLost(err.message);
      this.#assembler.reset();
      return { streamId: header.streamId, type: header.type, endStream: false, promisedStreamId: 0, error: this.#error };
    }
    return block && this.block(block);
  }

  /**
   * frame() of the payload buf[start, end), without a view of it: a HEADERS frame that is a whole block by itself
   * (END_HEADERS, no padding or priority, no block open: what nearly every response and request is) is decoded
   * in place, and its result (the DecodedBlock and its signals) is valid until the next frameAt or frame call:
   * what a caller reads at once need not be allocated per block. Any other frame goes through frame().
   */
  frameAt(header: FrameHeader, buf: Buffer, start: number, end: number, seq?: number): DecodedBlock | undefined {
    const n = end - start;
    if (
      header.type !== FrameType.HEADERS ||
      (header.flags & (FrameFlag.END_HEADERS | FrameFlag.PADDED | FrameFlag.PRIORITY)) !== FrameFlag.END_HEADERS ||
      header.streamId === 0 ||
      this.#assembler.open ||
      n < header.length ||
      n > this.#assembler.maxBlockSize
    ) {
      return this.frame(header, buf.subarray(start, end), seq);
    }
    if (seq !== undefined) this.#number(seq);
    return this.#decode(header.streamId, FrameType.HEADERS, (header.flags & FrameFlag.END_STREAM) !== 0, 0, buf, start, end, true);
  }

  /** A header-carrying frame's number (see frame()): a gap marks the direction lost. */
  #number(seq: number): void {
    if (seq >>> 0 !== this.#seq && !this.#error) this.markLost(`header frames ${this.#seq}..${((seq >>> 0) - 1) >>> 0} of this direction were lost`);
    this.#seq = ((seq >>> 0) + 1) >>> 0;
  }

  /** Decodes one complete header block. */
  block(b: HeaderBlock): DecodedBlock {
    const buf = Buffer.isBuffer(b.block) ? b.block : Buffer.from(b.block.buffer, b.block.byteOffset, b.block.byteLength);
    return this.#decode(b.streamId, b.type, b.endStream, b.promisedStreamId, buf, 0, buf.length);
  }

  #decode(streamId: number, type: number, endStream: boolean, promisedStreamId: number, buf: Buffer, start: number, end: number, reuse = false): DecodedBlock {
    let out: DecodedBlock;
    if (reuse) {
      out = this.#out;
      out.streamId = streamId;
      out.type = type;
      out.endStream = endStream;
      out.promisedStreamId = promisedStreamId;
      out.signals = undefined;
      out.error = undefined;
    } else {
      out = { streamId, type, endStream, promisedStreamId, signals: undefined, error: undefined };
    }
    if (this.#error) {
      out.error = this.#error;
      return out;
    }
    this.#collector.begin();
    try {
      this.hpack.decodeAt(buf, start, end, this.#collector.sink);
    } catch (err) {
      if (!(err instanceof HpackError)) throw err;
      this.#collector.take();
      this.#error = err;
      out.error = err;
      return out;
    }
    out.signals = reuse ? this.#collector.takeShared() : this.#collector.take();
    return out;
  }
}
