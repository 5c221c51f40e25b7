// Objects: spec inspection and changes before load, loading from a file, pinned map reuse, verifier rejection.
import { describePrivileged, packet } from '@mesh/testkit';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

import { BpfError, codec as c, embedded, helperIds, ObjectSpec } from '../../src/index.js';
import { testprog, testprogFile, testprogs } from '../programs.js';

const repo = fileURLToPath(new URL('../../../../', import.meta.url));
const buildDir = join(repo, 'build/bpf');
const tc = testprogs.tc_filter;

describePrivileged('ObjectSpec', () => {
  it('lists embedded objects and describes programs, maps and constants before load', () => {
    expect(ObjectSpec.embeddedNames().sort()).toEqual(Object.keys(embedded).sort());
    using spec = testprog(tc.name);
    expect(spec.programs).toEqual([
      { name: 'tc_filter', section: 'tc', type: 'sched_cls', attachType: undefined, autoload: true, helpers: expect.any(Array) },
    ]);
    // The helpers it calls, read from its instructions (in order of first call).
    const h = helperIds;
    expect(spec.programs[0]!.helpers.slice().sort((a, b) => a - b)).toEqual(
      [h.map_lookup_elem, h.map_update_elem, h.ktime_get_ns, h.skb_load_bytes, h.ringbuf_reserve, h.ringbuf_submit].sort((a, b) => a - b),
    );
    const m = spec.maps.find((x) => x.name === tc.maps.port_stats)!;
    expect(m).toMatchObject({ type: 'percpu_hash', keySize: 4, valueSize: 16, maxEntries: 4096, internal: false });
    expect(spec.maps.find((x) => x.internal)?.name).toMatch(/\.rodata$/);
    expect(spec.constants).toEqual([{ name: 'cfg_blocked_port', size: 2, section: '.rodata' }]);
  });

  it('setMaxEntries resizes a map before load', () => {
    using obj = testprog(tc.name).setMaxEntries(tc.maps.deny_v4, 77).load();
    expect(obj.map(tc.maps.deny_v4, { key: c.struct({ p: c.u32, a: c.ipv4 }), value: c.u32 }).maxEntries).toBe(77);
  });

  it('a spec is consumed by load(); changing it afterwards is a TypeError', () => {
    const spec = testprog(tc.name);
    using obj = spec.load();
    expect(() => spec.load()).toThrow(TypeError);
    expect(() => spec.setMaxEntries(tc.maps.deny_v4, 4)).toThrow(/already loaded/);
    expect(obj.programNames).toEqual([tc.programs.tc_filter]);
  });

  it('constants are checked by name, size and range', () => {
    using spec = testprog(tc.name);
    expect(() => spec.setConstant('nope', 1)).toThrow(/no global variable "nope"/);
    expect(() => spec.setConstant(tc.constants.cfg_blocked_port, 70000)).toThrow(RangeError);
    expect(() => spec.setConstant(tc.constants.cfg_blocked_port, Buffer.alloc(4))).toThrow(RangeError);
    expect(() => spec.setConstant(tc.constants.cfg_blocked_port, 1.5)).toThrow(TypeError);
    expect(() => spec.setMaxEntries('no_such_map', 4)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });

  it('loads the same program from a .bpf.o file and from a Buffer', () => {
    const file = testprogFile(tc.name);
    const data = packet({ family: 4, proto: 'tcp', src: '198.18.0.1', dst: '198.18.0.2', sport: 1, dport: 2 });
    for (const spec of [ObjectSpec.file(file), ObjectSpec.buffer(readFileSync(file), 'tc_copy')]) {
      using obj = spec.load();
      expect(obj.program(tc.programs.tc_filter).testRun(data).retval).toBe(0);
    }
    expect(() => ObjectSpec.file('/nonexistent.bpf.o')).toThrow(expect.objectContaining({ op: 'object_open', code: 'ENOENT' }));
    expect(() => ObjectSpec.buffer(Buffer.from('not an ELF file'), 'junk')).toThrow(expect.objectContaining({ op: 'object_open' }));
  });

  it('pinMaps(dir): a second load adopts the maps the first one pinned', () => {
    const dir = mkdtempSync('/sys/fs/bpf/mesh-test-');
    try {
      using a = testprog(tc.name).pinMaps(dir).load();
      a.map(tc.maps.verdicts, { key: c.u32, value: c.u64 }).set(2, 99n);
      using b = testprog(tc.name).pinMaps(dir).load();
      const vb = b.map(tc.maps.verdicts, { key: c.u32, value: c.u64 });
      expect(vb.get(2)).toBe(99n);
      expect(vb.info().id).toBe(a.map(tc.maps.verdicts, { key: c.u32, value: c.u64 }).info().id);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('pinMaps refuses to adopt an incompatible pinned map (different size) instead of using it', () => {
    const dir = mkdtempSync('/sys/fs/bpf/mesh-test-');
    try {
      using a = testprog(tc.name).setMaxEntries(tc.maps.deny_v4, 10).pinMaps(dir).load();
      expect(a.isClosed).toBe(false);
      let err: BpfError | undefined;
      try {
        testprog(tc.name).setMaxEntries(tc.maps.deny_v4, 20).pinMaps(dir).load();
      } catch (e) {
        err = e as BpfError;
      }
      expect(err).toBeInstanceOf(BpfError);
      expect(err!.op).toBe('object_load');
      expect(err!.pinnedMapMismatch).toBe(true);
      // The message carries libbpf's reason, not its progress notes.
      expect(err!.message).toMatch(/couldn't reuse pinned map at '.*deny_v4': parameter mismatch/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a verifier rejection is a BpfError carrying the verifier log and naming the program', () => {
    const spec = ObjectSpec.file(join(buildDir, 'testdata/verifier_reject.bpf.o'));
    let err: BpfError | undefined;
    try {
      spec.load();
    } catch (e) {
      err = e as BpfError;
    }
    expect(err).toBeInstanceOf(BpfError);
    expect(err!.op).toBe('object_load');
    expect(err!.code).toBe('EACCES');
    expect(err!.subject).toMatch(/oob_read/);
    expect(err!.verifierLog).toMatch(/invalid access to packet/);
    expect(err!.message).toMatch(/invalid access to packet/);
    expect(err!.pinnedMapMismatch).toBe(false);
    // A failed load consumes the spec and leaves nothing open.
    expect(spec.isClosed).toBe(true);
  });

  // The verifier stops with EAGAIN when a signal is pending for the loading thread; libbpf retries a few times
  // only. A sampling profiler signals the thread every interval: under node --cpu-prof the mesh's objects never
  // loaded (EAGAIN on split_connect4 five times in five).
  it('loads the split, metrics and mTLS objects in a thread signalled every 100 µs (a sampling profiler)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mesh-prof-'));
    try {
      const script = `
        import { ObjectSpec } from ${JSON.stringify(fileURLToPath(new URL('../../dist/index.js', import.meta.url)))};
        const out = {};
        for (const name of ['split', 'http', 'mtls']) {
          try { ObjectSpec.embedded(name).load().close(); out[name] = 'loaded'; } catch (e) { out[name] = e.message.split('\\n')[0]; }
        }
        console.log(JSON.stringify(out));`;
      const r = spawnSync(process.execPath, ['--cpu-prof', '--cpu-prof-dir', dir, '--cpu-prof-interval', '100', '--input-type=module', '-e', script], {
        encoding: 'utf8',
        timeout: 120_000,
      });
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}')).toEqual({ split: 'loaded', http: 'loaded', mtls: 'loaded' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 150_000);
});
