import { internetChecksum, onesComplementSum, pseudoHeader } from './checksum.js';
import { formatIp, ipBytes, ipFamily } from './ip.js';

export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const ETH_P_IPV6 = 0x86dd;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

const ETH_HLEN = 14;
const IPV4_HLEN = 20;
const IPV6_HLEN = 40;
const TCP_HLEN = 20;
const UDP_HLEN = 8;
const IPV6_FRAG_HLEN = 8;
const NEXTHDR_FRAGMENT = 44;
// IPv6 extension headers whose length is (byte 1 + 1) * 8: hop-by-hop, routing, destination options.
const IPV6_EXT_HEADERS = new Set([0, 43, 60]);
const NEXTHDR_AUTH = 51;

export const DEFAULT_SRC_MAC = '02:00:00:00:00:01';
export const DEFAULT_DST_MAC = '02:00:00:00:00:02';

export type L4Proto = 'tcp' | 'udp' | number;

export interface TcpFlags {
  fin?: boolean;
  syn?: boolean;
  rst?: boolean;
  psh?: boolean;
  ack?: boolean;
  urg?: boolean;
  ece?: boolean;
  cwr?: boolean;
}

const TCP_FLAG_BITS: ReadonlyArray<[keyof TcpFlags, number]> = [
  ['fin', 0x01], ['syn', 0x02], ['rst', 0x04], ['psh', 0x08],
  ['ack', 0x10], ['urg', 0x20], ['ece', 0x40], ['cwr', 0x80],
];

export interface PacketSpec {
  /** Taken from `src` when omitted; must agree with both addresses. */
  family?: 4 | 6;
  /** 'tcp' and 'udp' get a header with a valid checksum; any other number carries `payload` as the L4 bytes. */
  proto: L4Proto;
  src: string;
  dst: string;
  /** Default 49152. */
  sport?: number;
  /** Default 80. */
  dport?: number;
  /** Strings are encoded as UTF-8. */
  payload?: Uint8Array | string;
  /** Default: ACK, plus PSH when there is a payload — a segment of an established flow. */
  tcpFlags?: TcpFlags;
  seq?: number;
  ackSeq?: number;
  /** Default 65535. */
  window?: number;
  /** Zero-padded to a multiple of 4 bytes, at most 40. */
  tcpOptions?: Uint8Array;
  /** TTL, or hop limit for IPv6. Default 64. */
  ttl?: number;
  /** TOS byte, or traffic class for IPv6. */
  tos?: number;
  flowLabel?: number;
  /** IPv4 identification, or the IPv6 fragment header's identification. */
  id?: number;
  dontFragment?: boolean;
  /** Zero-padded to a multiple of 4 bytes, at most 40. */
  ipv4Options?: Uint8Array;
  /**
   * Fragment offset in bytes (a multiple of 8). For IPv6, an offset or `moreFragments` adds a fragment header.
   * A non-first fragment has no L4 header: `payload` is the fragment's raw bytes.
   */
  fragmentOffset?: number;
  moreFragments?: boolean;
  srcMac?: string;
  dstMac?: string;
}

export interface EthernetSpec {
  ethertype: number;
  payload: Uint8Array;
  srcMac?: string;
  dstMac?: string;
}

export interface ParsedPacket {
  dstMac: string;
  srcMac: string;
  ethertype: number;
  /** Absent for frames that are not IPv4 or IPv6. */
  family?: 4 | 6;
  src?: string;
  dst?: string;
  ttl?: number;
  tos?: number;
  flowLabel?: number;
  id?: number;
  dontFragment?: boolean;
  fragmentOffset?: number;
  moreFragments?: boolean;
  /** 'tcp', 'udp', or the upper-layer protocol number (after IPv6 extension headers). */
  proto?: L4Proto;
  sport?: number;
  dport?: number;
  tcpFlags?: Required<TcpFlags>;
  seq?: number;
  ackSeq?: number;
  window?: number;
  /** L4 payload for TCP/UDP, the IP payload otherwise, the Ethernet payload for non-IP frames. */
  payload: Buffer;
  /** IPv4 header checksum verifies; absent for IPv6. */
  ipChecksumOk?: boolean;
  /** TCP/UDP checksum verifies against the pseudo-header; absent for fragments and other protocols. */
  l4ChecksumOk?: boolean;
}

/** An Ethernet II frame around `payload`. */
export function ethernet(spec: EthernetSpec): Buffer {
  const hdr = Buffer.alloc(ETH_HLEN);
  macBytes(spec.dstMac ?? DEFAULT_DST_MAC).copy(hdr, 0);
  macBytes(spec.srcMac ?? DEFAULT_SRC_MAC).copy(hdr, 6);
  hdr.writeUInt16BE(checkUint(spec.ethertype, 16, 'ethertype'), 12);
  return Buffer.concat([hdr, spec.payload]);
}

/** An Ethernet + IPv4/IPv6 + TCP/UDP frame with valid checksums, ready for BPF_PROG_TEST_RUN. */
export function packet(spec: PacketSpec): Buffer {
  const family = spec.family ?? ipFamily(spec.src);
  const src = ipBytes(spec.src);
  const dst = ipBytes(spec.dst);
  const want = family === 4 ? 4 : 16;
  if (src.length !== want || dst.length !== want) {
    throw new TypeError(`packet: family ${family} needs IPv${family} addresses, got src ${spec.src} and dst ${spec.dst}`);
  }
  const protoNumber = protoToNumber(spec.proto);
  const fragOffset = checkUint(spec.fragmentOffset ?? 0, 16, 'fragmentOffset');
  if (fragOffset % 8 !== 0) throw new RangeError(`packet: fragmentOffset is in bytes and must be a multiple of 8, got ${fragOffset}`);
  const payload = typeof spec.payload === 'string' ? Buffer.from(spec.payload, 'utf8') : Buffer.from(spec.payload ?? []);

  let l4: Buffer;
  if (fragOffset > 0 || (protoNumber !== IPPROTO_TCP && protoNumber !== IPPROTO_UDP)) {
    l4 = payload;
  } else {
    l4 = protoNumber === IPPROTO_TCP ? tcpSegment(spec, payload) : udpDatagram(spec, payload);
    const sumAt = protoNumber === IPPROTO_TCP ? 16 : 6;
    let sum = internetChecksum(pseudoHeader(src, dst, protoNumber, l4.length), l4);
    // UDP sends a computed zero as all ones: zero means "no checksum" (RFC 768; mandatory over IPv6).
    if (sum === 0 && protoNumber === IPPROTO_UDP) sum = 0xffff;
    l4.writeUInt16BE(sum, sumAt);
  }

  const ip = family === 4 ? ipv4Header(spec, src, dst, protoNumber, fragOffset, l4.length)
    : ipv6Header(spec, src, dst, protoNumber, fragOffset, l4.length);
  return ethernet({
    ethertype: family === 4 ? ETH_P_IP : ETH_P_IPV6,
    payload: Buffer.concat([ip, l4]),
    ...(spec.srcMac !== undefined && { srcMac: spec.srcMac }),
    ...(spec.dstMac !== undefined && { dstMac: spec.dstMac }),
  });
}

function ipv4Header(spec: PacketSpec, src: Buffer, dst: Buffer, proto: number, fragOffset: number, l4Length: number): Buffer {
  const options = padTo4(spec.ipv4Options, 'ipv4Options');
  const hlen = IPV4_HLEN + options.length;
  const hdr = Buffer.alloc(hlen);
  hdr.writeUInt8(0x40 | (hlen / 4), 0);
  hdr.writeUInt8(checkUint(spec.tos ?? 0, 8, 'tos'), 1);
  hdr.writeUInt16BE(checkUint(hlen + l4Length, 16, 'IPv4 total length'), 2);
  hdr.writeUInt16BE(checkUint(spec.id ?? 0, 16, 'id'), 4);
  const flags = (spec.dontFragment ? 0x4000 : 0) | (spec.moreFragments ? 0x2000 : 0);
  hdr.writeUInt16BE(flags | (fragOffset / 8), 6);
  hdr.writeUInt8(checkUint(spec.ttl ?? 64, 8, 'ttl'), 8);
  hdr.writeUInt8(proto, 9);
  src.copy(hdr, 12);
  dst.copy(hdr, 16);
  options.copy(hdr, IPV4_HLEN);
  hdr.writeUInt16BE(internetChecksum(hdr), 10);
  return hdr;
}

function ipv6Header(spec: PacketSpec, src: Buffer, dst: Buffer, proto: number, fragOffset: number, l4Length: number): Buffer {
  if (spec.ipv4Options !== undefined) throw new TypeError('packet: ipv4Options given for an IPv6 packet');
  const fragmented = fragOffset > 0 || spec.moreFragments === true;
  const hdr = Buffer.alloc(IPV6_HLEN + (fragmented ? IPV6_FRAG_HLEN : 0));
  const tc = checkUint(spec.tos ?? 0, 8, 'tos');
  const flow = checkUint(spec.flowLabel ?? 0, 20, 'flowLabel');
  hdr.writeUInt32BE(((6 << 28) | (tc << 20) | flow) >>> 0, 0);
  hdr.writeUInt16BE(checkUint(hdr.length - IPV6_HLEN + l4Length, 16, 'IPv6 payload length'), 4);
  hdr.writeUInt8(fragmented ? NEXTHDR_FRAGMENT : proto, 6);
  hdr.writeUInt8(checkUint(spec.ttl ?? 64, 8, 'ttl'), 7);
  src.copy(hdr, 8);
  dst.copy(hdr, 24);
  if (fragmented) {
    hdr.writeUInt8(proto, IPV6_HLEN);
    hdr.writeUInt16BE(fragOffset | (spec.moreFragments ? 1 : 0), IPV6_HLEN + 2);
    hdr.writeUInt32BE(checkUint(spec.id ?? 0, 32, 'id'), IPV6_HLEN + 4);
  }
  return hdr;
}

function tcpSegment(spec: PacketSpec, payload: Buffer): Buffer {
  const options = padTo4(spec.tcpOptions, 'tcpOptions');
  const hlen = TCP_HLEN + options.length;
  const seg = Buffer.alloc(hlen + payload.length);
  seg.writeUInt16BE(checkUint(spec.sport ?? 49152, 16, 'sport'), 0);
  seg.writeUInt16BE(checkUint(spec.dport ?? 80, 16, 'dport'), 2);
  seg.writeUInt32BE(checkUint(spec.seq ?? 1, 32, 'seq'), 4);
  seg.writeUInt32BE(checkUint(spec.ackSeq ?? 0, 32, 'ackSeq'), 8);
  seg.writeUInt8((hlen / 4) << 4, 12);
  const flags = spec.tcpFlags ?? { ack: true, psh: payload.length > 0 };
  seg.writeUInt8(TCP_FLAG_BITS.reduce((bits, [name, bit]) => (flags[name] ? bits | bit : bits), 0), 13);
  seg.writeUInt16BE(checkUint(spec.window ?? 65535, 16, 'window'), 14);
  options.copy(seg, TCP_HLEN);
  payload.copy(seg, hlen);
  return seg;
}

function udpDatagram(spec: PacketSpec, payload: Buffer): Buffer {
  const dgram = Buffer.alloc(UDP_HLEN + payload.length);
  dgram.writeUInt16BE(checkUint(spec.sport ?? 49152, 16, 'sport'), 0);
  dgram.writeUInt16BE(checkUint(spec.dport ?? 80, 16, 'dport'), 2);
  dgram.writeUInt16BE(checkUint(dgram.length, 16, 'UDP length'), 4);
  payload.copy(dgram, UDP_HLEN);
  return dgram;
}

/** Decode a frame, e.g. BPF_PROG_TEST_RUN's data_out, and verify its checksums. */
export function parsePacket(frame: Uint8Array): ParsedPacket {
  const buf = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
  need(buf, 0, ETH_HLEN, 'Ethernet header');
  const ethertype = buf.readUInt16BE(12);
  const out: ParsedPacket = {
    dstMac: formatMac(buf.subarray(0, 6)),
    srcMac: formatMac(buf.subarray(6, 12)),
    ethertype,
    payload: buf.subarray(ETH_HLEN),
  };
  if (ethertype === ETH_P_IP) parseIpv4(buf, out);
  else if (ethertype === ETH_P_IPV6) parseIpv6(buf, out);
  return out;
}

function parseIpv4(buf: Buffer, out: ParsedPacket): void {
  const at = ETH_HLEN;
  need(buf, at, IPV4_HLEN, 'IPv4 header');
  const verIhl = buf.readUInt8(at);
  if (verIhl >> 4 !== 4) throw new RangeError(`parsePacket: ethertype is IPv4 but the version field is ${verIhl >> 4}`);
  const hlen = (verIhl & 0xf) * 4;
  if (hlen < IPV4_HLEN) throw new RangeError(`parsePacket: IPv4 IHL ${hlen / 4} is below 5`);
  need(buf, at, hlen, 'IPv4 header with options');
  const totalLength = buf.readUInt16BE(at + 2);
  if (totalLength < hlen) throw new RangeError(`parsePacket: IPv4 total length ${totalLength} is below the header length ${hlen}`);
  need(buf, at, totalLength, 'IPv4 packet (total length)');
  const frag = buf.readUInt16BE(at + 6);
  const src = buf.subarray(at + 12, at + 16);
  const dst = buf.subarray(at + 16, at + 20);
  Object.assign(out, {
    family: 4,
    src: formatIp(src),
    dst: formatIp(dst),
    tos: buf.readUInt8(at + 1),
    id: buf.readUInt16BE(at + 4),
    dontFragment: (frag & 0x4000) !== 0,
    moreFragments: (frag & 0x2000) !== 0,
    fragmentOffset: (frag & 0x1fff) * 8,
    ttl: buf.readUInt8(at + 8),
    ipChecksumOk: onesComplementSum(buf.subarray(at, at + hlen)) === 0xffff,
  } satisfies Partial<ParsedPacket>);
  parseL4(buf.readUInt8(at + 9), src, dst, buf.subarray(at + hlen, at + totalLength), out);
}

function parseIpv6(buf: Buffer, out: ParsedPacket): void {
  const at = ETH_HLEN;
  need(buf, at, IPV6_HLEN, 'IPv6 header');
  const first = buf.readUInt32BE(at);
  if (first >>> 28 !== 6) throw new RangeError(`parsePacket: ethertype is IPv6 but the version field is ${first >>> 28}`);
  const end = at + IPV6_HLEN + buf.readUInt16BE(at + 4);
  need(buf, at, end - at, 'IPv6 packet (payload length)');
  const src = buf.subarray(at + 8, at + 24);
  const dst = buf.subarray(at + 24, at + 40);
  Object.assign(out, {
    family: 6,
    src: formatIp(src),
    dst: formatIp(dst),
    tos: (first >>> 20) & 0xff,
    flowLabel: first & 0xfffff,
    ttl: buf.readUInt8(at + 7),
    fragmentOffset: 0,
    moreFragments: false,
  } satisfies Partial<ParsedPacket>);
  let next = buf.readUInt8(at + 6);
  let off = at + IPV6_HLEN;
  for (;;) {
    if (next === NEXTHDR_FRAGMENT) {
      need(buf, off, IPV6_FRAG_HLEN, 'IPv6 fragment header');
      const field = buf.readUInt16BE(off + 2);
      out.fragmentOffset = field & 0xfff8;
      out.moreFragments = (field & 1) !== 0;
      out.id = buf.readUInt32BE(off + 4);
      next = buf.readUInt8(off);
      off += IPV6_FRAG_HLEN;
    } else if (IPV6_EXT_HEADERS.has(next) || next === NEXTHDR_AUTH) {
      need(buf, off, 2, 'IPv6 extension header');
      // AH counts its length in 4-byte units minus 2; the others in 8-byte units minus 1.
      const len = next === NEXTHDR_AUTH ? (buf.readUInt8(off + 1) + 2) * 4 : (buf.readUInt8(off + 1) + 1) * 8;
      need(buf, off, len, 'IPv6 extension header');
      next = buf.readUInt8(off);
      off += len;
    } else {
      break;
    }
    if (off > end) throw new RangeError('parsePacket: IPv6 extension headers run past the payload length');
  }
  parseL4(next, src, dst, buf.subarray(off, end), out);
}

function parseL4(proto: number, src: Buffer, dst: Buffer, l4: Buffer, out: ParsedPacket): void {
  out.proto = proto === IPPROTO_TCP ? 'tcp' : proto === IPPROTO_UDP ? 'udp' : proto;
  out.payload = l4;
  if ((proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) || out.fragmentOffset !== 0) return;
  need(l4, 0, proto === IPPROTO_TCP ? TCP_HLEN : UDP_HLEN, proto === IPPROTO_TCP ? 'TCP header' : 'UDP header');
  out.sport = l4.readUInt16BE(0);
  out.dport = l4.readUInt16BE(2);
  if (proto === IPPROTO_TCP) {
    const hlen = (l4.readUInt8(12) >> 4) * 4;
    if (hlen < TCP_HLEN) throw new RangeError(`parsePacket: TCP data offset ${hlen / 4} is below 5`);
    need(l4, 0, hlen, 'TCP header with options');
    const bits = l4.readUInt8(13);
    out.tcpFlags = Object.fromEntries(TCP_FLAG_BITS.map(([name, bit]) => [name, (bits & bit) !== 0])) as Required<TcpFlags>;
    out.seq = l4.readUInt32BE(4);
    out.ackSeq = l4.readUInt32BE(8);
    out.window = l4.readUInt16BE(14);
    out.payload = l4.subarray(hlen);
  } else {
    out.payload = l4.subarray(UDP_HLEN);
  }
  // A fragment's checksum covers the whole datagram, which this frame does not hold.
  if (out.moreFragments) return;
  const noUdpChecksum = proto === IPPROTO_UDP && src.length === 4 && l4.readUInt16BE(6) === 0;
  out.l4ChecksumOk = noUdpChecksum || onesComplementSum(pseudoHeader(src, dst, proto, l4.length), l4) === 0xffff;
}

/** 6 bytes of 'aa:bb:cc:dd:ee:ff' (':' or '-' separated). */
export function macBytes(mac: string): Buffer {
  const parts = mac.split(/[:-]/);
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{1,2}$/.test(p))) {
    throw new TypeError(`not a MAC address: ${JSON.stringify(mac)}`);
  }
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

export function formatMac(bytes: Uint8Array): string {
  if (bytes.length !== 6) throw new RangeError(`a MAC address has 6 bytes, got ${bytes.length}`);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(':');
}

function protoToNumber(proto: L4Proto): number {
  if (proto === 'tcp') return IPPROTO_TCP;
  if (proto === 'udp') return IPPROTO_UDP;
  if (typeof proto === 'number') return checkUint(proto, 8, 'proto');
  throw new TypeError(`packet: proto must be 'tcp', 'udp' or a protocol number, got ${JSON.stringify(proto)}`);
}

function padTo4(bytes: Uint8Array | undefined, field: string): Buffer {
  const len = bytes?.length ?? 0;
  if (len > 40) throw new RangeError(`packet: ${field} is ${len} bytes, at most 40 fit in the header`);
  const out = Buffer.alloc(Math.ceil(len / 4) * 4); // zero padding is End of Option List for both IPv4 and TCP
  if (bytes) out.set(bytes);
  return out;
}

function checkUint(value: number, bits: number, field: string): number {
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** bits) {
    throw new RangeError(`packet: ${field} must be an integer in [0, 2^${bits}), got ${value}`);
  }
  return value;
}

function need(buf: Buffer, at: number, len: number, what: string): void {
  if (buf.length < at + len) {
    throw new RangeError(`parsePacket: truncated ${what}: need ${len} bytes at offset ${at}, have ${Math.max(0, buf.length - at)}`);
  }
}
