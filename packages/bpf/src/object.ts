/** Objects: an ObjectSpec describes what to load (an ELF image, constants, map sizes, pin paths); load()
 *  turns it into a BpfObject, the live programs and maps. */
import { join } from 'node:path';

import { type Codec, none } from './codec.js';
import { type AttachType, expectedAttachType, type MapType, mapTypes, nameOf, type ProgramType, programTypes } from './constants.js';
import { assertOpen } from './errors.js';
import { BpfMap, type MapCodecs, PerCpuMap } from './map.js';
import { native, type NativeObject } from './native.js';
import { Owner } from './owner.js';
import type { Link } from './link.js';
import { attachCgroupPinned, type PinnedAttachment } from './pin.js';
import { Program } from './program.js';
import { RingBuffer, type RingBufferOptions } from './ringbuf.js';

export interface MapSpec {
  name: string;
  type: MapType | `unknown(${number})`;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  /** .rodata/.data/.bss: the object's global variables. */
  internal: boolean;
  pinPath: string | null;
}

export interface ProgramSpec {
  name: string;
  section: string;
  type: ProgramType | `unknown(${number})`;
  attachType: AttachType | undefined;
  autoload: boolean;
  /** The BPF helpers the program calls (enum bpf_func_id numbers), including calls a CO-RE check guards. */
  helpers: number[];
}

export interface ConstantSpec {
  name: string;
  size: number;
  section: string;
}

let embeddedImages: Record<string, Buffer> | undefined;
const images = () => (embeddedImages ??= native.embeddedObjects());

export class ObjectSpec implements Disposable {
  private handle: NativeObject | undefined;
  readonly name: string;

  private constructor(handle: NativeObject) {
    this.handle = handle;
    this.name = handle.name;
  }

  /** The names of the objects compiled into the addon. */
  static embeddedNames(): string[] {
    return Object.keys(images());
  }

  /** An object compiled into the addon (a libbpf skeleton's ELF image). */
  static embedded(name: string): ObjectSpec {
    const img = images()[name];
    if (!img) throw new TypeError(`no embedded object ${JSON.stringify(name)}; embedded: ${Object.keys(images()).join(', ')}`);
    return new ObjectSpec(new native.ObjectHandle('mem', img, name));
  }

  /** A compiled `.bpf.o` file. */
  static file(path: string): ObjectSpec {
    if (typeof path !== 'string') throw new TypeError('path must be a string');
    return new ObjectSpec(new native.ObjectHandle('file', path));
  }

  /** An ELF image in memory; `name` names the object (and prefixes its internal maps). */
  static buffer(image: Buffer, name: string): ObjectSpec {
    if (!Buffer.isBuffer(image)) throw new TypeError('image must be a Buffer');
    if (typeof name !== 'string' || !name) throw new TypeError('name must be a non-empty string');
    return new ObjectSpec(new native.ObjectHandle('mem', image, name));
  }

  get maps(): MapSpec[] {
    return this.h().maps().map((m) => ({ ...m, type: nameOf(mapTypes, m.type) }));
  }

  get programs(): ProgramSpec[] {
    return this.h()
      .programs()
      .map((p) => ({
        name: p.name,
        section: p.section,
        type: nameOf(programTypes, p.type),
        attachType: expectedAttachType(p.type, p.expectedAttachType),
        autoload: p.autoload,
        helpers: p.helpers,
      }));
  }

  get constants(): ConstantSpec[] {
    return this.h().constants();
  }

  /**
   * Sets a global variable (`const volatile` in .rodata, or .data/.bss) before load. Numbers and bigints are
   * written little-endian at the variable's size; a Buffer must have exactly that size.
   */
  setConstant(name: string, value: number | bigint | boolean | Buffer): this {
    const h = this.h();
    const c = h.constants().find((x) => x.name === name);
    if (!c) throw new TypeError(`object ${this.name} has no global variable ${JSON.stringify(name)}`);
    h.setConstant(name, encodeConstant(name, c.size, value));
    return this;
  }

  setMaxEntries(map: string, n: number): this {
    if (!Number.isInteger(n) || n < 1 || n > 0xffffffff) throw new RangeError(`maxEntries must be a positive integer, got ${n}`);
    this.h().setMaxEntries(map, n);
    return this;
  }

  /** Pins one map at `path` on load; an existing compatible pinned map is reused instead of created. */
  setPinPath(map: string, path: string | null): this {
    this.h().setPinPath(map, path);
    return this;
  }

  /** Pins every non-internal map as `<dir>/<map name>` on load, reusing maps already pinned there: a new
   *  process adopts the maps of the one before it. */
  pinMaps(dir: string): this {
    if (typeof dir !== 'string') throw new TypeError('dir must be a string');
    for (const m of this.maps) if (!m.internal) this.h().setPinPath(m.name, join(dir, m.name));
    return this;
  }

  /** Leaves a program out of load(). */
  setAutoload(program: string, on: boolean): this {
    this.h().setAutoload(program, on);
    return this;
  }

  /** Loads programs and maps into the kernel. The spec is consumed: it cannot be loaded twice. */
  load(): BpfObject {
    const h = this.h();
    try {
      h.load();
    } catch (err) {
      this.close();
      throw err;
    }
    this.handle = undefined;
    return new BpfObject(h);
  }

  get isClosed(): boolean {
    return this.handle === undefined;
  }

  close(): void {
    this.handle?.close();
    this.handle = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }

  private h(): NativeObject {
    if (!this.handle) throw new TypeError(`object spec ${this.name} is closed or already loaded`);
    return this.handle;
  }
}

function encodeConstant(name: string, size: number, value: number | bigint | boolean | Buffer): Buffer {
  if (Buffer.isBuffer(value)) {
    if (value.length !== size) throw new RangeError(`constant ${name} is ${size} bytes, got a Buffer of ${value.length}`);
    return value;
  }
  const b = Buffer.alloc(size);
  if (typeof value === 'boolean') value = value ? 1 : 0;
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new TypeError(`constant ${name} must be an integer, got ${value}`);
    value = BigInt(value);
  }
  if (typeof value !== 'bigint') throw new TypeError(`constant ${name} must be a number, bigint, boolean or Buffer`);
  if (size > 8) throw new TypeError(`constant ${name} is ${size} bytes: pass a Buffer`);
  const bits = BigInt(size * 8);
  if (value < -(1n << (bits - 1n)) || value >= 1n << bits) throw new RangeError(`constant ${name} (${size} bytes) cannot hold ${value}`);
  const u = BigInt.asUintN(size * 8, value);
  for (let i = 0; i < size; i++) b[i] = Number((u >> BigInt(8 * i)) & 0xffn);
  return b;
}

export class BpfObject implements Disposable {
  readonly name: string;
  private handle: NativeObject | undefined;
  private readonly owner = new Owner();
  private readonly programs = new Map<string, Program>();

  /** @internal use ObjectSpec.load(). */
  constructor(handle: NativeObject) {
    this.handle = handle;
    this.name = handle.name;
  }

  /** Convenience: ObjectSpec.embedded(name).load(). */
  static loadEmbedded(name: string): BpfObject {
    return ObjectSpec.embedded(name).load();
  }

  get maps(): MapSpec[] {
    return this.h().maps().map((m) => ({ ...m, type: nameOf(mapTypes, m.type) }));
  }

  get programNames(): string[] {
    return this.h()
      .programs()
      .map((p) => p.name);
  }

  /** Opens a map with codecs for its key and value; their sizes must equal the kernel's. */
  map<K, V>(name: string, codecs: MapCodecs<K, V>): BpfMap<K, V> {
    checkCodecs(codecs);
    return new BpfMap(this.h().openMap(name), codecs, this.owner);
  }

  /** Opens a per-CPU map; values come back one per possible CPU. */
  perCpuMap<K, V>(name: string, codecs: MapCodecs<K, V>): PerCpuMap<K, V> {
    checkCodecs(codecs);
    return new PerCpuMap(this.h().openMap(name), codecs, this.owner);
  }

  /** The program named `name`; the same handle each time until it is closed. */
  program(name: string): Program {
    const cached = this.programs.get(name);
    if (cached && !cached.isClosed) return cached;
    const p = new Program(this.h().openProgram(name), this.owner);
    this.programs.set(name, p);
    return p;
  }

  /**
   * Attaches programs of this object to one cgroup v2 directory, each at the attach type of its section —
   * all of them by default. All or nothing: if one attach fails, those made are detached and the error thrown.
   */
  attachCgroup(cgroupPath: string, programs: readonly string[] = this.programNames): Link[] {
    const made: Link[] = [];
    try {
      for (const p of programs) made.push(this.program(p).attachCgroup(cgroupPath));
    } catch (err) {
      made.forEach((l) => l.close());
      throw err;
    }
    return made;
  }

  /**
   * Attaches programs of this object to a cgroup v2 directory through links pinned as `<linkDir>/<program>`
   * (see attachCgroupPinned in pin.ts): a pinned link that already runs this very program (same tag and the
   * same maps, see runsSame) is adopted, one that runs another build or other maps is replaced in place, a
   * missing one is attached and pinned, stale ones are detached. The pins hold the attachments, which outlive
   * the process.
   */
  attachCgroupPinned(cgroupPath: string, linkDir: string, programs: readonly string[] = this.programNames): PinnedAttachment[] {
    const progs = new Map(programs.map((p) => [p, this.program(p)] as const));
    return attachCgroupPinned(cgroupPath, linkDir, progs, (running, prog) => this.runsSame(running, prog));
  }

  /**
   * Whether `running` (what a pinned link runs) is `prog` as this object loaded it: the same instructions (tag)
   * and the same maps. A tag ignores which maps a program uses, so a restart that replaced a pinned map (other
   * table sizes) leaves it unchanged: the running program would go on reading the old map. Maps are compared
   * by id, except the object's internal maps (.rodata, .data, .bss), which every load creates anew: those
   * match by name and layout. Their contents are not compared: a constant that follows a map (split's
   * orig_mask, the size of split_orig) changes with the map's id, and one that is a nonce per load (metrics'
   * cell_epoch, which only tells apart loads with other maps) would otherwise replace programs at every restart.
   */
  private runsSame(running: Program, prog: Program): boolean {
    const theirs = running.info();
    const ours = prog.info();
    if (theirs.tag !== ours.tag || theirs.mapIds.length !== ours.mapIds.length) return false;
    const unmatched = theirs.mapIds.filter((id) => !ours.mapIds.includes(id));
    const internal = this.internalMapIds();
    for (const id of ours.mapIds) {
      if (theirs.mapIds.includes(id)) continue;
      if (!internal.has(id)) return false;
      const i = unmatched.findIndex((other) => sameLayout(other, id));
      if (i < 0) return false;
      unmatched.splice(i, 1);
    }
    return unmatched.length === 0;
  }

  private internalMapIds(): Set<number> {
    const ids = new Set<number>();
    for (const m of this.h().maps()) {
      if (!m.internal) continue;
      const h = this.h().openMap(m.name);
      try {
        ids.add(h.info().id);
      } finally {
        h.close();
      }
    }
    return ids;
  }

  /** Consumes a ringbuf map of this object from the event loop. */
  ringBuffer<T = Buffer>(
    name: string,
    onRecords: (records: T[]) => void,
    opts: RingBufferOptions & { codec?: Codec<T> } = {},
  ): RingBuffer<T> {
    const map = new BpfMap(this.h().openMap(name), { key: none, value: none });
    try {
      const codec = opts.codec;
      const decode = codec ? (b: Buffer) => codec.decode(b, 0) : undefined;
      return new RingBuffer<T>(map, onRecords, decode, opts, this.owner);
    } finally {
      map.close();
    }
  }

  get isClosed(): boolean {
    return this.handle === undefined;
  }

  /** Closes links, then maps and programs opened from this object, then the object itself. */
  close(): void {
    if (!this.handle) return;
    this.owner.closeAll();
    this.handle.close();
    this.handle = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }

  private h(): NativeObject {
    assertOpen(this.handle === undefined, `object ${this.name}`);
    return this.handle!;
  }
}

/** Two maps of the same name and layout (type, key and value sizes, entries, flags). */
function sameLayout(a: number, b: number): boolean {
  const info = (id: number) => {
    const h = native.MapHandle.openById(id);
    try {
      const i = h.info();
      return [i.name, i.type, i.keySize, i.valueSize, i.maxEntries, i.flags].join();
    } finally {
      h.close();
    }
  };
  return info(a) === info(b);
}

function checkCodecs(codecs: MapCodecs<unknown, unknown>): void {
  if (!codecs || typeof codecs !== 'object' || !codecs.key || !codecs.value) {
    throw new TypeError('map codecs must be given as { key, value }');
  }
}
