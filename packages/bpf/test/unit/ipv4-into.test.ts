// ipv4Into (the dotted quads of a 100,000-entry table apply, parsed by hand) accepts exactly what node:net's
// isIPv4 accepts, and writes the address's bytes; anything else is left to ipToBytes' IPv6 parser.
import { isIPv4 } from 'node:net';

import { describe, expect, it } from 'vitest';

import { codec as c } from '../../src/index.js';

describe('ipv4Into', () => {
  it('agrees with isIPv4 on edge cases and 100,000 random strings of digits and dots', () => {
    const cases = ['1.2.3.4', '0.0.0.0', '255.255.255.255', '256.1.1.1', '01.2.3.4', '1.2.3', '1.2.3.4.', '1.2.3.4.5', '.1.2.3', '1..2.3', 'a.b.c.d', '1.2.3.04', ' 1.2.3.4', '1.2.3.4 ', '1.2.3.2555', '::1', '::ffff:1.2.3.4', '', '1.2.3.-4'];
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 100_000; i++) cases.push(Array.from({ length: 1 + Math.floor(rnd() * 16) }, () => '0123456789.'[Math.floor(rnd() * 11)]).join(''));
    const wrong: string[] = [];
    for (const s of cases) {
      const b = Buffer.alloc(6, 0xee);
      const ok = c.ipv4Into(s, b, 1);
      const untouched = b.equals(Buffer.alloc(6, 0xee));
      if (ok !== isIPv4(s) || (ok ? b.subarray(1, 5).join('.') !== s || b[0] !== 0xee || b[5] !== 0xee : !untouched)) wrong.push(s);
    }
    expect(wrong).toEqual([]);
    expect(c.ipToBytes('10.1.2.3')).toEqual(Buffer.from([10, 1, 2, 3]));
    expect(c.ipToBytes('::ffff:1.2.3.4')).toHaveLength(16);
  });
});
