// EpEntries and SvcEntries lay entries out as the codecs do, checks included: what the table writes with
// setBatchEncoded is what it wrote entry by entry.
import { describe, expect, it } from 'vitest';

import { addr16, EpEntries, epCheck, epKey, epValue, familyOf, IPPROTO, MAX_BACKENDS, SvcEntries, svcCheck, svcKey, svcValue } from '../../src/maps.js';

describe('EpEntries', () => {
  it('encodes 3,000 entries (IPv4 and IPv6, growing past its first buffers) as the codecs do', () => {
    const e = new EpEntries();
    const want: Buffer[][] = [];
    for (let i = 0; i < 3_000; i++) {
      const ip = i % 3 === 0 ? `fd00::${i.toString(16)}` : `10.${i >> 8}.${i & 0xff}.${i % 7}`;
      const key = { svcId: 1 + i * 7919, version: i % 5, backend: i % 16, index: i % 1000 };
      const value = { addr: addr16(ip), port: 1 + ((i * 31) % 65535), family: familyOf(ip), check: 0 };
      value.check = epCheck(key, value);
      e.push(key.svcId, key.version, key.backend, key.index, value.addr, value.family, value.port);
      const k = Buffer.alloc(epKey.size);
      const v = Buffer.alloc(epValue.size);
      epKey.encode(key, k, 0);
      epValue.encode(value, v, 0);
      want.push([k, v]);
    }
    expect(e.count).toBe(3_000);
    const { keys, values } = e.slice(0, e.count);
    expect(keys).toEqual(Buffer.concat(want.map(([k]) => k!)));
    expect(values).toEqual(Buffer.concat(want.map(([, v]) => v!)));
    expect(e.keyList()[2_999]).toEqual({ svcId: 1 + 2_999 * 7919, version: 2_999 % 5, backend: 2_999 % 16, index: 999 });
  });

  it('encodes 2,000 service entries as the codecs do', () => {
    const e = new SvcEntries();
    const want: Buffer[][] = [];
    for (let i = 0; i < 2_000; i++) {
      const ip = i % 4 === 0 ? `fd00::${i.toString(16)}` : `10.9.${i >> 8}.${i & 0xff}`;
      const key = { addr: addr16(ip), port: 1 + ((i * 17) % 65535), proto: i % 2 ? IPPROTO.UDP : IPPROTO.TCP, family: familyOf(ip) };
      const n = 1 + (i % MAX_BACKENDS);
      const cumWeight = Array.from({ length: MAX_BACKENDS }, (_, b) => (b < n ? (b + 1) * (i + 3) : 0));
      const nendpoints = Array.from({ length: MAX_BACKENDS }, (_, b) => (b < n ? (i + b) % 9 : 0));
      const value = { id: 1 + i * 104_729, version: i % 7, nbackends: n, totalWeight: n * (i + 3), cumWeight, nendpoints, check: 0 };
      value.check = svcCheck(key, value);
      e.push(key, value);
      const k = Buffer.alloc(svcKey.size);
      const v = Buffer.alloc(svcValue.size);
      svcKey.encode(key, k, 0);
      svcValue.encode(value, v, 0);
      want.push([k, v]);
    }
    const { keys, values } = e.slice(0, e.count);
    expect(keys).toEqual(Buffer.concat(want.map(([k]) => k!)));
    expect(values).toEqual(Buffer.concat(want.map(([, v]) => v!)));
  });
});
