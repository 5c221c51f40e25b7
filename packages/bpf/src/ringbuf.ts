/** Ring buffer consumption wired into the event loop: records arrive in batches through a callback, read when
 *  libbpf's epoll fd is readable. Nothing blocks JS and nothing spins. With `thread`, a native thread empties the
 *  kernel's ring as records arrive, into a bounded queue the event loop takes batches from: a busy or starved
 *  event loop then costs user-space memory (up to queueBytes), not lost records. */
import type { Codec } from './codec.js';
import type { MapBase } from './map.js';
import { native, type NativeRingBuffer } from './native.js';
import { Handle, type Owner } from './owner.js';

export interface RingBufferOptions {
  /** Most records per callback; default 4096. */
  maxBatch?: number;
  /** Keep the event loop alive while open (like a server); default true. */
  ref?: boolean;
  /** Drain the kernel's ring from a native thread into a queue of up to queueBytes bytes of records (default
   *  64 MiB). A record the full queue has no room for is dropped and counted (stats().dropped), as the kernel
   *  drops a record its ring has no room for. */
  thread?: {
    queueBytes?: number;
    /** The thread's nice value, -20 to 19 (default: the process's). A negative one (needs CAP_SYS_NICE, else
     *  ignored) lets the thread run soon after records arrive on a loaded machine: the kernel's ring only has
     *  to hold what arrives meanwhile. */
    nice?: number;
    /** Also drain every pollMs milliseconds (1 to 10,000), woken or not: for producers that submit records
     *  without waking the consumer (BPF_RB_NO_WAKEUP) and wake it only once enough have piled up, so that a
     *  record costs no wake-up of its own. Default: only when woken. */
    pollMs?: number;
    /** Hand over records packed (one Buffer per callback, not one per record): the callback's array holds one
     *  Buffer in which each record follows its length (u32, little-endian). Walk it with packedRecords(). For
     *  consumers of many small records, where a Buffer each costs more than reading them; not with a codec.
     *  queueBytes then counts each record's 4-byte length too. */
    packed?: boolean;
    /** With packed: each batch's Buffer is lent, a view of memory kept from one batch to the next (up to 4 MiB;
     *  a larger batch gets its own), so it is valid only during the callback: copy what is kept. A new Buffer per
     *  batch costs the event loop an allocation, page faults and malloc's heap growing and shrinking each time. */
    reuse?: boolean;
  };
}

export interface RingBufferStats {
  /** Records delivered to the callback. */
  records: number;
  /** Callback calls. */
  batches: number;
  /** With a thread: records the full queue had no room for. */
  dropped?: number;
  /** With a thread: bytes of the records waiting in the queue. */
  queuedBytes?: number;
}

/**
 * The records of a packed batch (thread.packed), in order: calls `each(buf, start, end)` per record, the record
 * being buf[start, end). Throws on a batch whose lengths do not add up.
 */
export function packedRecords(buf: Buffer, each: (buf: Buffer, start: number, end: number) => void): void {
  let at = 0;
  while (at < buf.length) {
    if (at + 4 > buf.length) throw new RangeError(`packed ring buffer batch: ${buf.length - at} octets left, short of a record length`);
    const start = at + 4;
    const end = start + buf.readUInt32LE(at);
    if (end > buf.length) throw new RangeError(`packed ring buffer batch: record of ${end - start} octets with ${buf.length - start} left`);
    each(buf, start, end);
    at = end;
  }
}

/** The thread's queue when `thread` does not size it: 16x the largest ring a family allocates today. */
export const DEFAULT_QUEUE_BYTES = 64 << 20;
const MIN_QUEUE_BYTES = 4096;
const MAX_QUEUE_BYTES = 2 ** 36;

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
    let queueBytes = 0;
    let nice = 0;
    let pollMs = 0;
    let packed = false;
    let reuse = false;
    if (opts.thread !== undefined) {
      if (typeof opts.thread !== 'object' || opts.thread === null) throw new TypeError(`ring buffer ${map.name}: thread must be an object, got ${String(opts.thread)}`);
      queueBytes = opts.thread.queueBytes ?? DEFAULT_QUEUE_BYTES;
      if (!Number.isInteger(queueBytes) || queueBytes < MIN_QUEUE_BYTES || queueBytes > MAX_QUEUE_BYTES)
        throw new RangeError(`ring buffer ${map.name}: thread.queueBytes must be an integer in [${MIN_QUEUE_BYTES}, 2^36], got ${queueBytes}`);
      nice = opts.thread.nice ?? 0;
      if (!Number.isInteger(nice) || nice < -20 || nice > 19) throw new RangeError(`ring buffer ${map.name}: thread.nice must be an integer in [-20, 19], got ${nice}`);
      pollMs = opts.thread.pollMs ?? 0;
      if (!Number.isInteger(pollMs) || pollMs < 0 || pollMs > 10_000) throw new RangeError(`ring buffer ${map.name}: thread.pollMs must be an integer in [0, 10000] (0: only when woken), got ${pollMs}`);
      packed = opts.thread.packed ?? false;
      if (typeof packed !== 'boolean') throw new TypeError(`ring buffer ${map.name}: thread.packed must be a boolean, got ${String(packed)}`);
      if (packed && decode) throw new TypeError(`ring buffer ${map.name}: thread.packed hands over raw records; it does not take a codec`);
      reuse = opts.thread.reuse ?? false;
      if (typeof reuse !== 'boolean') throw new TypeError(`ring buffer ${map.name}: thread.reuse must be a boolean, got ${String(reuse)}`);
      if (reuse && !packed) throw new TypeError(`ring buffer ${map.name}: thread.reuse lends the packed batch; it needs thread.packed`);
    }
    const cb = decode ? (batch: Buffer[]) => onRecords(batch.map(decode)) : (onRecords as unknown as (b: Buffer[]) => void);
    return new native.RingBufferHandle(map.nativeHandle(), cb, maxBatch, queueBytes, nice, pollMs, packed, reuse);
  }

  /** Delivers what is in the ring now, synchronously; returns the number of records. */
  consume(): number {
    this.check();
    return this.handle.consume();
  }

  stats(): RingBufferStats {
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
