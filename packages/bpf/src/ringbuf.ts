/** Ring buffer consumption wired into the event loop: records arrive in batches through a callback, read when
 *  libbpf's epoll fd is readable. Nothing blocks JS and nothing spins. */
import type { Codec } from './codec.js';
import type { MapBase } from './map.js';
import { native, type NativeRingBuffer } from './native.js';
import { Handle, type Owner } from './owner.js';

export interface RingBufferOptions {
  /** Most records per callback; default 4096. */
  maxBatch?: number;
  /** Keep the event loop alive while open (like a server); default true. */
  ref?: boolean;
}

export class RingBuffer<T = Buffer> extends Handle<NativeRingBuffer> {
  readonly name: string;

  /** @internal use BpfObject.ringBuffer() or RingBuffer.open(). */
  constructor(
    map: MapBase<unknown, unknown, unknown>,
    onRecords: (records: T[]) => void,
    decode: ((b: Buffer) => T) | undefined,
    opts: RingBufferOptions,
    owner?: Owner,
  ) {
    super(RingBuffer.openNative(map, onRecords, decode, opts));
    this.name = map.name;
    if (opts.ref === false) this.handle.unref();
    this.adoptBy(owner);
  }

  /**
   * Consumes a ringbuf map. With a codec, records are decoded (a record shorter than the codec is an error);
   * without, each record is a Buffer.
   */
  static open<T = Buffer>(
    map: MapBase<unknown, unknown, unknown>,
    onRecords: (records: T[]) => void,
    opts: RingBufferOptions & { codec?: Codec<T> } = {},
  ): RingBuffer<T> {
    const codec = opts.codec;
    const decode = codec
      ? (b: Buffer) => {
          if (b.length < codec.size) throw new RangeError(`ring buffer ${map.name}: record of ${b.length} bytes, ${codec.name} needs ${codec.size}`);
          return codec.decode(b, 0);
        }
      : undefined;
    return new RingBuffer<T>(map, onRecords, decode, opts);
  }

  private static openNative<T>(
    map: MapBase<unknown, unknown, unknown>,
    onRecords: (records: T[]) => void,
    decode: ((b: Buffer) => T) | undefined,
    opts: RingBufferOptions,
  ): NativeRingBuffer {
    if (map.type !== 'ringbuf') throw new TypeError(`map ${map.name} is ${map.type}, not a ringbuf`);
    if (typeof onRecords !== 'function') throw new TypeError('onRecords must be a function');
    const maxBatch = opts.maxBatch ?? 4096;
    if (!Number.isInteger(maxBatch) || maxBatch < 1 || maxBatch > 1 << 20) throw new RangeError(`maxBatch must be in [1, 2^20], got ${maxBatch}`);
    const cb = decode ? (batch: Buffer[]) => onRecords(batch.map(decode)) : (onRecords as unknown as (b: Buffer[]) => void);
    return new native.RingBufferHandle(map.nativeHandle(), cb, maxBatch);
  }

  /** Delivers what is in the ring now, synchronously; returns the number of records. */
  consume(): number {
    this.check();
    return this.handle.consume();
  }

  stats(): { records: number; batches: number } {
    return this.handle.stats();
  }

  ref(): void {
    this.handle.ref();
  }

  unref(): void {
    this.handle.unref();
  }

  protected describe(): string {
    return `ring buffer ${this.name}`;
  }
}
