/** Loads the Node-API addon and describes its surface. Only this package's modules import it. */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { BpfError, NotSupportedError } from './errors.js';

export interface NativeMapInfo {
  name: string;
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

export interface NativeMap {
  readonly fd: number;
  info(): NativeMapInfo;
  /** Binds the buffers the *Scratch calls use: single-element calls then carry no arguments. */
  bindScratch(key: Buffer, value: Buffer): void;
  lookupScratch(): boolean;
  updateScratch(flags: number): void;
  deleteScratch(): boolean;
  lookup(key: Buffer, out: Buffer, flags: number): boolean;
  lookupAndDelete(key: Buffer | null, out: Buffer): boolean;
  update(key: Buffer | null, value: Buffer, flags: number): void;
  delete(key: Buffer): boolean;
  nextKey(key: Buffer | null, out: Buffer): boolean;
  countKeys(): number;
  lookupBatch(
    inToken: Buffer | null,
    outToken: Buffer,
    keys: Buffer,
    values: Buffer,
    count: number,
    elemFlags: number,
    andDelete: boolean,
  ): [number, boolean];
  updateBatch(keys: Buffer, values: Buffer, count: number, elemFlags: number): number;
  deleteBatch(keys: Buffer, count: number): number;
  pin(path: string): void;
  freeze(): void;
  close(): void;
}

export interface NativeProgramInfo {
  name: string;
  type: number;
  id: number;
  tag: string;
  expectedAttachType: number;
  runCount: bigint;
  runTimeNs: bigint;
  verifiedInstructions: number;
  loadTimeNs: bigint;
  mapIds: number[];
}

export interface NativeProgram {
  readonly fd: number;
  info(): NativeProgramInfo;
  testRun(
    data: Buffer | null,
    dataOutSize: number,
    ctx: Buffer | null,
    ctxOutSize: number,
    repeat: number,
    flags: number,
    cpu: number,
  ): { retval: number; durationNs: number; data?: Buffer; ctx?: Buffer };
  pin(path: string): void;
  close(): void;
}

export interface NativeLinkInfo {
  description: string;
  linkType?: number;
  id?: number;
  programId: number;
  attachType?: number;
  cgroupId?: bigint;
  ifindex?: number;
  mapId?: number;
  handle?: number;
  priority?: number;
  direction?: 'ingress' | 'egress';
}

export interface NativeLink {
  readonly kind: 'link' | 'tc' | 'attach';
  info(): NativeLinkInfo;
  pin(path: string): void;
  update(program: NativeProgram, old?: NativeProgram): void;
  detach(): void;
  disconnect(): void;
  close(): void;
}

export interface NativeObjectMap {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  internal: boolean;
  pinPath: string | null;
}

export interface NativeObjectProgram {
  name: string;
  section: string;
  type: number;
  expectedAttachType: number;
  autoload: boolean;
  /** Helper numbers (enum bpf_func_id) the program calls. */
  helpers: number[];
}

export interface NativeObject {
  readonly name: string;
  readonly loaded: boolean;
  maps(): NativeObjectMap[];
  programs(): NativeObjectProgram[];
  constants(): { name: string; size: number; section: string }[];
  setConstant(name: string, value: Buffer): void;
  setMaxEntries(map: string, n: number): void;
  setPinPath(map: string, path: string | null): void;
  setAutoload(program: string, on: boolean): void;
  load(): void;
  openMap(name: string): NativeMap;
  openProgram(name: string): NativeProgram;
  close(): void;
}

export interface NativeRingBuffer {
  consume(): number;
  ref(): void;
  unref(): void;
  stats(): { records: number; batches: number; dropped?: number; queuedBytes?: number };
  close(): void;
}

export interface Native {
  ObjectHandle: new (kind: 'mem' | 'file', arg: Buffer | string, name?: string) => NativeObject;
  MapHandle: {
    create(opts: {
      type: number;
      keySize: number;
      valueSize: number;
      maxEntries: number;
      flags?: number;
      name?: string;
      innerMapFd?: number;
    }): NativeMap;
    openPinned(path: string): NativeMap;
    openById(id: number): NativeMap;
  };
  ProgramHandle: { openPinned(path: string): NativeProgram; openById(id: number): NativeProgram };
  LinkHandle: { openPinned(path: string): NativeLink };
  RingBufferHandle: new (map: NativeMap, cb: (batch: Buffer[]) => void, maxBatch: number, queueBytes: number, nice: number, pollMs: number, packed: boolean, reuse: boolean) => NativeRingBuffer;
  embeddedObjects(): Record<string, Buffer>;
  setErrorClasses(bpfError: Function, notSupported: Function): void;
  liveHandles(): number;
  libbpfVersion: string;
  numPossibleCpus(): number;
  socketCookie(fd: number): bigint;
  ifNameToIndex(name: string, netns?: string): number;
  cgroupId(path: string): bigint;
  dirInodes(dir: string): [string, bigint][];
  makeDirs(paths: string[]): Promise<string[]>;
  waitForPrograms(): Promise<void>;
  waitForProgramsSync(): void;
  enableStats(): number;
  closeFd(fd: number): void;
  isBpffs(path: string): boolean;
  mountBpffs(path: string): void;
  tryLockExclusive(fd: number): boolean;
  listenTcp(ip: string, port: number, backlog: number): number;
  socketListening(fd: number): { address: string; port: number } | null;
  pidfdGetfd(pid: number, fd: number): number;
  probeProgramType(type: number): number;
  probeMapType(type: number): number;
  probeHelper(programType: number, helper: number, attachType?: number): number;
  probeAttachType(programType: number, attachType: number): boolean;
  probeAttach(): { tcx: boolean; sockmapLink: boolean; cgroupLink: boolean; stats: boolean };
  attachCgroup(program: NativeProgram, cgroup: string, attachType: number, legacyFlags: number): NativeLink;
  attachTcx(program: NativeProgram, ifindex: number, egress: boolean, netns?: string): NativeLink;
  attachClsact(
    program: NativeProgram,
    ifindex: number,
    egress: boolean,
    priority: number,
    handle: number,
    netns?: string,
  ): NativeLink;
  attachSockmap(program: NativeProgram, map: NativeMap, attachType: number, preferLink: boolean): NativeLink;
  queryCgroup(cgroup: string, attachType: number): number[];
}

const here = dirname(fileURLToPath(import.meta.url));
/** The package root: src/ and dist/ both sit one level below it. */
export const packageRoot = join(here, '..');

function load(): Native {
  const override = process.env.MESH_BPF_ADDON;
  const path = override ?? join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`, 'mesh_bpf.node');
  if (!existsSync(path)) {
    throw new Error(
      `@mesh/bpf: the native addon is missing at ${path}. In the repository run \`npm run build\`; ` +
        `an installed package ships it for linux-x64 only.`,
    );
  }
  const require = createRequire(import.meta.url);
  let addon: Native;
  try {
    addon = require(path) as Native;
  } catch (err) {
    const msg = (err as Error).message;
    if (/libbpf\.so/.test(msg)) {
      throw new Error(`@mesh/bpf needs libbpf 1.x at run time (Debian/Ubuntu: apt-get install libbpf1): ${msg}`);
    }
    throw err;
  }
  addon.setErrorClasses(BpfError, NotSupportedError);
  return addon;
}

export const native: Native = load();
