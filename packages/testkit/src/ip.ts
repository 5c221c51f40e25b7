import { isIP } from 'node:net';

/** 4 bytes of a dotted-quad IPv4 address. */
export function ipv4Bytes(addr: string): Buffer {
  if (isIP(addr) !== 4) throw new TypeError(`not an IPv4 address: ${JSON.stringify(addr)}`);
  return Buffer.from(addr.split('.').map(Number));
}

/** 16 bytes of an IPv6 address; accepts '::' compression and a trailing dotted quad ('::ffff:198.18.0.1'). */
export function ipv6Bytes(addr: string): Buffer {
  // isIP also accepts zone ids ('fe80::1%eth0'), which have no byte form.
  if (isIP(addr) !== 6 || addr.includes('%')) throw new TypeError(`not an IPv6 address: ${JSON.stringify(addr)}`);
  let text = addr;
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    // Rewrite a trailing dotted quad as two hex groups so one parser handles both forms.
    const quad = ipv4Bytes(text.slice(lastColon + 1));
    text = `${text.slice(0, lastColon + 1)}${quad.readUInt16BE(0).toString(16)}:${quad.readUInt16BE(2).toString(16)}`;
  }
  const [head, rest] = splitOnce(text, '::');
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').map((h) => parseInt(h, 16)));
  const left = parse(head);
  const right = rest === undefined ? [] : parse(rest);
  const groups = rest === undefined
    ? left
    : [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
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
 * Text form of a 4- or 16-byte address. IPv6 follows RFC 5952: lower case, no leading zeros,
 * the first longest run of two or more zero groups as '::', IPv4-mapped addresses as '::ffff:a.b.c.d'.
 */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join('.');
  if (bytes.length !== 16) throw new RangeError(`an IP address has 4 or 16 bytes, got ${bytes.length}`);
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.subarray(0, 10).every((b) => b === 0) && buf.readUInt16BE(10) === 0xffff) {
    return `::ffff:${formatIp(buf.subarray(12))}`;
  }
  const groups = Array.from({ length: 8 }, (_, i) => buf.readUInt16BE(i * 2));
  let best = -1;
  let bestLen = 1; // a single zero group is never compressed (RFC 5952 4.2.2)
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = (gs: number[]): string => gs.map((g) => g.toString(16)).join(':');
  if (best < 0) return hex(groups);
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`;
}

function splitOnce(s: string, sep: string): [string, string | undefined] {
  const at = s.indexOf(sep);
  return at < 0 ? [s, undefined] : [s.slice(0, at), s.slice(at + sep.length)];
}
