/**
 * One connection direction's header blocks, from frames to signals: reassembly, HPACK decoding with that
 * direction's dynamic table, and extraction. After the first error (a bad frame, a decoding error, a record cut
 * short, a block reported lost) the direction is unknown for good: later blocks are still reported, with the
 * error instead of signals, so their streams are counted as unparsed rather than labelled from a wrong table.
 */
import { FrameType, H2FrameError, HeaderBlockAssembler, type FrameHeader, type HeaderBlock } from './frames.js';
import { HpackDecoder, HpackError, type HpackDecoderOptions } from './hpack.js';
import { SignalCollector, type HeaderSignals } from './signals.js';

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
  #error: HpackError | H2FrameError | undefined;

  constructor(options: DirectionOptions = {}) {
    this.hpack = new HpackDecoder(options);
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
   * header-carrying frames (the table would go out of step) and ignored for the others.
   */
  frame(header: FrameHeader, payload: Uint8Array): DecodedBlock | undefined {
    const carries = header.type === FrameType.HEADERS || header.type === FrameType.PUSH_PROMISE || header.type === FrameType.CONTINUATION;
    let block: HeaderBlock | undefined;
    try {
      if (carries && payload.length < header.length) {
        throw new H2FrameError('truncated', `frame of stream ${header.streamId} with ${payload.length} of its ${header.length} payload octets`);
      }
      block = this.#assembler.push(header, payload);
    } catch (err) {
      if (!(err instanceof H2FrameError)) throw err;
      this.markLost(err.message);
      this.#error = err;
      return { streamId: header.streamId, type: header.type, endStream: false, promisedStreamId: 0, error: err };
    }
    return block && this.block(block);
  }

  /** Decodes one complete header block. */
  block(b: HeaderBlock): DecodedBlock {
    const out: DecodedBlock = { streamId: b.streamId, type: b.type, endStream: b.endStream, promisedStreamId: b.promisedStreamId };
    if (this.#error) {
      out.error = this.#error;
      return out;
    }
    try {
      this.hpack.decode(b.block, this.#collector.sink);
    } catch (err) {
      if (!(err instanceof HpackError)) throw err;
      this.#collector.take();
      this.#error = err;
      out.error = err;
      return out;
    }
    out.signals = this.#collector.take();
    return out;
  }
}
