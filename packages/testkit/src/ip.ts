import { isIP } from 'node:net';

import { codec } from '@mesh/bpf';

/** 4 bytes of a dotted-quad IPv4 address. */
export function ipv4Bytes(addr: string): Buffer {
  if (isIP(addr) !== 4) throw new TypeError(`not an IPv4 address: ${JSON.stringify(addr)}`);
  return codec.ipToBytes(addr);
}

/** 16 bytes of an IPv6 address; accepts '::' compression and a trailing dotted quad ('::ffff:198.18.0.1'). */
export function ipv6Bytes(addr: string): Buffer {
  // isIP also accepts zone ids ('fe80::1%eth0'), which have no byte form.
  if (isIP(addr) !== 6 || addr.includes('%')) throw new TypeError(`not an IPv6 address: ${JSON.stringify(addr)}`);
  return codec.ipToBytes(addr);
}

/** Bytes of an IPv4 (4) or IPv6 (16) address string. */
export function ipBytes(addr: string): Buffer {
  switch (isIP(addr)) {
    case 4: return ipv4Bytes(addr);
    case 6: return ipv6Bytes(addr);
    default: throw new TypeError(`not an IP address: ${JSON.stringify(addr)}`);
  }
}

/** Family (4 or 6) of an address string; throws on anything else. */
export function ipFamily(addr: string): 4 | 6 {
  const family = isIP(addr);
  if (family === 0) throw new TypeError(`not an IP address: ${JSON.stringify(addr)}`);
  return family as 4 | 6;
}

/**
 * Text form of a 4- or 16-byte address: the codec's (RFC 5952), but IPv4-mapped addresses as '::ffff:a.b.c.d',
 * as Node's sockets name them.
 */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 16 && bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return `::ffff:${codec.bytesToIp(bytes.subarray(12))}`;
  }
  return codec.bytesToIp(bytes);
}
