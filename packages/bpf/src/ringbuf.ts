/** Ring buffer consumption wired into the event loop: records arrive in batches through a callback, read when
 *  libbpf's epoll fd is readable. Nothing blocks JS and nothing spins. */
import type { Codec } from './codec.js';
import { assertOpen } from './errors.js';
import type { MapBase } from './map.js';
import { native, type NativeRingBuffer } from './native.js';
import type { Owner } from './owner.js';

export interface RingBufferOptions {
  /** Most records per callback; default 4096. */
  maxBatch?: number;
  /** Keep the event loop alive while open (like a server); default true. */
  ref?: boolean;
}

export class RingBuffer<T = Buffer> implements Disposable {
  readonly name: string;
  private readonly handle: NativeRingBuffer;
  private readonly owner: Owner | undefined;
  private closed = false;

  /** @internal use BpfObject.ringBuffer() or RingBuffer.open(). */
  constructor(
    map: MapBase<unknown, unknown, unknown>,
    onRecords: (records: T[]) => void,
    decode: ((b: Buffer) => T) | undefined,
    opts: RingBufferOptions,
    owner?: Owner,
  ) {
    if (map.type !== 'ringbuf') throw new TypeError(`map ${map.name} is ${map.type}, not a ringbuf`);
    if (typeof onRecords !== 'function') throw new TypeError('onRecords must be a function');
    const maxBatch = opts.maxBatch ?? 4096;
    if (!Number.isInteger(maxBatch) || maxBatch < 1 || maxBatch > 1 << 20) throw new RangeError(`maxBatch must be in [1, 2^20], got ${maxBatch}`);
    this.name = map.name;
    const cb = decode ? (batch: Buffer[]) => onRecords(batch.map(decode)) : (onRecords as unknown as (b: Buffer[]) => void);
    this.handle = new native.RingBufferHandle(map.nativeHandle(), cb, maxBatch);
    if (opts.ref === false) this.handle.unref();
    this.owner = owner;
    owner?.adopt(this);
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

  /** Delivers what is in the ring now, synchronously; returns the number of records. */
  consume(): number {
    assertOpen(this.closed, `ring buffer ${this.name}`);
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

  get isClosed(): boolean {
    return this.closed;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.handle.close();
    this.owner?.release(this);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
