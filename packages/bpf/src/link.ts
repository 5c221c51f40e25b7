/** Link handles: one attachment of a program to a hook. Closing a link detaches it unless it was pinned
 *  (bpf_links) or disconnected (netlink tc filters and BPF_PROG_ATTACH attachments). */
import { type AttachType, attachTypes, type LinkType, linkTypes, nameOf } from './constants.js';
import { native, type NativeLink } from './native.js';
import { Handle, type Owner } from './owner.js';
import type { Program } from './program.js';

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

  /** @internal made by Program.attach*() or Link.openPinned(). */
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
  update(program: Program, expected?: Program): void {
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
