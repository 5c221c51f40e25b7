/** Program handles: test runs through BPF_PROG_TEST_RUN, run statistics, pinning. Attaching lives in the link
 *  module (as in cilium/ebpf); the attach* methods here are shorthands for its functions. */
import { type AttachType, expectedAttachType, nameOf, type ProgramType, programTypes } from './constants.js';
import { attachCgroup, attachSockMap, attachTc, type CgroupAttachOptions, type Link, type TcAttachOptions } from './link.js';
import type { MapBase } from './map.js';
import { native, type NativeProgram } from './native.js';
import { Handle, type Owner } from './owner.js';

export interface TestRunOptions {
  /** Runs the program this many times (the kernel reports the mean duration); default 1. */
  repeat?: number;
  /** Context passed in (e.g. a struct __sk_buff for tc and cgroup_skb programs). */
  ctx?: Buffer;
  /** Room for the output packet; default: input length + 256 (programs may grow packets). */
  dataOutSize?: number;
  /** Room for the output context; default: the input context's length. */
  ctxOutSize?: number;
  flags?: number;
  cpu?: number;
}

export interface TestRunResult {
  /** The program's return value (verdict). */
  retval: number;
  /** The packet after the program ran. */
  data: Buffer | undefined;
  ctx: Buffer | undefined;
  /** Mean run time per repetition, in nanoseconds, as the kernel measured it. */
  durationNs: number;
}

export interface ProgramInfo {
  name: string;
  type: ProgramType | `unknown(${number})`;
  id: number;
  tag: string;
  attachType: AttachType | undefined;
  /** Run count and total run time; they grow only while BPF stats are enabled (enableStats()). */
  runCount: bigint;
  runTimeNs: bigint;
  verifiedInstructions: number;
  /** Ids of the maps the program uses, as the verifier recorded them (its own maps and the object's internal
   *  ones: .rodata, .data, .bss). */
  mapIds: number[];
}

/** Minimum input per program type that the kernel's test runner accepts. */
const minTestInput: Partial<Record<ProgramType, number>> = { sched_cls: 14, sched_act: 14, cgroup_skb: 14, xdp: 14 };

export class Program extends Handle<NativeProgram> {
  readonly name: string;
  readonly type: ProgramType | `unknown(${number})`;
  /** The attach type libbpf derived from the section name, when the program came from an object. */
  readonly attachType: AttachType | undefined;

  /** @internal use BpfObject.program() or Program.openPinned(). */
  constructor(handle: NativeProgram, owner?: Owner) {
    super(handle);
    const info = handle.info();
    this.name = info.name;
    this.type = nameOf(programTypes, info.type);
    this.attachType = expectedAttachType(info.type, info.expectedAttachType);
    this.adoptBy(owner);
  }

  static openPinned(path: string): Program {
    if (typeof path !== 'string') throw new TypeError('path must be a string');
    return new Program(native.ProgramHandle.openPinned(path));
  }

  static openById(id: number): Program {
    return new Program(native.ProgramHandle.openById(id));
  }

  get fd(): number {
    this.check();
    return this.handle.fd;
  }

  info(): ProgramInfo {
    this.check();
    const i = this.handle.info();
    return {
      name: i.name,
      type: nameOf(programTypes, i.type),
      id: i.id,
      tag: i.tag,
      attachType: this.attachType,
      runCount: i.runCount,
      runTimeNs: i.runTimeNs,
      verifiedInstructions: i.verifiedInstructions,
      mapIds: i.mapIds,
    };
  }

  /** Run count and run time from the kernel's BPF stats (see enableStats()). */
  stats(): { runCount: bigint; runTimeNs: bigint } {
    const { runCount, runTimeNs } = this.info();
    return { runCount, runTimeNs };
  }

  /** Runs the program on `data` in the kernel (BPF_PROG_TEST_RUN) without attaching it. */
  testRun(data: Buffer | null, opts: TestRunOptions = {}): TestRunResult {
    this.check();
    if (data !== null && !Buffer.isBuffer(data)) throw new TypeError('test run data must be a Buffer or null');
    if (opts.ctx !== undefined && !Buffer.isBuffer(opts.ctx)) throw new TypeError('ctx must be a Buffer');
    const u32 = (v: number | undefined, name: string, def: number) => {
      if (v === undefined) return def;
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`${name} must be an integer in [0, 2^32), got ${v}`);
      return v;
    };
    const min = minTestInput[this.type as ProgramType];
    if (min !== undefined && (data?.length ?? 0) < min) {
      throw new RangeError(`a ${this.type} test run needs at least ${min} bytes of packet (an Ethernet header), got ${data?.length ?? 0}`);
    }
    const r = this.handle.testRun(
      data,
      u32(opts.dataOutSize, 'dataOutSize', data ? data.length + 256 : 0),
      opts.ctx ?? null,
      u32(opts.ctxOutSize, 'ctxOutSize', opts.ctx?.length ?? 0),
      u32(opts.repeat, 'repeat', 1),
      u32(opts.flags, 'flags', 0),
      u32(opts.cpu, 'cpu', 0),
    );
    return { retval: r.retval, data: r.data, ctx: r.ctx, durationNs: r.durationNs };
  }

  /** Attaches to a cgroup v2 directory (sockops, cgroup_skb, connect4/6, sendmsg4/6, recvmsg4/6, getpeername4/6, …):
   *  attachCgroup(this, …) of the link module. */
  attachCgroup(cgroupPath: string, opts: CgroupAttachOptions = {}): Link {
    return attachCgroup(this, cgroupPath, opts);
  }

  /** Attaches a sched_cls program to an interface's ingress or egress: attachTc(this, …). */
  attachTc(iface: string | number, opts: TcAttachOptions): Link {
    return attachTc(this, iface, opts);
  }

  /** Attaches an sk_msg or sk_skb program to a sockmap or sockhash: attachSockMap(this, …). */
  attachSockMap(map: MapBase<unknown, unknown, unknown>, opts: { attachType?: AttachType } = {}): Link {
    return attachSockMap(this, map, opts);
  }

  /** Pins the program at a bpffs path. */
  pin(path: string): void {
    this.check();
    this.handle.pin(path);
  }

  protected describe(): string {
    return `program ${this.name}`;
  }
}

/** Turns on the kernel's BPF run-time statistics (run count, run time) until the returned handle is closed. */
export function enableStats(): Disposable & { close(): void } {
  const fd = native.enableStats();
  let open = true;
  const close = () => {
    if (open) {
      open = false;
      native.closeFd(fd);
    }
  };
  return { close, [Symbol.dispose]: close };
}
