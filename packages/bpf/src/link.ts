/** Link handles: one attachment of a program to a hook, and the functions that attach (cilium/ebpf's link
 *  package). Closing a link detaches it unless it was pinned (bpf_links) or disconnected (netlink tc filters and
 *  BPF_PROG_ATTACH attachments). */
import { type AttachType, attachTypes, cgroupAttachTypes, type LinkType, linkTypes, nameOf, type ProgramType } from './constants.js';
import { NotSupportedError } from './errors.js';
import type { MapBase } from './map.js';
import { native, type NativeLink, type NativeProgram } from './native.js';
import { Handle, type Owner } from './owner.js';
import { features } from './probe.js';

/** What attaching needs of a program; Program has it. Structural, so this module does not import program.ts. */
export interface AttachableProgram {
  readonly name: string;
  readonly type: ProgramType | `unknown(${number})`;
  /** The attach type libbpf derived from the section name. */
  readonly attachType: AttachType | undefined;
  nativeHandle(): NativeProgram;
  /** @internal the object owning the program, which owns its links too. */
  adopter(): Owner | undefined;
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


export interface LinkInfo {
  description: string;
  /** The kernel's link type, for bpf_links. */
  linkType?: LinkType | `unknown(${number})`;
  id?: number;
  programId: number;
  attachType?: AttachType | `unknown(${number})`;
  cgroupId?: bigint;
  ifindex?: number;
  mapId?: number;
  handle?: number;
  priority?: number;
  direction?: 'ingress' | 'egress';
}

export class Link extends Handle<NativeLink> {
  /** 'link': a kernel bpf_link; 'tc': a clsact filter; 'attach': a BPF_PROG_ATTACH attachment. */
  readonly kind: 'link' | 'tc' | 'attach';
  private readonly description: string;

  /** @internal made by the attach functions or Link.openPinned(). */
  constructor(handle: NativeLink, owner?: Owner) {
    super(handle);
    this.kind = handle.kind;
    this.description = handle.info().description;
    this.adoptBy(owner, 'link');
  }

  /** Opens a pinned bpf_link, e.g. to adopt an attachment a previous process left in place. */
  static openPinned(path: string): Link {
    if (typeof path !== 'string') throw new TypeError('path must be a string');
    return new Link(native.LinkHandle.openPinned(path));
  }

  info(): LinkInfo {
    this.check();
    const i = this.handle.info();
    const out: LinkInfo = { ...i, attachType: undefined, linkType: undefined };
    if (i.linkType !== undefined) out.linkType = nameOf(linkTypes, i.linkType);
    if (i.attachType !== undefined) out.attachType = nameOf(attachTypes, i.attachType);
    else delete out.attachType;
    if (i.linkType === undefined) delete out.linkType;
    return out;
  }

  /** Pins a bpf_link so the attachment outlives this process; NotSupportedError for other kinds. */
  pin(path: string): void {
    this.check();
    this.handle.pin(path);
  }

  /** Replaces the attached program in place, with no moment without a program. With `expected`, fails
   *  (EPERM) unless that program is the one attached now. */
  update(program: AttachableProgram, expected?: AttachableProgram): void {
    this.check();
    this.handle.update(program.nativeHandle(), expected?.nativeHandle());
  }

  /** Detaches now, pinned or not, and closes the handle. */
  detach(): void {
    this.check();
    this.handle.detach();
    this.markClosed();
  }

  /** For 'tc' and 'attach' kinds: close() will leave the program attached. */
  disconnect(): void {
    this.check();
    this.handle.disconnect();
  }

  override toString(): string {
    return `Link(${this.kind}: ${this.description})`;
  }

  protected describe(): string {
    return `link ${this.description}`;
  }
}

/** Attaches to a cgroup v2 directory (sockops, cgroup_skb, connect4/6, sendmsg4/6, recvmsg4/6, getpeername4/6, …). */
export function attachCgroup(program: AttachableProgram, cgroupPath: string, opts: CgroupAttachOptions = {}): Link {
  const handle = program.nativeHandle();
  if (typeof cgroupPath !== 'string') throw new TypeError('cgroup path must be a string');
  const type = opts.attachType ?? program.attachType;
  if (type === undefined || !cgroupAttachTypes.has(type)) {
    throw new TypeError(
      `program ${program.name} (${program.type}${program.attachType ? `, ${program.attachType}` : ''}) has no cgroup attach type; ` +
        `pass attachType (one of ${[...cgroupAttachTypes].slice(0, 4).join(', ')}, …)`,
    );
  }
  const legacy = opts.legacyFlags;
  if (legacy !== undefined && (!Number.isInteger(legacy) || legacy < 0)) throw new RangeError(`legacyFlags must be a non-negative integer`);
  return new Link(native.attachCgroup(handle, cgroupPath, attachTypes.byName[type], legacy ?? -1), program.adopter());
}

/** Attaches a sched_cls program to an interface's ingress or egress. */
export function attachTc(program: AttachableProgram, iface: string | number, opts: TcAttachOptions): Link {
  const handle = program.nativeHandle();
  if (program.type !== 'sched_cls') throw new TypeError(`program ${program.name} is ${program.type}, tc needs sched_cls (SEC("tc"))`);
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
    ? native.attachTcx(handle, ifindex, egress, opts.netns)
    : native.attachClsact(handle, ifindex, egress, opts.priority ?? 0, opts.handle ?? 0, opts.netns);
  return new Link(link, program.adopter());
}

/** Attaches an sk_msg or sk_skb program to a sockmap or sockhash. */
export function attachSockMap(program: AttachableProgram, map: MapBase<unknown, unknown, unknown>, opts: { attachType?: AttachType } = {}): Link {
  const handle = program.nativeHandle();
  if (map.type !== 'sockmap' && map.type !== 'sockhash') throw new TypeError(`map ${map.name} is ${map.type}, not a sockmap or sockhash`);
  let type = opts.attachType ?? program.attachType;
  if (program.type === 'sk_msg') type ??= 'sk_msg_verdict';
  const allowed: AttachType[] = ['sk_msg_verdict', 'sk_skb_stream_parser', 'sk_skb_stream_verdict', 'sk_skb_verdict'];
  if (type === undefined || !allowed.includes(type)) {
    throw new TypeError(`program ${program.name} (${program.type}) cannot attach to a sockmap; pass attachType (${allowed.join(', ')})`);
  }
  return new Link(native.attachSockmap(handle, map.nativeHandle(), attachTypes.byName[type], true), program.adopter());
}
