// HPACK decoding (RFC 7541): every example of Appendix C, typed from the RFC's hex dumps, with the dynamic table
// after each block as the RFC lists it (entries, their sizes, the table size); then the errors §4–§6 define, which
// break the decoder for good.
import { describe, expect, it } from 'vitest';

import { HpackDecoder, HpackError, type HpackDecoderOptions } from '../../src/h2/hpack.js';
import { huffmanEncode } from '../../src/h2/huffman.js';
import { SIGNAL_FIELDS } from '../../src/h2/signals.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

type Table = { entries: [number, string, string][]; size: number };
interface Step {
  name: string;
  wire: string;
  headers: [string, string][];
  table: Table;
}

/** Decodes the steps in order on one decoder, checking each header list and table state; then again on a decoder
 *  that reads only the signals' values, which must see the same names, sizes and evictions with '' for the rest. */
function run(steps: Step[], options: HpackDecoderOptions = {}): void {
  const d = new HpackDecoder(options);
  const only = new HpackDecoder({ ...options, valuesOf: SIGNAL_FIELDS });
  const skipped = ([n, v]: readonly [string, string]): [string, string] => [n, SIGNAL_FIELDS.has(n) ? v : ''];
  for (const step of steps) {
    expect(d.decodeList(hex(step.wire)), step.name).toEqual(step.headers);
    const entries = Array.from({ length: d.tableLength }, (_, i) => {
      const [n, v] = d.tableEntry(i + 1);
      return [n.length + v.length + 32, n, v];
    });
    expect({ entries, size: d.tableSize }, step.name).toEqual(step.table);
    // A static entry's value comes free; any other value of a field the signals do not read is ''.
    const list = only.decodeList(hex(step.wire));
    expect(list.map((f, i) => (f[1] === step.headers[i]?.[1] ? skipped(f) : f)), `${step.name} (signals' values only)`).toEqual(step.headers.map(skipped));
    const names = Array.from({ length: only.tableLength }, (_, i) => only.tableEntry(i + 1));
    expect({ names, size: only.tableSize }, `${step.name} (signals' values only)`).toEqual({ names: step.table.entries.map(([, n, v]) => skipped([n, v])), size: step.table.size });
  }
}

const EMPTY: Table = { entries: [], size: 0 };

describe('RFC 7541 C.1 integer representation', () => {
  it('10 and 1337 with a 5-bit prefix (as dynamic table size updates), 42 at an octet boundary (a string length)', () => {
    const d = new HpackDecoder({ tableSizeLimit: 4096 });
    d.decode(hex('2a'), () => {}); // C.1.1: 001 01010
    expect(d.tableMaxSize).toBe(10);
    d.decode(hex('3f 9a 0a'), () => {}); // C.1.2: 1337
    expect(d.tableMaxSize).toBe(1337);
    // C.1.3: 42 as the length octet of a 42-octet literal value (7-bit prefix, no Huffman)
    const value = 'x'.repeat(42);
    expect(d.decodeList(Buffer.concat([hex('04 2a'), Buffer.from(value)]))).toEqual([[':path', value]]);
  });
});

describe('RFC 7541 C.2 header field representations', () => {
  it('C.2.1 literal with indexing', () =>
    run([
      {
        name: 'C.2.1',
        wire: '400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572',
        headers: [['custom-key', 'custom-header']],
        table: { entries: [[55, 'custom-key', 'custom-header']], size: 55 },
      },
    ]));
  it('C.2.2 literal without indexing', () =>
    run([{ name: 'C.2.2', wire: '040c 2f73 616d 706c 652f 7061 7468', headers: [[':path', '/sample/path']], table: EMPTY }]));
  it('C.2.3 literal never indexed', () => {
    run([{ name: 'C.2.3', wire: '1008 7061 7373 776f 7264 0673 6563 7265 74', headers: [['password', 'secret']], table: EMPTY }]);
    const seen: boolean[] = [];
    new HpackDecoder().decode(hex('1008 7061 7373 776f 7264 0673 6563 7265 74'), (_n, _v, sensitive) => seen.push(sensitive));
    expect(seen).toEqual([true]);
  });
  it('C.2.4 indexed', () => run([{ name: 'C.2.4', wire: '82', headers: [[':method', 'GET']], table: EMPTY }]));
});

const AUTHORITY: [number, string, string] = [57, ':authority', 'www.example.com'];
const NO_CACHE: [number, string, string] = [53, 'cache-control', 'no-cache'];
const CUSTOM: [number, string, string] = [54, 'custom-key', 'custom-value'];
const request1: [string, string][] = [
  [':method', 'GET'],
  [':scheme', 'http'],
  [':path', '/'],
  [':authority', 'www.example.com'],
];
const request2: [string, string][] = [...request1, ['cache-control', 'no-cache']];
const request3: [string, string][] = [
  [':method', 'GET'],
  [':scheme', 'https'],
  [':path', '/index.html'],
  [':authority', 'www.example.com'],
  ['custom-key', 'custom-value'],
];
const requestTables: Table[] = [
  { entries: [AUTHORITY], size: 57 },
  { entries: [NO_CACHE, AUTHORITY], size: 110 },
  { entries: [CUSTOM, NO_CACHE, AUTHORITY], size: 164 },
];

describe('RFC 7541 C.3 requests without Huffman coding', () => {
  it('C.3.1–C.3.3 on one connection', () =>
    run([
      { name: 'C.3.1', wire: '8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d', headers: request1, table: requestTables[0]! },
      { name: 'C.3.2', wire: '8286 84be 5808 6e6f 2d63 6163 6865', headers: request2, table: requestTables[1]! },
      {
        name: 'C.3.3',
        wire: '8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65',
        headers: request3,
        table: requestTables[2]!,
      },
    ]));
});

describe('RFC 7541 C.4 requests with Huffman coding', () => {
  it('C.4.1–C.4.3 on one connection', () =>
    run([
      { name: 'C.4.1', wire: '8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff', headers: request1, table: requestTables[0]! },
      { name: 'C.4.2', wire: '8286 84be 5886 a8eb 1064 9cbf', headers: request2, table: requestTables[1]! },
      { name: 'C.4.3', wire: '8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf', headers: request3, table: requestTables[2]! },
    ]));
});

const date1 = 'Mon, 21 Oct 2013 20:13:21 GMT';
const date2 = 'Mon, 21 Oct 2013 20:13:22 GMT';
const cookie = 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1';
const response1: [string, string][] = [
  [':status', '302'],
  ['cache-control', 'private'],
  ['date', date1],
  ['location', 'https://www.example.com'],
];
const response2: [string, string][] = [[':status', '307'], ...response1.slice(1)];
const response3: [string, string][] = [
  [':status', '200'],
  ['cache-control', 'private'],
  ['date', date2],
  ['location', 'https://www.example.com'],
  ['content-encoding', 'gzip'],
  ['set-cookie', cookie],
];
const LOCATION: [number, string, string] = [63, 'location', 'https://www.example.com'];
const responseTables: Table[] = [
  { entries: [LOCATION, [65, 'date', date1], [52, 'cache-control', 'private'], [42, ':status', '302']], size: 222 },
  { entries: [[42, ':status', '307'], LOCATION, [65, 'date', date1], [52, 'cache-control', 'private']], size: 222 },
  { entries: [[98, 'set-cookie', cookie], [52, 'content-encoding', 'gzip'], [65, 'date', date2]], size: 215 },
];
// "SETTINGS_HEADER_TABLE_SIZE is set to the value of 256 octets, causing some evictions to occur."
const settings256 = { tableSizeLimit: 256 };

const responseWires = [
  `4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
   2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d`,
  '4803 3330 37c1 c0bf',
  `88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
   54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
   5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31`,
];

describe('RFC 7541 C.5 responses without Huffman coding (256-octet table)', () => {
  it('C.5.1–C.5.3 on one connection, with evictions', () =>
    run(
      [
        {
          name: 'C.5.1',
          wire: responseWires[0]!,
          headers: response1,
          table: responseTables[0]!,
        },
        { name: 'C.5.2', wire: responseWires[1]!, headers: response2, table: responseTables[1]! },
        {
          name: 'C.5.3',
          wire: responseWires[2]!,
          headers: response3,
          table: responseTables[2]!,
        },
      ],
      settings256,
    ));
});

describe('RFC 7541 C.6 responses with Huffman coding (256-octet table)', () => {
  it('C.6.1–C.6.3 on one connection, with evictions', () =>
    run(
      [
        {
          name: 'C.6.1',
          wire: `4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
                 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3`,
          headers: response1,
          table: responseTables[0]!,
        },
        { name: 'C.6.2', wire: '4883 640e ffc1 c0bf', headers: response2, table: responseTables[1]! },
        {
          name: 'C.6.3',
          wire: `88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
                 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
                 9587 3160 65c0 03ed 4ee5 b106 3d50 07`,
          headers: response3,
          table: responseTables[2]!,
        },
      ],
      settings256,
    ));
});

/** Decodes wire on a fresh decoder (after `before` blocks), expecting an HpackError with this reason. */
function rejects(wire: string, reason: string, options: HpackDecoderOptions = {}, before: string[] = []): HpackDecoder {
  const d = new HpackDecoder(options);
  for (const b of before) d.decode(hex(b), () => {});
  let caught: unknown;
  try {
    d.decode(hex(wire), () => {});
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(HpackError);
  expect((caught as HpackError).reason).toBe(reason);
  expect(d.broken).toBe(caught);
  return d;
}

describe('HPACK decoding errors', () => {
  it.each([
    ['index 0', '80', 'index-zero'],
    ['an index past an empty dynamic table', 'be', 'index-out-of-range'],
    ['a literal name index past the dynamic table', '7e 01 61', 'index-out-of-range'],
    ['a block ending inside an integer', '7f', 'truncated'],
    ['a block ending before the value', '44', 'truncated'],
    ['a string longer than the block', '04 05 2f 61', 'truncated'],
    ['a 2^31-octet string in a 9-octet block (no allocation for it)', '04 7f ff ff ff ff 07 61 62', 'integer-overflow'],
    ['a 2^30-octet string in a 9-octet block', '04 7f 81 ff ff ff 03 61', 'truncated'],
    ['an integer with 6 continuation octets', 'ff 80 80 80 80 80 00', 'integer-overflow'],
    ['a Huffman value with EOS', '04 84 ff ff ff ff', 'huffman-eos'],
    ['a Huffman value with 8 bits of padding', '04 81 ff', 'huffman-padding'],
    ['a Huffman value with padding not all ones', '04 81 18', 'huffman-padding'],
    ['a size update after a field', '82 20', 'table-size-update-late'],
    ['a size update above SETTINGS_HEADER_TABLE_SIZE', '3f e2 1f', 'table-size-over-limit'], // 4097
  ])('%s', (_name, wire, reason) => {
    rejects(wire, reason);
  });

  it('an index one past the last dynamic entry, after C.3.1 (one entry: index 62 valid, 63 not)', () => {
    const d = rejects('bf', 'index-out-of-range', {}, ['8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d']);
    expect(d.broken!.message).toBe('HPACK: index 63 past the dynamic table (1 entries, indices 62..62)');
  });

  it('a size update above the decoder cap even when SETTINGS allow it', () => {
    rejects('3f e1 ff 03', 'table-size-over-limit', { tableSizeLimit: 1 << 20, maxTableSize: 8192 }); // 65536
  });

  it('a header list over maxHeaderListSize (names + values + 32 per field)', () => {
    // :method GET (42) + :scheme http (43) = 85
    new HpackDecoder({ maxHeaderListSize: 85 }).decode(hex('8286'), () => {});
    rejects('8286', 'header-list-too-large', { maxHeaderListSize: 84 });
  });

  it('several size updates at the start of a block are allowed (§4.2), the last one wins', () => {
    const d = new HpackDecoder();
    expect(d.decodeList(hex('20 3f e1 1f 82'))).toEqual([[':method', 'GET']]); // 0, then 4096
    expect(d.tableMaxSize).toBe(4096);
  });

  it('after an error the decoder refuses every later block, naming the first error', () => {
    const d = rejects('be', 'index-out-of-range');
    let caught: HpackError | undefined;
    try {
      d.decode(hex('82'), () => {});
    } catch (err) {
      caught = err as HpackError;
    }
    expect(caught?.reason).toBe('broken');
    expect(caught?.cause).toBe(d.broken);
    expect(caught?.message).toMatch(/^HPACK: decoder broken by an earlier error \(index-out-of-range\)/);
  });

  it('a block reported lost breaks the decoder', () => {
    const d = new HpackDecoder();
    d.decode(hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'), () => {});
    d.markLost('ring buffer record 17 dropped');
    expect(d.broken?.reason).toBe('lost');
    expect(() => d.decode(hex('be'), () => {})).toThrow('HPACK: decoder broken by an earlier error (lost): HPACK: ring buffer record 17 dropped; the dynamic table is out of step');
  });

  it('a sink that throws breaks the decoder too (its block was half applied)', () => {
    const d = new HpackDecoder();
    expect(() =>
      d.decode(hex('8286'), () => {
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(d.broken?.reason).toBe('broken');
  });
});

describe('HPACK dynamic table', () => {
  it('an entry larger than the table empties it, and is not added (§4.4)', () => {
    const d = new HpackDecoder({ tableSizeLimit: 64 });
    d.decode(hex('3f 21'), () => {}); // size update to 64
    d.decodeList(hex('41 03 61 62 63')); // :authority abc: 10 + 3 + 32 = 45
    expect([d.tableLength, d.tableSize]).toEqual([1, 45]);
    // 10 + 30 + 32 = 72 > 64
    expect(d.decodeList(Buffer.concat([hex('41 1e'), Buffer.from('x'.repeat(30))]))).toEqual([[':authority', 'x'.repeat(30)]]);
    expect([d.tableLength, d.tableSize]).toEqual([0, 0]);
  });

  it('a size update evicts the oldest entries to fit; 0 empties the table', () => {
    const d = new HpackDecoder();
    d.decode(hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'), () => {});
    d.decode(hex('8286 84be 5808 6e6f 2d63 6163 6865'), () => {});
    expect(d.tableSize).toBe(110);
    d.decode(hex('3f 1e'), () => {}); // 61: only cache-control: no-cache (53) fits
    expect([d.tableLength, d.tableSize, d.tableEntry(1)]).toEqual([1, 53, ['cache-control', 'no-cache']]);
    d.decode(hex('20'), () => {});
    expect([d.tableLength, d.tableSize, d.tableMaxSize]).toEqual([0, 0, 0]);
    // With a zero-size table, an incremental literal is decoded but not kept.
    expect(d.decodeList(hex('41 01 61'))).toEqual([[':authority', 'a']]);
    expect(d.tableLength).toBe(0);
  });

  it('a lower SETTINGS_HEADER_TABLE_SIZE shrinks the table at once; a higher one waits for a size update', () => {
    const d = new HpackDecoder();
    d.decode(hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'), () => {});
    d.decode(hex('8286 84be 5808 6e6f 2d63 6163 6865'), () => {});
    d.setTableSizeLimit(100);
    expect([d.tableMaxSize, d.tableSize]).toEqual([100, 53]);
    d.setTableSizeLimit(8192);
    expect(d.tableMaxSize).toBe(100);
    d.decode(hex('3f e1 3f'), () => {}); // 8192
    expect(d.tableMaxSize).toBe(8192);
  });

  it('holds at most maxTableSize octets however many entries arrive', () => {
    const d = new HpackDecoder({ tableSizeLimit: 1024, maxTableSize: 1024 });
    d.decode(hex('3f e1 07'), () => {}); // 1024
    for (let i = 0; i < 200; i++) {
      const v = Buffer.from(`v${i}`);
      d.decode(Buffer.concat([hex('40 01 6b'), Uint8Array.of(v.length), v]), () => {}); // k: v<i>
    }
    expect(d.tableSize).toBeLessThanOrEqual(1024);
    expect(d.tableLength).toBe(Math.floor(1024 / (1 + 4 + 32)));
    expect(d.tableEntry(1)).toEqual(['k', 'v199']);
    expect(d.stats.evicted).toBe(200 - d.tableLength);
  });

  it('a size update to a larger table keeps the entries in order (the ring is re-laid after wrapping)', () => {
    const d = new HpackDecoder(settings256); // an 8-slot ring
    const r = responseWires;
    for (const wire of [r[0]!, r[1]!, r[2]!]) d.decode(hex(wire), () => {}); // C.5.1–C.5.3: the third insert of C.5.3 wraps
    d.setTableSizeLimit(4096);
    d.decode(hex('3f e1 1f'), () => {}); // 4096
    expect(d.decodeList(hex('be bf c0'))).toEqual([
      ['set-cookie', cookie],
      ['content-encoding', 'gzip'],
      ['date', date2],
    ]);
    for (let i = 0; i < 20; i++) d.decode(Buffer.concat([hex('40 01 6b 02'), Buffer.from(`v${i % 10}`)]), () => {});
    expect(d.tableLength).toBe(23);
    expect(d.tableEntry(23)).toEqual(['date', date2]);
    expect(d.tableEntry(21)).toEqual(['set-cookie', cookie]);
    expect(d.tableEntry(1)).toEqual(['k', 'v9']);
    expect(d.tableSize).toBe(215 + 20 * 35);
  });

  it('checks its options', () => {
    expect(() => new HpackDecoder({ maxTableSize: -1 })).toThrow('HpackDecoder: maxTableSize must be in [0, 16777216], got -1');
    expect(() => new HpackDecoder({ tableSizeLimit: 1.5 })).toThrow('HpackDecoder: tableSizeLimit must be an integer, got 1.5');
    expect(() => new HpackDecoder().tableEntry(1)).toThrow('tableEntry: 1 is not in [1, 0]');
  });
});

describe('HPACK on hostile input', () => {
  /** Seeded PRNG (mulberry32): the same inputs on every run. */
  function rng(seed: number): () => number {
    return () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  it('20,000 random and mutated blocks: decoded or refused with an HpackError, never another error, tables within bounds', () => {
    const r = rng(41);
    const valid = [...responseWires, '8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff', '8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf'].map(hex);
    const reasons = new Map<string, number>();
    let decoded = 0;
    let largest = 0;
    for (let i = 0; i < 20_000; i++) {
      let block: Buffer;
      if (i % 2) {
        block = Buffer.from(Array.from({ length: Math.floor(r() * 40) }, () => Math.floor(r() * 256)));
      } else {
        block = Buffer.from(valid[i % valid.length]!);
        for (let k = 0; k < 1 + Math.floor(r() * 3); k++) block[Math.floor(r() * block.length)] = Math.floor(r() * 256);
      }
      const d = new HpackDecoder({ tableSizeLimit: 4096, maxTableSize: 4096, maxHeaderListSize: 8192 });
      try {
        d.decode(block, () => {});
        decoded++;
      } catch (err) {
        if (!(err instanceof HpackError)) throw err;
        reasons.set(err.reason, (reasons.get(err.reason) ?? 0) + 1);
      }
      largest = Math.max(largest, d.tableSize);
    }
    expect(largest).toBeLessThanOrEqual(4096);
    expect(decoded).toBeGreaterThan(0);
    // The common refusals all occur (the exact mix is whatever the seed gives).
    for (const reason of ['truncated', 'index-out-of-range', 'huffman-padding']) expect(reasons.get(reason), reason).toBeGreaterThan(0);
  });
});

describe('HPACK blocks that change nothing in the table, repeated on an unchanged table: decoded once per decoder', () => {
  const str = (s: string) => {
    const h = huffmanEncode(Buffer.from(s, 'latin1'));
    return Buffer.concat([Buffer.from([0x80 | h.length]), h]);
  };
  // h2load's requests: the first inserts :authority, user-agent and accept-encoding (literals with incremental
  // indexing); every later one is the same six indexed fields, three of them dynamic entries (64, 63, 62).
  const first = Buffer.concat([hex('82 86 84 41'), str('127.0.0.18:18440'), hex('7a'), str('h2load nghttp2/1.52.0'), hex('50'), str('gzip, deflate')]);
  const repeat = hex('82 86 84 c0 bf be');
  const fieldsAndTable = (d: HpackDecoder, block: Buffer) => {
    const fields: [string, string, boolean][] = [];
    d.decode(block, (n, v, s) => fields.push([n, v, s]));
    const table = Array.from({ length: d.tableLength }, (_, i) => d.tableEntry(i + 1));
    return { fields, table, size: d.tableSize };
  };

  it('replays them exactly, and decodes again once anything changed the table', () => {
    const blocks: Buffer[] = [first];
    for (let i = 0; i < 2000; i++) {
      blocks.push(repeat);
      // Now and then an insert (the same bytes then name other entries), a size update (to 256 octets) followed by
      // the first block again, a block reading the table with a literal value, and a pure static one.
      if (i % 97 === 5) blocks.push(Buffer.concat([hex('7a'), str(`agent-${i}`)]));
      if (i % 89 === 7) blocks.push(Buffer.concat([hex('3f e1 01'), first]));
      if (i % 83 === 3) blocks.push(Buffer.concat([hex('82 c0'), hex('0f 2a'), str('x')]));
      if (i % 79 === 2) blocks.push(hex('82 86 84'));
    }
    for (const options of [{}, { valuesOf: SIGNAL_FIELDS }, { tableSizeLimit: 256, maxTableSize: 256 }]) {
      const d = new HpackDecoder(options);
      const every = new HpackDecoder({ ...options, reuse: false });
      for (const [i, b] of blocks.entries()) expect(fieldsAndTable(d, b), `block ${i}`).toEqual(fieldsAndTable(every, b));
      expect({ ...d.stats, reused: 0 }).toEqual({ ...every.stats, reused: 0 });
      // Decoded again only after a block that changed the table (about 50 of them).
      expect(d.stats.reused).toBeGreaterThan(1900);
    }
    // A lower table size limit evicts: the same bytes then refer past the table, and fail as decoding fails.
    const d = new HpackDecoder();
    d.decode(first, () => {});
    d.decode(repeat, () => {});
    d.setTableSizeLimit(64);
    expect(() => d.decode(repeat, () => {})).toThrow(expect.objectContaining({ reason: 'index-out-of-range' }));
  });
});

describe('HPACK blocks that refer to no dynamic entry, decoded once', () => {
  // nginx's response block (captured from bench:metrics' h2load run): :status 200 indexed, then server, date,
  // content-type and content-length as literals with incremental indexing, Huffman-coded. Every response of a
  // connection repeats it byte for byte but the date, and inserts four entries; no field refers to the table.
  const str = (s: string) => {
    const h = huffmanEncode(Buffer.from(s, 'latin1'));
    return Buffer.concat([Buffer.from([0x80 | h.length]), h]);
  };
  const nginx = (date: string) => Buffer.concat([hex('88 76'), str('nginx/1.22.1'), hex('61'), str(date), hex('5f'), str('text/plain'), hex('5c 04'), Buffer.from('1024')]);
  const fieldsAndTable = (d: HpackDecoder, block: Buffer) => {
    const fields: [string, string, boolean][] = [];
    d.decode(block, (n, v, s) => fields.push([n, v, s]));
    const table = Array.from({ length: d.tableLength }, (_, i) => d.tableEntry(i + 1));
    return { fields, table, size: d.tableSize };
  };

  it('replays them exactly: fields, table, evictions and errors as a decoder that decodes every block', () => {
    const blocks: Buffer[] = [];
    for (let i = 0; i < 2000; i++) {
      blocks.push(nginx(`Mon, 07 Dec 2026 18:${String(10 + Math.floor(i / 100)).padStart(2, '0')}:00 GMT`));
      // Now and then a block that does refer to the table (the newest entry, then the fourth), one with a
      // literal name from it, and one that starts with size updates (to 200 octets, evicting, then 256).
      if (i % 97 === 5) blocks.push(hex('88 be'));
      if (i % 89 === 7) blocks.push(hex('88 c1'));
      if (i % 83 === 3) blocks.push(Buffer.concat([hex('7e'), str('x')]));
      if (i % 211 === 11) blocks.push(Buffer.concat([hex('3f a9 01 3f e1 01'), nginx('Mon, 07 Dec 2026 18:00:00 GMT')]));
    }
    for (const options of [{ tableSizeLimit: 4096 }, { tableSizeLimit: 4096, valuesOf: SIGNAL_FIELDS }, { tableSizeLimit: 256, maxTableSize: 256 }]) {
      const d = new HpackDecoder(options);
      const every = new HpackDecoder({ ...options, reuse: false });
      for (const [i, b] of blocks.entries()) expect(fieldsAndTable(d, b), `block ${i}`).toEqual(fieldsAndTable(every, b));
      expect({ ...d.stats, reused: 0 }).toEqual({ ...every.stats, reused: 0 });
      expect(every.stats.reused).toBe(0);
      // Decoded once per date (20) and after each block that changed what a replay would have to check.
      expect(d.stats.reused).toBeGreaterThan(1900);
    }
    // A block that failed is never replayed: the same bytes fail again, on any decoder.
    const bad = Buffer.concat([nginx('Mon, 07 Dec 2026 18:00:00 GMT'), hex('5c 82 ff ff')]);
    for (let i = 0; i < 2; i++) {
      const d = new HpackDecoder();
      expect(() => d.decode(bad, () => {})).toThrow(expect.objectContaining({ reason: 'huffman-padding' }));
      expect(d.stats.reused).toBe(0);
    }
    // In place inside a larger buffer: the same fields; an error's offset counts from the block's start.
    const inside = Buffer.concat([Buffer.from('xyz'), blocks[0]!, Buffer.from('z')]);
    const fields: string[] = [];
    new HpackDecoder().decodeAt(inside, 3, 3 + blocks[0]!.length, (n) => fields.push(n));
    expect(fields).toEqual([':status', 'server', 'date', 'content-type', 'content-length']);
    const offsetOf = (decode: (d: HpackDecoder) => void) => {
      try {
        decode(new HpackDecoder({ reuse: false }));
      } catch (e) {
        return (e as HpackError).offset;
      }
    };
    expect(offsetOf((d) => d.decodeAt(Buffer.concat([Buffer.from('xyz'), bad]), 3, 3 + bad.length, () => {}))).toBe(bad.length - 3);
    expect(offsetOf((d) => d.decode(bad, () => {}))).toBe(bad.length - 3);
    expect(() => new HpackDecoder().decodeAt(inside, 3, inside.length + 1, () => {})).toThrow(/block \[3, \d+\) outside the \d+-octet buffer/);
    // A header list over a decoder's bound is refused by it, though another decoder replays the same block.
    const small = new HpackDecoder({ maxHeaderListSize: 100 });
    expect(() => small.decode(blocks[0]!, () => {})).toThrow(expect.objectContaining({ reason: 'header-list-too-large' }));
  });
});
