/** Program handles: test runs through BPF_PROG_TEST_RUN, run statistics, and attachment to hooks. */
import {
  type AttachType,
  attachTypes,
  cgroupAttachTypes,
  expectedAttachType,
  nameOf,
  type ProgramType,
  programTypes,
} from './constants.js';
import { NotSupportedError } from './errors.js';
import { Link } from './link.js';
import type { MapBase } from './map.js';
import { native, type NativeProgram } from './native.js';
import { Handle, type Owner } from './owner.js';
import { features } from './probe.js';

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

export type TcDirection = 'ingress' | 'egress';

export interface TcAttachOptions {
  direction: TcDirection;
  /** 'tcx' (a bpf_link, kernel ≥ 6.6), 'clsact' (a netlink filter, any kernel) or 'auto' (tcx when the kernel has it). */
  mode?: 'auto' | 'tcx' | 'clsact';
  /** Path of the network namespace holding the interface (e.g. /run/netns/pod1). */
  netns?: string;
  /** clsact only: filter priority and handle (0: let the kernel choose). */
  priority?: number;
  handle?: number;
}

export interface CgroupAttachOptions {
  /** Default: the attach type libbpf derived from the program's section name. */
  attachType?: AttachType;
  /** Use BPF_PROG_ATTACH with these flags instead of a bpf_link (e.g. for kernels before 5.7). */
  legacyFlags?: number;
}

/** Minimum input per program type that the kernel's test runner accepts. */
const minTestInput: Partial<Record<ProgramType, number>> = { sched_cls: 14, sched_act: 14, cgroup_skb: 14, xdp: 14 };

export class Program extends Handle<NativeProgram> {
  readonly name: string;
  readonly type: ProgramType | `unknown(${number})`;
  /** The attach type libbpf derived from the section name, when the program came from an object. */
  readonly attachType: AttachType | undefined;
  private readonly owner: Owner | undefined;

  /** @internal use BpfObject.program() or Program.openPinned(). */
  constructor(handle: NativeProgram, owner?: Owner) {
    super(handle);
    const info = handle.info();
    this.name = info.name;
    this.type = nameOf(programTypes, info.type);
    this.attachType = expectedAttachType(info.type, info.expectedAttachType);
    this.owner = owner;
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

  /** Attaches to a cgroup v2 directory (sockops, cgroup_skb, connect4/6, sendmsg4/6, recvmsg4/6, getpeername4/6, …). */
  attachCgroup(cgroupPath: string, opts: CgroupAttachOptions = {}): Link {
    this.check();
    if (typeof cgroupPath !== 'string') throw new TypeError('cgroup path must be a string');
    const type = opts.attachType ?? this.attachType;
    if (type === undefined || !cgroupAttachTypes.has(type)) {
      throw new TypeError(
        `program ${this.name} (${this.type}${this.attachType ? `, ${this.attachType}` : ''}) has no cgroup attach type; ` +
          `pass attachType (one of ${[...cgroupAttachTypes].slice(0, 4).join(', ')}, …)`,
      );
    }
    const legacy = opts.legacyFlags;
    if (legacy !== undefined && (!Number.isInteger(legacy) || legacy < 0)) throw new RangeError(`legacyFlags must be a non-negative integer`);
    return this.adoptLink(native.attachCgroup(this.handle, cgroupPath, attachTypes.byName[type], legacy ?? -1));
  }

  /** Attaches a sched_cls program to an interface's ingress or egress. */
  attachTc(iface: string | number, opts: TcAttachOptions): Link {
    this.check();
    if (this.type !== 'sched_cls') throw new TypeError(`program ${this.name} is ${this.type}, tc needs sched_cls (SEC("tc"))`);
    if (opts?.direction !== 'ingress' && opts?.direction !== 'egress') {
      throw new TypeError(`tc direction must be 'ingress' or 'egress', got ${JSON.stringify(opts?.direction)}`);
    }
    const mode = opts.mode ?? 'auto';
    if (!['auto', 'tcx', 'clsact'].includes(mode)) throw new TypeError(`tc mode must be 'auto', 'tcx' or 'clsact', got ${JSON.stringify(mode)}`);
    const ifindex = typeof iface === 'number' ? iface : native.ifNameToIndex(iface, opts.netns);
    if (!Number.isInteger(ifindex) || ifindex <= 0) throw new RangeError(`ifindex must be a positive integer, got ${ifindex}`);
    const egress = opts.direction === 'egress';
    const tcx = mode === 'tcx' || (mode === 'auto' && features().attach.tcx);
    if (mode === 'tcx' && !features().attach.tcx) throw new NotSupportedError('tcx', 'TCX attachment needs Linux ≥ 6.6; use mode clsact');
    const link = tcx
      ? native.attachTcx(this.handle, ifindex, egress, opts.netns)
      : native.attachClsact(this.handle, ifindex, egress, opts.priority ?? 0, opts.handle ?? 0, opts.netns);
    return this.adoptLink(link);
  }

  /** Attaches an sk_msg or sk_skb program to a sockmap or sockhash. */
  attachSockMap(map: MapBase<unknown, unknown, unknown>, opts: { attachType?: AttachType } = {}): Link {
    this.check();
    if (map.type !== 'sockmap' && map.type !== 'sockhash') throw new TypeError(`map ${map.name} is ${map.type}, not a sockmap or sockhash`);
    let type = opts.attachType ?? this.attachType;
    if (this.type === 'sk_msg') type ??= 'sk_msg_verdict';
    const allowed: AttachType[] = ['sk_msg_verdict', 'sk_skb_stream_parser', 'sk_skb_stream_verdict', 'sk_skb_verdict'];
    if (type === undefined || !allowed.includes(type)) {
      throw new TypeError(`program ${this.name} (${this.type}) cannot attach to a sockmap; pass attachType (${allowed.join(', ')})`);
    }
    return this.adoptLink(native.attachSockmap(this.handle, map.nativeHandle(), attachTypes.byName[type], true));
  }

  /** Pins the program at a bpffs path. */
  pin(path: string): void {
    this.check();
    this.handle.pin(path);
  }

  protected describe(): string {
    return `program ${this.name}`;
  }

  private adoptLink(l: ReturnType<typeof native.attachTcx>): Link {
    return new Link(l, this.owner);
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
