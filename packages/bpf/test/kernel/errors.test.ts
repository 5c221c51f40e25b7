// Bad input fails before any syscall with TypeError/RangeError; kernel refusals are BpfErrors that say why.
import { describePrivileged } from '@mesh/testkit';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

import { BpfError, BpfMap, codec as c, ObjectSpec } from '../../src/index.js';
import { l4Counters, l4Key, testprog, testprogFile, testprogs } from '../programs.js';

const tc = testprogs.tc_filter;

describePrivileged('argument checks', () => {
  it('a codec whose size differs from the kernel key or value fails at open, naming both sizes', () => {
    using obj = testprog(tc.name).load();
    expect(() => obj.map(tc.maps.verdicts, { key: c.u16, value: c.u64 })).toThrow(
      /verdicts: key codec u16 is 2 bytes, the kernel's key is 4/,
    );
    expect(() => obj.perCpuMap(tc.maps.port_stats, { key: l4Key, value: c.u64 })).toThrow(/value codec u64 is 8 bytes, the kernel's value is 16/);
    expect(() => obj.map(tc.maps.port_stats, { key: l4Key, value: l4Counters })).toThrow(/open it with perCpuMap/);
    expect(() => obj.map('no_such_map', { key: c.u32, value: c.u32 })).toThrow(expect.objectContaining({ code: 'ENOENT', op: 'map_open' }));
  });

  it('wrong key/value types and out-of-range values or flags are TypeError/RangeError', () => {
    using m = BpfMap.create({ type: 'hash', maxEntries: 4 }, { key: c.u32, value: c.struct({ a: c.u16, b: c.ipv4 }) });
    expect(() => m.get('1' as unknown as number)).toThrow(TypeError);
    expect(() => m.get(-1)).toThrow(RangeError);
    expect(() => m.get(2 ** 32)).toThrow(RangeError);
    expect(() => m.set(1, { a: 70000, b: '1.2.3.4' })).toThrow(/field a: u16 value 70000 is out of range/);
    expect(() => m.set(1, { a: 1, b: '1.2.3' })).toThrow(/field b: ipv4 value must be an IPv4 address/);
    expect(() => m.set(1, { a: 1 } as never)).toThrow(/field b is missing/);
    expect(() => m.set(1, { a: 1, b: '1.2.3.4' }, 'sometimes' as never)).toThrow(RangeError);
    expect(() => m.set(1, { a: 1, b: '1.2.3.4' }, -1)).toThrow(RangeError);
    expect(() => m.getBatch({ batchSize: 0 })).toThrow(RangeError);
    // Nothing was written by any of the failed calls.
    expect([...m.keys()]).toEqual([]);
  });

  it('the addon refuses buffers shorter than the map needs, so the kernel never reads or writes past them', () => {
    using m = BpfMap.create({ type: 'hash', maxEntries: 16 }, { key: c.u32, value: c.u64 });
    const h = m.nativeHandle();
    expect(() => h.lookup(Buffer.alloc(1), Buffer.alloc(8), 0)).toThrow(/key buffer has 1 bytes, needs 4/);
    expect(() => h.lookup(Buffer.alloc(4), Buffer.alloc(4), 0)).toThrow(/value buffer has 4 bytes, needs 8/);
    expect(() => h.update(Buffer.alloc(4), Buffer.alloc(7), 0)).toThrow(RangeError);
    expect(() => h.updateBatch(Buffer.alloc(4), Buffer.alloc(8), 1000, 0)).toThrow(/keys buffer has 4 bytes, needs 4000/);
    expect(() => h.deleteBatch(Buffer.alloc(8), 3)).toThrow(RangeError);
    expect(() => h.lookupBatch(null, Buffer.alloc(8), Buffer.alloc(4), Buffer.alloc(8), 2, 0, false)).toThrow(RangeError);
    expect([...m.keys()]).toEqual([]);
  });

  it('scratch buffers detached from JS (their ArrayBuffer transferred) are refused, never written through', () => {
    using m = BpfMap.create({ type: 'hash', maxEntries: 4 }, { key: c.u32, value: c.u32 });
    m.set(1, 0xdeadbeef);
    const h = m.nativeHandle();
    const key = Buffer.alloc(4);
    key.writeUInt32LE(1);
    const value = Buffer.alloc(4);
    h.bindScratch(key, value);
    expect(h.lookupScratch()).toBe(true);
    expect(value.readUInt32LE(0)).toBe(0xdeadbeef);
    value.fill(0);
    // The memory moves to another ArrayBuffer; the one bound is left empty.
    const moved = new Uint8Array(structuredClone(value.buffer, { transfer: [value.buffer] }));
    expect(value.length).toBe(0);
    expect(() => h.lookupScratch()).toThrow(/scratch buffer was detached/);
    expect([...moved]).toEqual([0, 0, 0, 0]);
    const key2 = Buffer.alloc(4);
    h.bindScratch(key2, Buffer.alloc(4));
    structuredClone(key2.buffer, { transfer: [key2.buffer] });
    expect(() => h.updateScratch(0)).toThrow(TypeError);
    expect(() => h.deleteScratch()).toThrow(TypeError);
    // Nothing was written: the entry is as it was (read with buffers of the call's own).
    const out = Buffer.alloc(4);
    expect(h.lookup(key, out, 0)).toBe(true);
    expect(out.readUInt32LE(0)).toBe(0xdeadbeef);
    expect(m.count()).toBe(1);
  });

  it('map creation checks type, size and name before the syscall', () => {
    expect(() => BpfMap.create({ type: 'hashy' as never, maxEntries: 1 }, { key: c.u32, value: c.u32 })).toThrow(/unknown map type "hashy"/);
    expect(() => BpfMap.create({ type: 'hash', maxEntries: 0 }, { key: c.u32, value: c.u32 })).toThrow(RangeError);
    expect(() => BpfMap.create({ type: 'hash', maxEntries: 1, name: 'x'.repeat(16) }, { key: c.u32, value: c.u32 })).toThrow(RangeError);
    // The kernel's own refusal: a hash needs a key.
    expect(() => BpfMap.create({ type: 'hash', maxEntries: 1, name: 'keyless' }, { key: c.none, value: c.u32 })).toThrow(
      expect.objectContaining({ op: 'map_create', subject: 'keyless', code: 'EINVAL' }),
    );
  });

  it('every handle: close() twice is fine, use after close is a TypeError', () => {
    const obj = testprog(tc.name).load();
    const m = obj.map(tc.maps.verdicts, { key: c.u32, value: c.u64 });
    const p = obj.program(tc.programs.tc_filter);
    obj.close();
    // Closing the object closed what was opened from it.
    expect(m.isClosed && p.isClosed).toBe(true);
    obj.close();
    m.close();
    expect(() => m.get(0)).toThrow(TypeError);
    expect(() => p.testRun(Buffer.alloc(64))).toThrow(TypeError);
    expect(() => obj.map(tc.maps.verdicts, { key: c.u32, value: c.u64 })).toThrow(TypeError);
  });

  it('native classes cannot be constructed or unwrapped from arbitrary objects', async () => {
    const { native } = await import('../../src/native.js');
    const Ctor = (native.MapHandle as unknown as new (x: unknown) => unknown);
    expect(() => new Ctor(5)).toThrow(/created by the library/);
    // A plain object passed where a native program handle is expected is refused by its type tag.
    expect(() => native.attachCgroup({} as never, '/sys/fs/cgroup', 0, -1)).toThrow(/expected a native program handle/);
  });
});

describePrivileged('missing privilege', () => {
  it('EPERM says which capability is missing', () => {
    // A child with every capability dropped (setpriv, util-linux) loads through the built package.
    const script = `
      import { ObjectSpec } from ${JSON.stringify(fileURLToPath(new URL('../../dist/index.js', import.meta.url)))};
      try { ObjectSpec.file(${JSON.stringify(testprogFile(testprogs.tc_filter.name))}).load(); console.log('loaded'); }
      catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, op: e.op, message: e.message })); }`;
    const r = spawnSync(
      'setpriv',
      ['--inh-caps=-all', '--bounding-set=-all', '--reuid=65534', '--regid=65534', '--clear-groups', '--',
        process.execPath, '--input-type=module', '-e', script],
      { encoding: 'utf8', timeout: 20_000 },
    );
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as { name: string; code: string; op: string; message: string };
    expect(out).toMatchObject({ name: 'BpfError', code: 'EPERM', op: 'object_load' });
    expect(out.message).toMatch(/CAP_BPF/);
  });
});

it('BpfError formats op, subject, description and code', () => {
  const e = new BpfError('map_update', 'reviews_backends', 17, 'EEXIST', 'File exists');
  expect(e.message).toBe('map_update reviews_backends: file exists (EEXIST)');
  expect(e).toBeInstanceOf(Error);
});
