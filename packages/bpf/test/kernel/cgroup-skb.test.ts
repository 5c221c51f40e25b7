// skb_guard (cgroup_skb ingress and egress) under BPF_PROG_TEST_RUN: one row per packet and direction, with
// the expected verdict (1 pass, 0 drop) and map effect (direction counters or a blocked port's hit count).
import { describePrivileged, ethernet, ETH_P_ARP, packet } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { codec as c, type BpfMap, type BpfObject, type PerCpuMap } from '../../src/index.js';
import { skbCounters, sumCounters, testprog, testprogs } from '../programs.js';

const names = testprogs.skb_guard;
const BLOCKED = 5432;

type Direction = 'ingress' | 'egress';
interface Row {
  name: string;
  dir: Direction;
  data: Buffer;
  verdict: 0 | 1;
}

const v4 = { src: '198.18.1.1', dst: '198.18.0.2' };
const v6 = { src: 'fd00:1::1', dst: 'fd00::2' };
const rows: Row[] = [];
for (const dir of ['ingress', 'egress'] as const) {
  for (const [fam, addrs] of [[4, v4], [6, v6]] as const) {
    for (const proto of ['tcp', 'udp'] as const) {
      rows.push({
        name: `${dir} IPv${fam} ${proto} to an open port passes and is counted`,
        dir,
        data: packet({ family: fam, proto, ...addrs, sport: 33000, dport: 80, payload: 'x'.repeat(100) }),
        verdict: 1,
      });
      rows.push({
        name: `${dir} IPv${fam} ${proto} to the blocked port is dropped`,
        dir,
        data: packet({ family: fam, proto, ...addrs, sport: 33000, dport: BLOCKED }),
        verdict: 0,
      });
    }
  }
  rows.push({ name: `${dir} IPv4 from the blocked port (source, not destination) passes`, dir, data: packet({ family: 4, proto: 'tcp', ...v4, sport: BLOCKED, dport: 80 }), verdict: 1 });
  rows.push({ name: `${dir} ICMP-like IPv4 (no ports) passes`, dir, data: packet({ family: 4, proto: 1, ...v4, payload: Buffer.alloc(8) }), verdict: 1 });
}
rows.push({ name: 'ingress non-IP frame passes', dir: 'ingress', data: ethernet({ ethertype: ETH_P_ARP, payload: Buffer.alloc(28) }), verdict: 1 });

describePrivileged('skb_guard under BPF_PROG_TEST_RUN', () => {
  let obj: BpfObject;
  let stats: PerCpuMap<number, { packets: number; bytes: number }>;
  let blocked: BpfMap<number, bigint>;

  beforeAll(() => {
    obj = testprog(names.name).load();
    stats = obj.perCpuMap(names.maps.skb_stats, { key: c.u32, value: skbCounters });
    blocked = obj.map(names.maps.blocked_ports, { key: c.u16, value: c.u64 });
    blocked.set(BLOCKED, 0n);
  });
  afterAll(() => obj?.close());

  it.each(rows)('$name', (row) => {
    const slot = row.dir === 'ingress' ? 0 : 1;
    const before = sumCounters(stats.get(slot));
    const otherBefore = sumCounters(stats.get(1 - slot));
    const hitsBefore = blocked.get(BLOCKED)!;
    const prog = obj.program(row.dir === 'ingress' ? names.programs.skb_ingress : names.programs.skb_egress);

    const r = prog.testRun(row.data);

    expect(r.retval).toBe(row.verdict);
    const after = sumCounters(stats.get(slot));
    if (row.verdict === 1) {
      // cgroup_skb sees the packet from the network header: skb->len excludes the 14-byte Ethernet header.
      expect(after).toEqual({ packets: before.packets + 1, bytes: before.bytes + row.data.length - 14 });
      expect(blocked.get(BLOCKED)).toBe(hitsBefore);
    } else {
      expect(after).toEqual(before);
      expect(blocked.get(BLOCKED)).toBe(hitsBefore + 1n);
    }
    // The other direction's counters never move.
    expect(sumCounters(stats.get(1 - slot))).toEqual(otherBefore);
  });
});
