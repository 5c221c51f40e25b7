// The Huffman code of RFC 7541 Appendix B: the strings Appendix C codes, round trips, and the rejects §5.2 requires
// (padding over 7 bits, padding that is not EOS's leading ones, EOS inside a string). The octet-table decoder is
// also checked against a bit-at-a-time decoder over every input of one and two octets.
import { describe, expect, it } from 'vitest';

import {
  EOS,
  HUFFMAN_CODES,
  HUFFMAN_EOS,
  HUFFMAN_LENGTHS,
  HUFFMAN_PADDING_NOT_EOS,
  HUFFMAN_PADDING_TOO_LONG,
  huffmanDecode,
  huffmanDecodedBound,
  huffmanEncode,
  huffmanEncodedLength,
} from '../../src/h2/huffman.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function decode(src: Uint8Array): string | number {
  const dst = Buffer.alloc(huffmanDecodedBound(src.length));
  const n = huffmanDecode(src, 0, src.length, dst);
  return n < 0 ? n : dst.toString('latin1', 0, n);
}

/** Seeded PRNG (mulberry32): the same strings on every run. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Decodes one bit at a time by looking codes up by (length, code): independent of the octet table. */
const byCode = new Map<number, number>();
for (let s = 0; s <= EOS; s++) byCode.set(HUFFMAN_LENGTHS[s]! * 2 ** 32 + HUFFMAN_CODES[s]!, s);
function referenceDecode(src: Uint8Array): string | number {
  let code = 0;
  let len = 0;
  let out = '';
  for (const byte of src) {
    for (let i = 7; i >= 0; i--) {
      code = code * 2 + ((byte >> i) & 1);
      len++;
      const sym = byCode.get(len * 2 ** 32 + code);
      if (sym === undefined) continue;
      if (sym === EOS) return HUFFMAN_EOS;
      out += String.fromCharCode(sym);
      code = 0;
      len = 0;
    }
  }
  if (len > 7) return HUFFMAN_PADDING_TOO_LONG;
  if (code !== 2 ** len - 1) return HUFFMAN_PADDING_NOT_EOS;
  return out;
}

describe('Huffman code (RFC 7541 Appendix B)', () => {
  it('is a complete prefix code of 257 symbols, 5 to 30 bits, EOS = 30 ones', () => {
    let kraft = 0;
    for (let s = 0; s <= EOS; s++) kraft += 2 ** -HUFFMAN_LENGTHS[s]!;
    expect(kraft).toBe(1);
    expect(Math.min(...HUFFMAN_LENGTHS)).toBe(5);
    expect(Math.max(...HUFFMAN_LENGTHS)).toBe(30);
    expect([HUFFMAN_CODES[EOS], HUFFMAN_LENGTHS[EOS]]).toEqual([0x3fffffff, 30]);
    // Spot rows of the table: ' ' '0' 'a' '%' 0 255
    expect([32, 48, 97, 37, 0, 255].map((s) => [HUFFMAN_CODES[s], HUFFMAN_LENGTHS[s]])).toEqual([
      [0x14, 6],
      [0x0, 5],
      [0x3, 5],
      [0x15, 6],
      [0x1ff8, 13],
      [0x3ffffee, 26],
    ]);
  });

  // Every Huffman-coded literal of RFC 7541 C.4 and C.6.
  it.each([
    ['www.example.com', 'f1e3 c2e5 f23a 6ba0 ab90 f4ff'],
    ['no-cache', 'a8eb 1064 9cbf'],
    ['custom-key', '25a8 49e9 5ba9 7d7f'],
    ['custom-value', '25a8 49e9 5bb8 e8b4 bf'],
    ['302', '6402'],
    ['307', '640e ff'],
    ['private', 'aec3 771a 4b'],
    ['Mon, 21 Oct 2013 20:13:21 GMT', 'd07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff'],
    ['Mon, 21 Oct 2013 20:13:22 GMT', 'd07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff'],
    ['https://www.example.com', '9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3'],
    ['gzip', '9bd9 ab'],
    [
      'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1',
      '94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07',
    ],
  ])('%s', (text, coded) => {
    expect(decode(hex(coded))).toBe(text);
    expect(Buffer.from(huffmanEncode(Buffer.from(text, 'latin1'))).toString('hex')).toBe(coded.replace(/\s+/g, ''));
  });

  it('round-trips every single octet and 3,000 random strings', () => {
    for (let s = 0; s < 256; s++) expect(decode(huffmanEncode(Uint8Array.of(s)))).toBe(String.fromCharCode(s));
    const r = rng(7541);
    for (let i = 0; i < 3000; i++) {
      const len = Math.floor(r() * 80);
      // Half over all 256 octets, half over printable ASCII (what headers mostly carry).
      const bytes = Uint8Array.from({ length: len }, () => (i % 2 ? Math.floor(r() * 256) : 32 + Math.floor(r() * 95)));
      const coded = huffmanEncode(bytes);
      expect(coded.length).toBe(huffmanEncodedLength(bytes));
      expect(decode(coded)).toBe(Buffer.from(bytes).toString('latin1'));
    }
  });

  it('decodes into dst at an offset, within the bound', () => {
    const coded = huffmanEncode(Buffer.from('00000000')); // '0' is 5 bits: the densest output
    const dst = Buffer.alloc(3 + huffmanDecodedBound(coded.length));
    expect(huffmanDecode(coded, 0, coded.length, dst, 3)).toBe(8);
    expect(dst.toString('latin1', 3, 11)).toBe('00000000');
  });

  it('rejects padding longer than 7 bits', () => {
    expect(decode(hex('ff'))).toBe(HUFFMAN_PADDING_TOO_LONG); // 8 bits of padding, no symbol
    expect(decode(hex('1fff'))).toBe(HUFFMAN_PADDING_TOO_LONG); // 'a' (00011) then 11 one-bits
    expect(decode(hex('f1e3 c2e5 f23a 6ba0 ab90 f4ff ff'))).toBe(HUFFMAN_PADDING_TOO_LONG);
  });

  it('rejects padding that is not the most significant bits of EOS', () => {
    expect(decode(hex('18'))).toBe(HUFFMAN_PADDING_NOT_EOS); // 'a' then 000
    expect(decode(hex('1e'))).toBe(HUFFMAN_PADDING_NOT_EOS); // 'a' then 110
    expect(decode(hex('f1e3 c2e5 f23a 6ba0 ab90 f4fe'))).toBe(HUFFMAN_PADDING_NOT_EOS); // last bit flipped
  });

  it('rejects EOS inside a string', () => {
    expect(decode(hex('ffff ffff'))).toBe(HUFFMAN_EOS); // EOS (30 ones) + 2 bits of padding
    // 'a' (00011) + EOS + 5 one-bits of padding: 40 bits
    expect(decode(hex('1fff ffff ff'))).toBe(HUFFMAN_EOS);
    // EOS then 'a': the symbol after it does not save it
    expect(decode(hex('ffff fffc 7f'))).toBe(HUFFMAN_EOS);
  });

  it('agrees with a bit-at-a-time decoder on every 1- and 2-octet input', () => {
    const one = new Uint8Array(1);
    const two = new Uint8Array(2);
    const disagreements: string[] = [];
    for (let a = 0; a < 256; a++) {
      one[0] = a;
      if (decode(one) !== referenceDecode(one)) disagreements.push(a.toString(16));
      for (let b = 0; b < 256; b++) {
        two[0] = a;
        two[1] = b;
        if (decode(two) !== referenceDecode(two)) disagreements.push(Buffer.from(two).toString('hex'));
      }
    }
    expect(disagreements).toEqual([]);
  });
});
