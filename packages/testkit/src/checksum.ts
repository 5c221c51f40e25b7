/**
 * Ones'-complement sum of big-endian 16-bit words over the buffers taken as one byte string
 * (RFC 1071), folded to 16 bits. An odd trailing byte is padded with zero.
 */
export function onesComplementSum(...parts: Uint8Array[]): number {
  let sum = 0;
  let odd: number | undefined; // a byte left over from the previous part, high half of the next word
  for (const part of parts) {
    let i = 0;
    if (odd !== undefined && part.length > 0) {
      sum += (odd << 8) | part[0]!;
      odd = undefined;
      i = 1;
    }
    for (; i + 1 < part.length; i += 2) sum += (part[i]! << 8) | part[i + 1]!;
    if (i < part.length) odd = part[i]!;
    sum = fold(sum);
  }
  if (odd !== undefined) sum += odd << 8;
  return fold(sum);
}

// Arithmetic rather than bitwise: bitwise operators truncate to 32 bits and a long input sums past that.
function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return sum;
}

/** Internet checksum: the complement of the ones'-complement sum. */
export function internetChecksum(...parts: Uint8Array[]): number {
  return ~onesComplementSum(...parts) & 0xffff;
}

/** Pseudo-header that TCP and UDP checksums cover (RFC 793 / RFC 8200 8.1); addresses are 4 or 16 bytes. */
export function pseudoHeader(src: Uint8Array, dst: Uint8Array, proto: number, l4Length: number): Buffer {
  if (src.length !== dst.length || (src.length !== 4 && src.length !== 16)) {
    throw new RangeError(`pseudo-header needs two 4- or two 16-byte addresses, got ${src.length} and ${dst.length}`);
  }
  if (src.length === 4) {
    const tail = Buffer.alloc(4);
    tail.writeUInt8(proto, 1);
    tail.writeUInt16BE(l4Length, 2);
    return Buffer.concat([src, dst, tail]);
  }
  const tail = Buffer.alloc(8);
  tail.writeUInt32BE(l4Length, 0);
  tail.writeUInt8(proto, 7);
  return Buffer.concat([src, dst, tail]);
}
