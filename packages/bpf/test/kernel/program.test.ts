// Programs: test-run outputs, BPF stats, pinning, info.
import { describePrivileged, packet } from '@mesh/testkit';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';

import { codec as c, enableStats, features, Program } from '../../src/index.js';
import { testprog, testprogs } from '../programs.js';

const tc = testprogs.tc_filter;
const data = packet({ family: 6, proto: 'tcp', src: 'fd00::1', dst: 'fd00::2', sport: 1, dport: 80 });

describePrivileged('Program', () => {
  it('info() names the type, the attach type from the section, and the verified instruction count', () => {
    using obj = testprog(testprogs.sock_track.name).load();
    const ops = obj.program(testprogs.sock_track.programs.sockops_track).info();
    expect(ops).toMatchObject({ name: 'sockops_track', type: 'sock_ops', attachType: 'cgroup_sock_ops' });
    expect(ops.verifiedInstructions).toBeGreaterThan(0);
    expect(ops.tag).toMatch(/^[0-9a-f]{16}$/);
    expect(obj.program(testprogs.sock_track.programs.msg_count).attachType).toBe('sk_msg_verdict');
    expect(obj.program(testprogs.sock_track.programs.skb_verdict).attachType).toBe('sk_skb_stream_verdict');
  });

  it('info().mapIds are the kernel ids of the maps the program uses', () => {
    const { name, maps, programs } = testprogs.skb_guard;
    using obj = testprog(name).load();
    const id = (m: { info(): { id: number } }) => m.info().id;
    const stats = id(obj.perCpuMap(maps.skb_stats, { key: c.u32, value: c.struct({ p: c.u64, b: c.u64 }) }));
    const blocked = id(obj.map(maps.blocked_ports, { key: c.u16, value: c.u64 }));
    expect(obj.program(programs.skb_ingress).info().mapIds.sort()).toEqual([stats, blocked].sort());
    using noMaps = testprog(testprogs.skb_noop.name).load();
    expect(noMaps.program(noMaps.programNames[0]!).info().mapIds).toEqual([]);
  });

  it('testRun reports a duration; with stats enabled, each run adds to run count and run time', () => {
    expect(features().attach.stats).toBe(true);
    using obj = testprog(tc.name).load();
    const p = obj.program(tc.programs.tc_filter);
    expect(p.testRun(data, { repeat: 100 }).durationNs).toBeGreaterThan(0);
    // Stats are kernel-wide (another process may have them on too), so only the delta while on is asserted.
    const stats = enableStats();
    const before = p.stats();
    p.testRun(data, { repeat: 100 });
    const after = p.stats();
    stats.close();
    stats.close();
    expect(after.runCount - before.runCount).toBe(100n);
    expect(after.runTimeNs).toBeGreaterThan(before.runTimeNs);
  });

  it('a pinned program is the same program when opened by path or id', () => {
    const dir = mkdtempSync('/sys/fs/bpf/mesh-test-');
    try {
      using obj = testprog(tc.name).load();
      const p = obj.program(tc.programs.tc_filter);
      p.pin(join(dir, 'prog'));
      using again = Program.openPinned(join(dir, 'prog'));
      expect(again.info().id).toBe(p.info().id);
      expect(again.testRun(data).retval).toBe(0);
      using byId = Program.openById(p.info().id);
      expect(byId.name).toBe('tc_filter');
      expect(byId.attachType).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('testRun checks its arguments before the syscall', () => {
    using obj = testprog(tc.name).load();
    const p = obj.program(tc.programs.tc_filter);
    expect(() => p.testRun(Buffer.alloc(10))).toThrow(/needs at least 14 bytes/);
    expect(() => p.testRun('abc' as unknown as Buffer)).toThrow(TypeError);
    expect(() => p.testRun(data, { repeat: -1 })).toThrow(RangeError);
    expect(() => p.testRun(data, { repeat: 1.5 })).toThrow(RangeError);
    // Output room too small for the packet: the kernel says ENOSPC and the error says how much was needed.
    expect(() => p.testRun(data, { dataOutSize: 20 })).toThrow(/needs \d+ bytes.*ENOSPC/);
  });
});
