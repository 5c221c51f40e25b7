/** Typed map handles. A map is opened with a key and a value codec, and their sizes are checked against the
 *  kernel's right then, so a wrong struct fails at open, not at the first lookup. */
import type { Codec } from './codec.js';
import { type MapType, mapTypes, nameOf, perCpuMapTypes, type UpdateFlag, updateFlags } from './constants.js';
import { BpfError } from './errors.js';
import { native, type NativeMap } from './native.js';
import { Handle, type Owner } from './owner.js';

export interface MapCodecs<K, V> {
  key: Codec<K>;
  value: Codec<V>;
}

export interface MapInfo {
  name: string;
  type: MapType | `unknown(${number})`;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

export interface CreateMapOptions {
  type: MapType;
  maxEntries: number;
  flags?: number;
  name?: string;
  /** For array_of_maps / hash_of_maps: a map of the inner type. */
  innerMap?: MapBase<unknown, unknown, unknown>;
}

let possibleCpus: number | undefined;
/** The number of possible CPUs: the length of every per-CPU value. */
export function numPossibleCpus(): number {
  return (possibleCpus ??= native.numPossibleCpus());
}

function flagValue(flag: UpdateFlag | number): number {
  if (typeof flag === 'number') {
    if (!Number.isInteger(flag) || flag < 0 || flag > 0xffffffff) throw new RangeError(`update flags ${flag} out of range`);
    return flag;
  }
  const v = updateFlags[flag];
  if (v === undefined) throw new RangeError(`update flag must be 'any', 'noexist' or 'exist', got ${JSON.stringify(flag)}`);
  return v;
}

function checkCount(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 1 || n > 0xffffffff) throw new RangeError(`${what} must be a positive integer, got ${n}`);
}

/**
 * What maps share. `VIn` is what set() takes, `VOut` what get() returns: the value itself for ordinary maps,
 * one value per possible CPU for per-CPU maps.
 */
export abstract class MapBase<K, VIn, VOut> extends Handle<NativeMap> {
  readonly name: string;
  readonly type: MapType | `unknown(${number})`;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  protected readonly key: Codec<K>;
  protected readonly value: Codec<any>;
  /** Bytes of one value as the syscall moves it (all CPUs' slots for per-CPU maps). */
  protected readonly valueBufSize: number;
  private readonly keyBuf: Buffer;
  private readonly valBuf: Buffer;
  private batchScratch: { n: number; keys: Buffer; values: Buffer } | undefined;
  private countScratch: { keys: Buffer; values: Buffer } | undefined;
  private readonly id: number;

  protected constructor(handle: NativeMap, codecs: MapCodecs<K, any>, perCpu: boolean, owner?: Owner) {
    super(handle);
    const info = handle.info();
    const type = nameOf(mapTypes, info.type);
    const isPerCpu = perCpuMapTypes.has(type as MapType);
    const fail = (e: Error) => {
      handle.close();
      throw e;
    };
    if (isPerCpu !== perCpu) {
      fail(new TypeError(`map ${info.name} is of type ${type}: open it with ${isPerCpu ? 'perCpuMap()' : 'map()'}`));
    }
    if (codecs.key.size !== info.keySize) {
      fail(new TypeError(`map ${info.name}: key codec ${codecs.key.name} is ${codecs.key.size} bytes, the kernel's key is ${info.keySize}`));
    }
    if (codecs.value.size !== info.valueSize) {
      fail(new TypeError(`map ${info.name}: value codec ${codecs.value.name} is ${codecs.value.size} bytes, the kernel's value is ${info.valueSize}`));
    }
    this.name = info.name;
    this.type = type;
    this.keySize = info.keySize;
    this.valueSize = info.valueSize;
    this.maxEntries = info.maxEntries;
    this.id = info.id;
    this.key = codecs.key;
    this.value = codecs.value;
    this.valueBufSize = perCpu ? Math.ceil(info.valueSize / 8) * 8 * numPossibleCpus() : info.valueSize;
    this.keyBuf = Buffer.alloc(info.keySize);
    this.valBuf = Buffer.alloc(this.valueBufSize);
    handle.bindScratch(this.keyBuf, this.valBuf);
    this.adoptBy(owner);
  }

  /** Encode/decode one value at `offset` (batches lay values side by side, valueBufSize apart). */
  protected abstract encodeValue(v: VIn, buf: Buffer, offset: number): void;
  protected abstract decodeValue(buf: Buffer, offset: number): VOut;

  /** The kernel's view of the map (type, sizes, id). */
  info(): MapInfo {
    this.check();
    return { ...this.handle.info(), type: this.type };
  }

  get fd(): number {
    this.check();
    return this.handle.fd;
  }

  /** The value for key, or undefined when the key is absent. */
  get(key: K): VOut | undefined {
    this.check();
    this.key.encode(key, this.keyBuf, 0);
    if (!this.handle.lookupScratch()) return undefined;
    return this.decodeValue(this.valBuf, 0);
  }

  has(key: K): boolean {
    return this.get(key) !== undefined;
  }

  /** Writes key → value. `flag`: 'any' (default), 'noexist' (fails with EEXIST if present), 'exist'. */
  set(key: K, value: VIn, flag: UpdateFlag | number = 'any'): void {
    this.write(key, flag, (buf) => this.encodeValue(value, buf, 0));
  }

  protected write(key: K, flag: UpdateFlag | number, fill: (valueBuf: Buffer) => void): void {
    this.check();
    const f = flagValue(flag);
    this.key.encode(key, this.keyBuf, 0);
    // Slots and padding not written by fill() must not carry bytes of an earlier call.
    if (this.valueBufSize !== this.valueSize) this.valBuf.fill(0);
    fill(this.valBuf);
    this.handle.updateScratch(f);
  }

  /** Removes key; false when it was absent. */
  delete(key: K): boolean {
    this.check();
    this.key.encode(key, this.keyBuf, 0);
    return this.handle.deleteScratch();
  }

  /** Looks up and removes key in one step (hash maps since 5.14; queues and stacks take no key). */
  take(key: K): VOut | undefined {
    this.check();
    this.key.encode(key, this.keyBuf, 0);
    if (!this.handle.lookupAndDelete(this.keySize ? this.keyBuf : null, this.valBuf)) return undefined;
    return this.decodeValue(this.valBuf, 0);
  }

  /** Keys in the kernel's iteration order. Entries added or removed meanwhile may or may not be seen. */
  *keys(): IterableIterator<K> {
    this.check();
    let prev: Buffer | null = null;
    const cur = Buffer.alloc(this.keySize);
    const next = Buffer.alloc(this.keySize);
    while (this.handle.nextKey(prev, next)) {
      next.copy(cur);
      prev = cur;
      yield this.key.decode(cur, 0);
    }
  }

  *entries(): IterableIterator<[K, VOut]> {
    for (const k of this.keys()) {
      const v = this.get(k);
      // Deleted between the key walk and the lookup: skip it rather than report a stale key.
      if (v !== undefined) yield [k, v];
    }
  }

  *values(): IterableIterator<VOut> {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator](): IterableIterator<[K, VOut]> {
    return this.entries();
  }

  /** Every entry through BPF_MAP_LOOKUP_BATCH, `batchSize` per syscall; with `max`, the first `max` the kernel
   *  returns (for an array, indices 0 to max - 1). */
  getBatch(opts: { batchSize?: number; andDelete?: boolean; max?: number } = {}): [K, VOut][] {
    this.check();
    const n = opts.batchSize ?? 256;
    checkCount(n, 'batchSize');
    if (opts.max !== undefined) checkCount(opts.max, 'max');
    // Decoding copies out of the buffers, so one pair per map serves every call (a scrape loop reads often).
    if (!this.batchScratch || this.batchScratch.n !== n) {
      this.batchScratch = { n, keys: Buffer.alloc(n * this.keySize), values: Buffer.alloc(n * this.valueBufSize) };
    }
    const { keys, values } = this.batchScratch;
    // The resume token is a key for arrays and a bucket index for hashes: room for either.
    const tokenSize = Math.max(this.keySize, 8);
    let inTok: Buffer | null = null;
    let outTok: Buffer = Buffer.alloc(tokenSize);
    const out: [K, VOut][] = [];
    for (;;) {
      const [count, done] = this.handle.lookupBatch(inTok, outTok, keys, values, n, 0, opts.andDelete ?? false);
      for (let i = 0; i < count; i++) {
        out.push([
          this.key.decode(keys, i * this.keySize),
          this.decodeValue(values, i * this.valueBufSize),
        ]);
      }
      if (opts.max !== undefined && out.length >= opts.max) return out.slice(0, opts.max);
      if (done) return out;
      const t = inTok ?? Buffer.alloc(tokenSize);
      inTok = outTok;
      outTok = t;
    }
  }

  /** Writes entries through BPF_MAP_UPDATE_BATCH; returns how many were written. */
  setBatch(entries: Iterable<readonly [K, VIn]>, flag: UpdateFlag | number = 'any'): number {
    this.check();
    const f = flagValue(flag);
    const list = Array.from(entries);
    if (list.length === 0) return 0;
    const keys = Buffer.alloc(list.length * this.keySize);
    const values = Buffer.alloc(list.length * this.valueBufSize);
    list.forEach(([k, v], i) => {
      this.key.encode(k, keys, i * this.keySize);
      this.encodeValue(v, values, i * this.valueBufSize);
    });
    return this.handle.updateBatch(keys, values, list.length, f);
  }

  /**
   * setBatch of entries encoded already (by the map's codecs' layout): `count` keys of keySize bytes side by side
   * in `keys`, their values valueBufSize bytes apart in `values`. For a writer of 100,000 entries at once, which
   * encodes them as it makes them rather than making an object each.
   */
  setBatchEncoded(keys: Buffer, values: Buffer, count: number, flag: UpdateFlag | number = 'any'): number {
    this.check();
    if (!Number.isInteger(count) || count < 0) throw new RangeError(`count must be a non-negative integer, got ${count}`);
    if (keys.length < count * this.keySize || values.length < count * this.valueBufSize) {
      throw new RangeError(`${count} entries need ${count * this.keySize} bytes of keys and ${count * this.valueBufSize} of values, got ${keys.length} and ${values.length}`);
    }
    if (count === 0) return 0;
    return this.handle.updateBatch(keys, values, count, flagValue(flag));
  }

  /** Deletes keys through BPF_MAP_DELETE_BATCH; returns how many were deleted. A missing key stops the batch
   *  with ENOENT (the error's subject says after how many). */
  deleteBatch(keys: Iterable<K>): number {
    this.check();
    const list = Array.from(keys);
    if (list.length === 0) return 0;
    const buf = Buffer.alloc(list.length * this.keySize);
    list.forEach((k, i) => this.key.encode(k, buf, i * this.keySize));
    return this.handle.deleteBatch(buf, list.length);
  }

  /** How many keys the map holds now: for hashes and arrays through BPF_MAP_LOOKUP_BATCH, 4,096 keys a syscall
   *  (a scrape of a 100,000-entry table is ~25 syscalls, not 100,000), else a walk over the keys in native code
   *  (O(entries) syscalls; a key deleted during the walk can make it count some keys twice). At most maxEntries. */
  count(): number {
    this.check();
    if (!batchTypes.has(this.type)) return this.handle.countKeys();
    const n = Math.min(4096, this.maxEntries);
    if (!this.countScratch || this.countScratch.keys.length !== n * this.keySize) {
      this.countScratch = { keys: Buffer.alloc(n * this.keySize), values: Buffer.alloc(n * this.valueBufSize) };
    }
    const { keys, values } = this.countScratch;
    const tokenSize = Math.max(this.keySize, 8);
    let inTok: Buffer | null = null;
    let outTok: Buffer = Buffer.alloc(tokenSize);
    let total = 0;
    for (;;) {
      let count: number, done: boolean;
      try {
        [count, done] = this.handle.lookupBatch(inTok, outTok, keys, values, n, 0, false);
      } catch (err) {
        // A kernel without batch lookups for this type: walk the keys.
        if (inTok === null && err instanceof BpfError && ['EINVAL', 'ENOTSUP', 'EOPNOTSUPP', 'ENOTSUPP'].includes(err.code)) return this.handle.countKeys();
        throw err;
      }
      total += count;
      if (done || total >= this.maxEntries) return Math.min(total, this.maxEntries);
      const t = inTok ?? Buffer.alloc(tokenSize);
      inTok = outTok;
      outTok = t;
    }
  }

  /** Deletes every key; returns how many. */
  clear(): number {
    let n = 0;
    for (const k of Array.from(this.keys())) if (this.delete(k)) n++;
    return n;
  }

  /** Pins the map at a bpffs path, so it outlives this process. */
  pin(path: string): void {
    this.check();
    this.handle.pin(path);
  }

  /** Makes the map read-only for user space (BPF programs can still write it). */
  freeze(): void {
    this.check();
    this.handle.freeze();
  }

  protected describe(): string {
    return `map ${this.name}`;
  }

  override toString(): string {
    return `${this.constructor.name}(${this.name}, ${this.type}, id ${this.id})`;
  }
}

/** A map with one value per key: hash, LRU hash, array, LPM trie, sockmap/sockhash (value: socket fd in,
 *  socket cookie out), sk_storage (key: socket fd), queue, stack, … */
export class BpfMap<K, V> extends MapBase<K, V, V> {
  /** @internal use BpfObject.map(), BpfMap.create() or BpfMap.openPinned(). */
  constructor(handle: NativeMap, codecs: MapCodecs<K, V>, owner?: Owner) {
    super(handle, codecs, false, owner);
  }

  /** Creates a map outside any object (BPF_MAP_CREATE); key and value sizes come from the codecs. */
  static create<K, V>(opts: CreateMapOptions, codecs: MapCodecs<K, V>): BpfMap<K, V> {
    return new BpfMap(createNative(opts, codecs), codecs);
  }

  static openPinned<K, V>(path: string, codecs: MapCodecs<K, V>): BpfMap<K, V> {
    if (typeof path !== 'string') throw new TypeError('path must be a string');
    return new BpfMap(native.MapHandle.openPinned(path), codecs);
  }

  static openById<K, V>(id: number, codecs: MapCodecs<K, V>): BpfMap<K, V> {
    return new BpfMap(native.MapHandle.openById(id), codecs);
  }

  protected encodeValue(v: V, buf: Buffer, offset: number): void {
    this.value.encode(v, buf, offset);
  }

  protected decodeValue(buf: Buffer, offset: number): V {
    return this.value.decode(buf, offset);
  }
}

/** A per-CPU map: get() returns one value per possible CPU; set() writes one value to every CPU's slot and
 *  setPerCpu() one value per CPU. */
export class PerCpuMap<K, V> extends MapBase<K, V, V[]> {
  private readonly slot: number;

  /** @internal use BpfObject.perCpuMap(), PerCpuMap.create() or PerCpuMap.openPinned(). */
  constructor(handle: NativeMap, codecs: MapCodecs<K, V>, owner?: Owner) {
    super(handle, codecs, true, owner);
    this.slot = Math.ceil(this.valueSize / 8) * 8;
  }

  static create<K, V>(opts: CreateMapOptions, codecs: MapCodecs<K, V>): PerCpuMap<K, V> {
    return new PerCpuMap(createNative(opts, codecs), codecs);
  }

  static openPinned<K, V>(path: string, codecs: MapCodecs<K, V>): PerCpuMap<K, V> {
    if (typeof path !== 'string') throw new TypeError('path must be a string');
    return new PerCpuMap(native.MapHandle.openPinned(path), codecs);
  }

  /** Writes one value per possible CPU (the array's length must be numPossibleCpus()). */
  setPerCpu(key: K, values: readonly V[], flag: UpdateFlag | number = 'any'): void {
    const n = numPossibleCpus();
    if (!Array.isArray(values)) throw new TypeError(`map ${this.name}: setPerCpu takes an array of values`);
    if (values.length !== n) throw new RangeError(`map ${this.name}: ${values.length} per-CPU values given, ${n} CPUs are possible`);
    this.write(key, flag, (buf) => values.forEach((x, i) => this.value.encode(x, buf, i * this.slot)));
  }

  /** The values of all CPUs combined by `add` (e.g. summed counters), or undefined when the key is absent. */
  getReduced(key: K, add: (a: V, b: V) => V): V | undefined {
    const all = this.get(key);
    return all?.reduce(add);
  }

  protected encodeValue(v: V, buf: Buffer, offset: number): void {
    for (let i = 0; i < numPossibleCpus(); i++) this.value.encode(v, buf, offset + i * this.slot);
  }

  protected decodeValue(buf: Buffer, offset: number): V[] {
    const n = numPossibleCpus();
    const out = new Array<V>(n);
    for (let i = 0; i < n; i++) out[i] = this.value.decode(buf, offset + i * this.slot);
    return out;
  }
}

/** Map types whose elements BPF_MAP_LOOKUP_BATCH reads. */
const batchTypes: ReadonlySet<string> = new Set<MapType>(['hash', 'array', 'percpu_hash', 'percpu_array', 'lru_hash', 'lru_percpu_hash']);

function createNative(opts: CreateMapOptions, codecs: MapCodecs<unknown, unknown>): NativeMap {
  if (typeof opts !== 'object' || opts === null) throw new TypeError('map options must be an object');
  const type = mapTypes.byName[opts.type];
  if (type === undefined) throw new TypeError(`unknown map type ${JSON.stringify(opts.type)}`);
  checkCount(opts.maxEntries, 'maxEntries');
  if (opts.name !== undefined && (typeof opts.name !== 'string' || opts.name.length > 15)) {
    throw new RangeError(`map name must be a string of at most 15 characters, got ${JSON.stringify(opts.name)}`);
  }
  return native.MapHandle.create({
    type,
    keySize: codecs.key.size,
    valueSize: codecs.value.size,
    maxEntries: opts.maxEntries,
    flags: opts.flags ?? 0,
    ...(opts.name !== undefined ? { name: opts.name } : {}),
    ...(opts.innerMap ? { innerMapFd: opts.innerMap.fd } : {}),
  });
}
