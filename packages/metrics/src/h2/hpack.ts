/**
 * HPACK decoding (RFC 7541): one decoder per connection direction, holding that direction's dynamic table.
 *
 * The decoder is bounded: its table never holds more than `maxTableSize` octets (as RFC 7541 §4.1 counts them),
 * a header list larger than `maxHeaderListSize` is refused, and no allocation is sized by a number read from the
 * input before that number was checked against the octets actually there. The first decoding error breaks the
 * decoder for good (its table no longer matches the encoder's): every later block is refused with reason
 * 'broken', so a caller can count those streams as unparsed instead of labelling them from a wrong table.
 */
import {
  HUFFMAN_EOS,
  HUFFMAN_PADDING_NOT_EOS,
  HUFFMAN_PADDING_TOO_LONG,
  huffmanDecode,
  huffmanDecodedBound,
} from './huffman.js';

export type HpackErrorReason =
  /** The block ends inside a representation. */
  | 'truncated'
  /** An integer longer than this decoder accepts (RFC 7541 §5.1: "excessively large"). */
  | 'integer-overflow'
  /** Index 0 (§6.1). */
  | 'index-zero'
  /** An index past the static and dynamic tables (§2.3.3). */
  | 'index-out-of-range'
  /** A Huffman string containing EOS (§5.2). */
  | 'huffman-eos'
  /** Huffman padding longer than 7 bits or not the most significant bits of EOS (§5.2). */
  | 'huffman-padding'
  /** A dynamic table size update after the first field of a block (§4.2). */
  | 'table-size-update-late'
  /** A dynamic table size update above the limit (§6.3). */
  | 'table-size-over-limit'
  /** The decoded header list is larger than maxHeaderListSize. */
  | 'header-list-too-large'
  /** The caller reported a header block of this direction lost (e.g. a dropped ring-buffer record). */
  | 'lost'
  /** An earlier error broke the decoder; `cause` is that error. */
  | 'broken';

export class HpackError extends Error {
  override readonly name = 'HpackError';
  constructor(
    readonly reason: HpackErrorReason,
    message: string,
    /** Octet offset in the block where the bad representation starts (-1 when not about a position). */
    readonly offset = -1,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Receives each decoded field, in order. `sensitive` is set for never-indexed literals (§6.2.3). */
export type FieldSink = (name: string, value: string, sensitive: boolean) => void;

export interface HpackDecoderOptions {
  /**
   * SETTINGS_HEADER_TABLE_SIZE of the decoding side (default 4096, HTTP/2's initial value): a dynamic table size
   * update above it is an error. Change it with setTableSizeLimit.
   */
  tableSizeLimit?: number;
  /** Octets the table may ever hold, whatever the settings say (default 65536): bounds the decoder's memory. */
  maxTableSize?: number;
  /** Largest header list accepted, counted as RFC 7540 §6.5.2 does (names + values + 32 per field; default 65536). */
  maxHeaderListSize?: number;
  /**
   * Names whose values are read (default: all). Another field's value is never made into a string: the sink and
   * the table get '' for it, while its length (a Huffman string's decoded one) still counts exactly in the
   * table's size and the header list's, so the table stays in step with the encoder's.
   */
  valuesOf?: ReadonlySet<string>;
  /**
   * Replay a block that refers to no dynamic entry when the same bytes were decoded before (default true): its
   * fields and the entries it inserts depend on its bytes alone (see BlockMemo). Also a block that changed nothing
   * in the table, when this decoder's next block is the same bytes and its table did not change since (see
   * LastBlock). false: decode every block.
   */
  reuse?: boolean;
}

/** Entry overhead, RFC 7541 §4.1. */
export const ENTRY_OVERHEAD = 32;
/** HTTP/2's initial SETTINGS_HEADER_TABLE_SIZE (RFC 7540 §6.5.2). */
export const DEFAULT_TABLE_SIZE = 4096;
/** Integers above this are refused: every length and index is below it, and it keeps arithmetic exact. */
const MAX_INTEGER = 0x7fffffff;

/** RFC 7541 Appendix A. */
export const STATIC_TABLE: readonly (readonly [string, string])[] = [
  [':authority', ''], [':method', 'GET'], [':method', 'POST'], [':path', '/'], [':path', '/index.html'],
  [':scheme', 'http'], [':scheme', 'https'], [':status', '200'], [':status', '204'], [':status', '206'],
  [':status', '304'], [':status', '400'], [':status', '404'], [':status', '500'], ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'], ['accept-language', ''], ['accept-ranges', ''], ['accept', ''],
  ['access-control-allow-origin', ''], ['age', ''], ['allow', ''], ['authorization', ''], ['cache-control', ''],
  ['content-disposition', ''], ['content-encoding', ''], ['content-language', ''], ['content-length', ''],
  ['content-location', ''], ['content-range', ''], ['content-type', ''], ['cookie', ''], ['date', ''], ['etag', ''],
  ['expect', ''], ['expires', ''], ['from', ''], ['host', ''], ['if-match', ''], ['if-modified-since', ''],
  ['if-none-match', ''], ['if-range', ''], ['if-unmodified-since', ''], ['last-modified', ''], ['link', ''],
  ['location', ''], ['max-forwards', ''], ['proxy-authenticate', ''], ['proxy-authorization', ''], ['range', ''],
  ['referer', ''], ['refresh', ''], ['retry-after', ''], ['server', ''], ['set-cookie', ''],
  ['strict-transport-security', ''], ['transfer-encoding', ''], ['user-agent', ''], ['vary', ''], ['via', ''],
  ['www-authenticate', ''],
];
const STATIC_LENGTH = STATIC_TABLE.length; // 61
const STATIC_NAMES = STATIC_TABLE.map((e) => e[0]);
const STATIC_VALUES = STATIC_TABLE.map((e) => e[1]);

function checkSize(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new TypeError(`HpackDecoder: ${field} must be an integer, got ${String(value)}`);
  if (value < min || value > max) throw new RangeError(`HpackDecoder: ${field} must be in [${min}, ${max}], got ${value}`);
  return value;
}

export interface HpackStats {
  /** Header blocks decoded. */
  blocks: number;
  /** Fields decoded. */
  fields: number;
  /** Indexed fields and indexed names that referred to the dynamic table. */
  dynamicHits: number;
  /** Entries added to the dynamic table. */
  inserted: number;
  /** Entries evicted (§4.3, §4.4). */
  evicted: number;
  /** Dynamic table size updates applied. */
  sizeUpdates: number;
  /** Blocks replayed from BlockMemo instead of decoded (counted in blocks and fields too). */
  reused: number;
}

export class HpackDecoder {
  readonly maxTableSize: number;
  readonly maxHeaderListSize: number;
  readonly stats: HpackStats = { blocks: 0, fields: 0, dynamicHits: 0, inserted: 0, evicted: 0, sizeUpdates: 0, reused: 0 };

  #limit: number;
  /** Current maximum size of the dynamic table (§4.2), changed by size updates. */
  #tableMax: number;
  #tableSize = 0;
  // The dynamic table as a ring: #head is the newest entry's slot, #count entries back from it. Sized for the
  // current maximum (every entry takes at least 32 octets) and grown by size updates: a decoder per connection
  // direction costs ~2 KiB at the default 4,096 octets, not what the cap would allow.
  #names: string[];
  #values: string[];
  /** Each entry's size (§4.1): a skipped value is '' in #values but counts here. */
  #sizes: number[];
  #capacity: number;
  #head = 0;
  #count = 0;
  #broken: HpackError | undefined;
  readonly #valuesOf: ReadonlySet<string> | undefined;
  readonly #reuse: boolean;
  /** Counts changes to the table (inserts, evictions, size updates, limits): equal counts, the same table. */
  #generation = 0;
  /** This decoder's last block that changed nothing in the table (see LastBlock); made on first use. */
  #last: LastBlock | undefined;

  // The block being decoded.
  #buf: Buffer = Buffer.alloc(0);
  #pos = 0;
  #end = 0;

  constructor(options: HpackDecoderOptions = {}) {
    this.maxTableSize = checkSize('maxTableSize', options.maxTableSize ?? 65536, 0, 1 << 24);
    this.maxHeaderListSize = checkSize('maxHeaderListSize', options.maxHeaderListSize ?? 65536, 0, MAX_INTEGER);
    this.#limit = checkSize('tableSizeLimit', options.tableSizeLimit ?? DEFAULT_TABLE_SIZE, 0, MAX_INTEGER);
    this.#tableMax = Math.min(DEFAULT_TABLE_SIZE, this.#limit, this.maxTableSize);
    this.#capacity = slotsFor(this.#tableMax);
    this.#names = new Array<string>(this.#capacity).fill('');
    this.#values = new Array<string>(this.#capacity).fill('');
    this.#sizes = new Array<number>(this.#capacity).fill(0);
    this.#valuesOf = options.valuesOf;
    this.#reuse = options.reuse ?? true;
  }

  /** The error that broke this decoder, if any. */
  get broken(): HpackError | undefined {
    return this.#broken;
  }
  /** Octets the dynamic table holds (§4.1). */
  get tableSize(): number {
    return this.#tableSize;
  }
  /** The dynamic table's current maximum size (§4.2). */
  get tableMaxSize(): number {
    return this.#tableMax;
  }
  /** Entries in the dynamic table. */
  get tableLength(): number {
    return this.#count;
  }
  /** Dynamic table entry i, 1 = newest (HPACK index 61 + i). */
  tableEntry(i: number): [string, string] {
    if (!Number.isInteger(i) || i < 1 || i > this.#count) throw new RangeError(`tableEntry: ${i} is not in [1, ${this.#count}]`);
    const slot = (this.#head - i + 1 + this.#capacity) % this.#capacity;
    return [this.#names[slot]!, this.#values[slot]!];
  }

  /**
   * A new SETTINGS_HEADER_TABLE_SIZE of the decoding side took effect. A lower limit shrinks the table at once
   * (evicting), as the encoder must; a higher one only allows larger size updates.
   */
  setTableSizeLimit(limit: number): void {
    checkSize('tableSizeLimit', limit, 0, MAX_INTEGER);
    this.#limit = limit;
    this.#generation++;
    if (this.#tableMax > limit) {
      this.#tableMax = limit;
      this.#evictTo(limit);
    }
  }

  /** A header block of this direction was lost: the table can no longer be trusted. */
  markLost(detail = 'a header block was lost'): void {
    this.#broken ??= new HpackError('lost', `HPACK: ${detail}; the dynamic table is out of step`);
  }

  /** Decodes one complete header block, calling sink per field. Throws HpackError; after one, the decoder is broken. */
  decode(block: Uint8Array, sink: FieldSink): void {
    this.decodeAt(Buffer.isBuffer(block) ? block : Buffer.from(block.buffer, block.byteOffset, block.byteLength), 0, block.byteLength, sink);
  }

  /**
   * decode() of the block buf[start, end), read in place (no view made): errors' offsets count from start.
   */
  decodeAt(buf: Buffer, start: number, end: number, sink: FieldSink): void {
    if (this.#broken) {
      throw new HpackError('broken', `HPACK: decoder broken by an earlier error (${this.#broken.reason}): ${this.#broken.message}`, -1, {
        cause: this.#broken,
      });
    }
    if (!(start >= 0 && start <= end && end <= buf.length)) throw new RangeError(`HpackDecoder: block [${start}, ${end}) outside the ${buf.length}-octet buffer`);
    const last = this.#last;
    if (last !== undefined && last.generation === this.#generation && last.matches(buf, start, end)) {
      try {
        this.#replayLast(last, sink);
      } catch (err) {
        this.#broken = new HpackError('broken', `HPACK: the field sink threw: ${String(err)}`, -1, { cause: err });
        throw err;
      }
      return;
    }
    this.#buf = buf;
    this.#pos = start;
    this.#end = end;
    // A sink that decodes another block (re-entering) finds the memo busy and decodes without it.
    const memo = this.#reuse && !memoBusy && end - start <= MEMO_MAX_BLOCK ? memoSlot(buf, start, end) : undefined;
    if (memo) memoBusy = true;
    try {
      if (memo?.matches(buf, start, end, this.#valuesOf, this.maxHeaderListSize)) this.#replay(memo, sink);
      else this.#decodeBlock(sink, start, memo);
    } catch (err) {
      // A half-decoded block leaves the table out of step with the encoder, whatever failed.
      if (!(err instanceof HpackError)) {
        this.#broken = new HpackError('broken', `HPACK: the field sink threw: ${String(err)}`, -1, { cause: err });
        throw err;
      }
      this.#broken = start !== 0 && err.offset >= 0 ? new HpackError(err.reason, err.message, err.offset - start, { cause: err.cause }) : err;
      throw this.#broken;
    } finally {
      this.#buf = EMPTY;
      if (memo) memoBusy = false;
    }
  }

  /** Decodes one block into [name, value] pairs. */
  decodeList(block: Uint8Array): [string, string][] {
    const out: [string, string][] = [];
    this.decode(block, (n, v) => out.push([n, v]));
    return out;
  }

  /** A memoized block: its fields and inserts again, in the order decoding made them. */
  #replay(memo: BlockMemo, sink: FieldSink): void {
    this.stats.blocks++;
    this.stats.reused++;
    const { names, values, sizes, flags } = memo;
    for (let i = 0; i < memo.count; i++) {
      const f = flags[i]!;
      if (f & MEMO_INSERT) this.#insert(names[i]!, values[i]!, sizes[i]!);
      sink(names[i]!, values[i]!, (f & MEMO_SENSITIVE) !== 0);
    }
    this.stats.fields += memo.count;
  }

  /** LastBlock's fields again: the table is as it was when they were decoded, and they change nothing in it. */
  #replayLast(last: LastBlock, sink: FieldSink): void {
    const { names, values, sensitive } = last;
    this.stats.blocks++;
    this.stats.reused++;
    this.stats.fields += last.count;
    this.stats.dynamicHits += last.dynamicHits;
    for (let i = 0; i < last.count; i++) sink(names[i]!, values[i]!, sensitive[i]!);
  }

  /** Decodes the block #buf[from, #end); `memo` (the block's slot) takes it when no field referred to the dynamic table. */
  #decodeBlock(sink: FieldSink, from: number, memo?: BlockMemo): void {
    const buf = this.#buf;
    let listSize = 0;
    let fields = 0;
    // Fields so far, into `recording` while nothing read the dynamic table or changed its size.
    let pure = memo !== undefined;
    const rec = recording;
    rec.count = 0;
    // Every field, into this decoder's LastBlock while the block may be kept there (short, table unchanged so far).
    const generation = this.#generation;
    let last: LastBlock | undefined;
    if (this.#reuse && this.#end - from <= LAST_MAX_BLOCK) {
      last = this.#last ??= new LastBlock();
      last.generation = -1;
      last.count = 0;
      last.dynamicHits = 0;
    }
    const hits = this.stats.dynamicHits;
    this.stats.blocks++;
    while (this.#pos < this.#end) {
      const start = this.#pos;
      const b = buf[start]!;
      let name: string;
      let value: string;
      let size: number;
      let sensitive = false;
      if (b & 0x80) {
        // §6.1 indexed field
        const index = this.#integer(7);
        if (index === 0) throw new HpackError('index-zero', 'HPACK: indexed field with index 0', start);
        if (index <= STATIC_LENGTH) {
          name = STATIC_NAMES[index - 1]!;
          value = STATIC_VALUES[index - 1]!;
          size = name.length + value.length + ENTRY_OVERHEAD;
        } else {
          const slot = this.#slot(index, start);
          name = this.#names[slot]!;
          value = this.#values[slot]!;
          size = this.#sizes[slot]!;
          this.stats.dynamicHits++;
          pure = false;
        }
        if (pure) rec.push(name, value, size, 0);
      } else if ((b & 0xe0) === 0x20) {
        // §6.3 dynamic table size update: only before the first field (§4.2)
        if (fields !== 0) throw new HpackError('table-size-update-late', 'HPACK: dynamic table size update after a field of the block', start);
        const size = this.#integer(5);
        if (size > this.#limit) {
          throw new HpackError('table-size-over-limit', `HPACK: dynamic table size update to ${size} above the limit ${this.#limit}`, start);
        }
        if (size > this.maxTableSize) {
          throw new HpackError('table-size-over-limit', `HPACK: dynamic table size update to ${size} above this decoder's cap ${this.maxTableSize}`, start);
        }
        this.#tableMax = size;
        this.#generation++;
        this.#evictTo(size);
        this.#grow(slotsFor(size));
        this.stats.sizeUpdates++;
        pure = false;
        continue;
      } else {
        // §6.2 literals: 01 incremental indexing (6-bit index), 0000 without indexing, 0001 never indexed (4-bit)
        const indexing = (b & 0xc0) === 0x40;
        sensitive = (b & 0xf0) === 0x10;
        const index = this.#integer(indexing ? 6 : 4);
        if (index === 0) {
          name = this.#string();
        } else if (index <= STATIC_LENGTH) {
          name = STATIC_NAMES[index - 1]!;
        } else {
          name = this.#names[this.#slot(index, start)]!;
          this.stats.dynamicHits++;
          pure = false;
        }
        if (this.#valuesOf === undefined || this.#valuesOf.has(name)) {
          value = this.#string();
          size = name.length + value.length + ENTRY_OVERHEAD;
        } else {
          value = '';
          size = name.length + this.#skipString() + ENTRY_OVERHEAD;
        }
        if (indexing) this.#insert(name, value, size);
        if (pure) rec.push(name, value, size, (indexing ? MEMO_INSERT : 0) | (sensitive ? MEMO_SENSITIVE : 0));
      }
      fields++;
      listSize += size;
      if (listSize > this.maxHeaderListSize) {
        throw new HpackError('header-list-too-large', `HPACK: header list larger than ${this.maxHeaderListSize} octets`, start);
      }
      if (last !== undefined) last.push(name, value, sensitive);
      sink(name, value, sensitive);
    }
    this.stats.fields += fields;
    if (pure) memo!.take(buf, from, this.#end, this.#valuesOf, this.maxHeaderListSize, rec);
    if (last !== undefined && this.#generation === generation) last.take(buf, from, this.#end, generation, this.stats.dynamicHits - hits);
  }

  /** Ring slot of HPACK index (> 61), or an error naming the table's length. */
  #slot(index: number, at: number): number {
    const d = index - STATIC_LENGTH;
    if (d > this.#count) {
      throw new HpackError(
        'index-out-of-range',
        `HPACK: index ${index} past the dynamic table (${this.#count} entries, indices ${STATIC_LENGTH + 1}..${STATIC_LENGTH + this.#count})`,
        at,
      );
    }
    return (this.#head - d + 1 + this.#capacity) % this.#capacity;
  }

  /** §5.1, with an N-bit prefix at the current octet. */
  #integer(prefix: number): number {
    const buf = this.#buf;
    const start = this.#pos;
    const max = (1 << prefix) - 1;
    let value = buf[this.#pos++]! & max;
    if (value < max) return value;
    let mult = 1;
    for (;;) {
      if (this.#pos >= this.#end) throw new HpackError('truncated', 'HPACK: block ends inside an integer', start);
      // Five continuation octets carry 35 bits: more is refused, not wrapped (zeros included: 0x80 0x80 …).
      if (mult > 2 ** 28) throw new HpackError('integer-overflow', 'HPACK: integer longer than 5 continuation octets', start);
      const b = buf[this.#pos++]!;
      value += (b & 0x7f) * mult;
      if (value > MAX_INTEGER) throw new HpackError('integer-overflow', `HPACK: integer above ${MAX_INTEGER}`, start);
      if ((b & 0x80) === 0) return value;
      mult *= 128;
    }
  }

  /** §5.2 string literal. */
  #string(): string {
    const n = this.#literal();
    return n < 0 ? latin1(this.#buf, this.#pos - ~n, this.#pos) : latin1(scratch, 0, n);
  }

  /** A string literal passed over: its decoded length. */
  #skipString(): number {
    const n = this.#literal();
    return n < 0 ? ~n : n;
  }

  /** Reads a string literal's octets: a raw one's length L as ~L (its octets end at #pos), a Huffman one decoded
   *  into scratch, as its decoded length. */
  #literal(): number {
    const start = this.#pos;
    if (start >= this.#end) throw new HpackError('truncated', 'HPACK: block ends before a string literal', start);
    const huffman = (this.#buf[start]! & 0x80) !== 0;
    const len = this.#integer(7);
    const from = this.#pos;
    if (len > this.#end - from) {
      throw new HpackError('truncated', `HPACK: string literal of ${len} octets with ${this.#end - from} left in the block`, start);
    }
    this.#pos = from + len;
    if (!huffman) return ~len;
    const bound = huffmanDecodedBound(len);
    if (scratch.length < bound) scratch = Buffer.allocUnsafe(Math.max(bound, scratch.length * 2));
    const n = huffmanDecode(this.#buf, from, from + len, scratch, 0);
    if (n >= 0) return n;
    if (n === HUFFMAN_EOS) throw new HpackError('huffman-eos', 'HPACK: Huffman string contains EOS', start);
    const why = n === HUFFMAN_PADDING_TOO_LONG ? 'longer than 7 bits' : n === HUFFMAN_PADDING_NOT_EOS ? 'not all ones' : 'invalid';
    throw new HpackError('huffman-padding', `HPACK: Huffman string padding ${why}`, start);
  }

  /** §4.4: evict from the oldest end until the entry fits; an entry larger than the table empties it. */
  #insert(name: string, value: string, size: number): void {
    this.#generation++;
    if (size > this.#tableMax) {
      this.#evictTo(0);
      return;
    }
    this.#evictTo(this.#tableMax - size);
    this.#head = (this.#head + 1) % this.#capacity;
    this.#names[this.#head] = name;
    this.#values[this.#head] = value;
    this.#sizes[this.#head] = size;
    this.#count++;
    this.#tableSize += size;
    this.stats.inserted++;
  }

  /** Re-lays the ring into `slots` slots, oldest first, when it has fewer. */
  #grow(slots: number): void {
    if (slots <= this.#capacity) return;
    const names = new Array<string>(slots).fill('');
    const values = new Array<string>(slots).fill('');
    const sizes = new Array<number>(slots).fill(0);
    for (let i = 0; i < this.#count; i++) {
      const slot = (this.#head - this.#count + 1 + i + this.#capacity) % this.#capacity;
      names[i] = this.#names[slot]!;
      values[i] = this.#values[slot]!;
      sizes[i] = this.#sizes[slot]!;
    }
    this.#names = names;
    this.#values = values;
    this.#sizes = sizes;
    this.#capacity = slots;
    this.#head = this.#count - 1 < 0 ? slots - 1 : this.#count - 1;
  }

  #evictTo(size: number): void {
    while (this.#tableSize > size) {
      const slot = (this.#head - this.#count + 1 + this.#capacity) % this.#capacity;
      this.#tableSize -= this.#sizes[slot]!;
      this.#names[slot] = '';
      this.#values[slot] = '';
      this.#count--;
      this.stats.evicted++;
      this.#generation++;
    }
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * A block none of whose fields refers to the dynamic table (no indexed field or literal name above 61, no size
 * update) decodes to the same fields, inserts the same entries and passes the same header-list bound whatever
 * the table holds: its bytes decide all of it, given the decoder's valuesOf and maxHeaderListSize. Such a block is
 * kept, and the same bytes later are replayed (each insert, evicting as it must, then the field to the sink, as
 * decoding does) instead of parsed and Huffman-decoded again. Encoders that never refer to their table repeat
 * most of each response: nginx's differs from the last only when the second of its date changes. Blocks that
 * failed are never kept. Slots are shared by all decoders (a few KiB whatever the connections).
 */
class BlockMemo {
  bytes: Buffer = Buffer.alloc(0);
  length = -1;
  valuesOf: ReadonlySet<string> | undefined;
  maxHeaderListSize = 0;
  count = 0;
  names: string[] = [];
  values: string[] = [];
  sizes: number[] = [];
  flags: number[] = [];

  matches(buf: Buffer, start: number, end: number, valuesOf: ReadonlySet<string> | undefined, maxHeaderListSize: number): boolean {
    if (end - start !== this.length || valuesOf !== this.valuesOf || maxHeaderListSize !== this.maxHeaderListSize) return false;
    const b = this.bytes;
    // From the end: what changes between an encoder's blocks (a date) is seldom at the start.
    for (let i = end - 1, k = this.length - 1; k >= 0; i--, k--) if (buf[i] !== b[k]) return false;
    return true;
  }

  take(buf: Buffer, start: number, end: number, valuesOf: ReadonlySet<string> | undefined, maxHeaderListSize: number, rec: Recording): void {
    const n = end - start;
    if (this.bytes.length < n) this.bytes = Buffer.allocUnsafe(MEMO_MAX_BLOCK);
    buf.copy(this.bytes, 0, start, end);
    this.length = n;
    this.valuesOf = valuesOf;
    this.maxHeaderListSize = maxHeaderListSize;
    this.count = rec.count;
    for (let i = 0; i < rec.count; i++) {
      this.names[i] = rec.names[i]!;
      this.values[i] = rec.values[i]!;
      this.sizes[i] = rec.sizes[i]!;
      this.flags[i] = rec.flags[i]!;
    }
  }
}
/**
 * A decoder's last block that changed nothing in its table (no insert, eviction or size update): decoded again
 * against the same table (no change since, by the decoder's generation count), the same bytes give the same
 * fields, the same references into the table and the same header-list size, so they are replayed. Such blocks
 * are what an encoder that indexes its repeated fields sends: h2load's requests after the first are six indexed
 * fields, three of them dynamic entries, which BlockMemo cannot keep (they read the table). One per decoder: 16
 * connections sending the same bytes each have theirs, where one shared slot would be taken in turn.
 */
class LastBlock {
  bytes = new Uint8Array(0);
  length = -1;
  /** The decoder's generation the fields hold for; -1 while none. */
  generation = -1;
  count = 0;
  dynamicHits = 0;
  names: string[] = [];
  values: string[] = [];
  sensitive: boolean[] = [];

  push(name: string, value: string, sensitive: boolean): void {
    const i = this.count++;
    this.names[i] = name;
    this.values[i] = value;
    this.sensitive[i] = sensitive;
  }

  matches(buf: Buffer, start: number, end: number): boolean {
    if (end - start !== this.length) return false;
    const b = this.bytes;
    for (let i = start, k = 0; i < end; i++, k++) if (buf[i] !== b[k]) return false;
    return true;
  }

  take(buf: Buffer, start: number, end: number, generation: number, dynamicHits: number): void {
    const n = end - start;
    if (this.bytes.length < n) this.bytes = new Uint8Array(LAST_MAX_BLOCK);
    buf.copy(this.bytes, 0, start, end);
    this.length = n;
    this.generation = generation;
    this.dynamicHits = dynamicHits;
  }
}
/** Blocks up to this many octets are kept as a decoder's LastBlock (h2load's repeated request: 6). */
const LAST_MAX_BLOCK = 64;

const MEMO_INSERT = 1;
const MEMO_SENSITIVE = 2;
/** Blocks up to this many octets are kept (a typical response's is 20–80). */
const MEMO_MAX_BLOCK = 256;
const MEMO_SLOTS = 16;
const memos = Array.from({ length: MEMO_SLOTS }, () => new BlockMemo());
/** A block's slot, from its length and its first and last octets (a date in the middle moves neither). */
const memoSlot = (buf: Buffer, start: number, end: number): BlockMemo | undefined =>
  end === start ? undefined : memos[((end - start) * 7 + buf[start]! + buf[end - 1]! * 3) & (MEMO_SLOTS - 1)];

/** The fields of the block being decoded, while it may be kept: one for all decoders (see memoBusy). */
class Recording {
  count = 0;
  names: string[] = [];
  values: string[] = [];
  sizes: number[] = [];
  flags: number[] = [];
  push(name: string, value: string, size: number, flags: number): void {
    const i = this.count++;
    this.names[i] = name;
    this.values[i] = value;
    this.sizes[i] = size;
    this.flags[i] = flags;
  }
}
const recording = new Recording();
/** A decode is using the memo slots and `recording`. */
let memoBusy = false;

/** Huffman output, shared by all decoders: each string leaves it before anything else can run. */
let scratch = Buffer.allocUnsafe(256);
/** Ring slots a table of `size` octets can need. */
const slotsFor = (size: number) => Math.max(1, Math.floor(size / ENTRY_OVERHEAD));

// Header octets become latin1 strings (one char per octet: lengths stay octet counts). Strings are the decoder's
// main cost: Buffer#latin1Slice (what toString('latin1') calls after argument handling) is about twice as fast as
// toString, and String.fromCharCode about four times faster again for the short values common in headers.
type Latin1Slicer = { latin1Slice(start: number, end: number): string };
const hasLatin1Slice = typeof (Buffer.prototype as unknown as Partial<Latin1Slicer>).latin1Slice === 'function';

function latin1(buf: Buffer, start: number, end: number): string {
  switch (end - start) {
    case 0:
      return '';
    case 1:
      return String.fromCharCode(buf[start]!);
    case 2:
      return String.fromCharCode(buf[start]!, buf[start + 1]!);
    case 3:
      return String.fromCharCode(buf[start]!, buf[start + 1]!, buf[start + 2]!);
    case 4:
      return String.fromCharCode(buf[start]!, buf[start + 1]!, buf[start + 2]!, buf[start + 3]!);
  }
  return hasLatin1Slice ? (buf as unknown as Latin1Slicer).latin1Slice(start, end) : buf.toString('latin1', start, end);
}
