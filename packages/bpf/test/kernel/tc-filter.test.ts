// tc_filter through BPF_PROG_TEST_RUN: one row per packet, with the expected verdict and map effect.
import { describePrivileged, packet, ethernet, ETH_P_ARP } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { BpfObject, codec as c, type BpfMap, type PerCpuMap, type RingBuffer } from '../../src/index.js';
import { AF_INET, AF_INET6, dropEvent, IPPROTO_TCP, IPPROTO_UDP, l4Counters, l4Key, lpmV4Key, lpmV6Key, sumCounters, testprog, testprogs, Verdict } from '../programs.js';

const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const names = testprogs.tc_filter;

interface Row {
  name: string;
  data: Buffer;
  verdict: number;
  slot: number;
  /** port_stats key expected to grow by one packet of data.length bytes. */
  counted?: { family: number; proto: number; port: number };
  ruleId?: number;
}

const rows: Row[] = [
  { name: 'IPv4 TCP passes and is counted', data: packet({ family: 4, proto: 'tcp', src: '198.18.1.1', dst: '198.18.0.2', sport: 40000, dport: 80, tcpFlags: { syn: true } }), verdict: TC_ACT_OK, slot: Verdict.PASS, counted: { family: AF_INET, proto: IPPROTO_TCP, port: 80 } },
  { name: 'IPv4 UDP passes and is counted', data: packet({ family: 4, proto: 'udp', src: '198.18.1.1', dst: '198.18.0.2', sport: 5353, dport: 53, payload: 'query' }), verdict: TC_ACT_OK, slot: Verdict.PASS, counted: { family: AF_INET, proto: IPPROTO_UDP, port: 53 } },
  { name: 'IPv6 TCP passes and is counted', data: packet({ family: 6, proto: 'tcp', src: 'fd00:1::1', dst: 'fd00::2', sport: 40001, dport: 443, tcpFlags: { syn: true } }), verdict: TC_ACT_OK, slot: Verdict.PASS, counted: { family: AF_INET6, proto: IPPROTO_TCP, port: 443 } },
  { name: 'IPv6 UDP passes and is counted', data: packet({ family: 6, proto: 'udp', src: 'fd00:1::1', dst: 'fd00::2', sport: 1000, dport: 8125, payload: Buffer.alloc(300) }), verdict: TC_ACT_OK, slot: Verdict.PASS, counted: { family: AF_INET6, proto: IPPROTO_UDP, port: 8125 } },
  { name: 'IPv4 from a denied /24 is dropped with its rule id', data: packet({ family: 4, proto: 'tcp', src: '198.18.66.7', dst: '198.18.0.2', sport: 1234, dport: 80 }), verdict: TC_ACT_SHOT, slot: Verdict.DROP_DENY, ruleId: 24 },
  { name: 'IPv4 from a denied /32 inside the /24 matches the longer prefix', data: packet({ family: 4, proto: 'udp', src: '198.18.66.9', dst: '198.18.0.2', sport: 1234, dport: 53 }), verdict: TC_ACT_SHOT, slot: Verdict.DROP_DENY, ruleId: 32 },
  { name: 'IPv6 from a denied /64 is dropped', data: packet({ family: 6, proto: 'udp', src: 'fd00:66::5', dst: 'fd00::2', sport: 9, dport: 9 }), verdict: TC_ACT_SHOT, slot: Verdict.DROP_DENY, ruleId: 64 },
  { name: 'ARP is not IP and passes uncounted', data: ethernet({ ethertype: ETH_P_ARP, payload: Buffer.alloc(28) }), verdict: TC_ACT_OK, slot: Verdict.NOT_IP },
  { name: 'IPv4 next to the denied /24 passes', data: packet({ family: 4, proto: 'tcp', src: '198.18.67.1', dst: '198.18.0.2', sport: 1, dport: 8080 }), verdict: TC_ACT_OK, slot: Verdict.PASS, counted: { family: AF_INET, proto: IPPROTO_TCP, port: 8080 } },
];

describePrivileged('tc_filter under BPF_PROG_TEST_RUN', () => {
  let obj: BpfObject;
  let verdicts: BpfMap<number, bigint>;
  let stats: PerCpuMap<{ family: number; proto: number; port: number }, { packets: number; bytes: number }>;
  let drops: RingBuffer<ReturnType<typeof dropEvent.decode>>;
  const events: ReturnType<typeof dropEvent.decode>[] = [];

  beforeAll(() => {
    obj = testprog(names.name).load();
    verdicts = obj.map(names.maps.verdicts, { key: c.u32, value: c.u64 });
    stats = obj.perCpuMap(names.maps.port_stats, { key: l4Key, value: l4Counters });
    const deny4 = obj.map(names.maps.deny_v4, { key: lpmV4Key, value: c.u32 });
    deny4.set({ prefixlen: 24, addr: '198.18.66.0' }, 24);
    deny4.set({ prefixlen: 32, addr: '198.18.66.9' }, 32);
    obj.map(names.maps.deny_v6, { key: lpmV6Key, value: c.u32 }).set({ prefixlen: 64, addr: 'fd00:66::' }, 64);
    drops = obj.ringBuffer(names.maps.drop_events, (batch) => events.push(...batch), { codec: dropEvent });
  });
  afterAll(() => obj?.close());

  it.each(rows)('$name', (row) => {
    const before = verdicts.get(row.slot)!;
    const statsBefore = row.counted ? sumCounters(stats.get(row.counted)) : undefined;
    const evBefore = events.length;

    const r = obj.program(names.programs.tc_filter).testRun(row.data);

    expect(r.retval).toBe(row.verdict);
    expect(r.data?.equals(row.data)).toBe(true);
    expect(verdicts.get(row.slot)! - before).toBe(1n);
    if (row.counted) {
      const after = sumCounters(stats.get(row.counted));
      expect(after.packets - statsBefore!.packets).toBe(1);
      expect(after.bytes - statsBefore!.bytes).toBe(row.data.length);
    }
    if (row.ruleId !== undefined) {
      // The ring buffer is read from the event loop; consume() reads what is there now.
      drops.consume();
      expect(events.length).toBe(evBefore + 1);
      const ev = events.at(-1)!;
      expect(ev.ruleId).toBe(row.ruleId);
      expect(ev.reason).toBe(Verdict.DROP_DENY);
      expect(ev.pktLen).toBe(row.data.length);
    }
  });

  it('repeat=1000 runs the program 1000 times in one syscall', () => {
    const data = packet({ family: 4, proto: 'udp', src: '198.18.1.1', dst: '198.18.0.2', sport: 7, dport: 7777 });
    const key = { family: AF_INET, proto: IPPROTO_UDP, port: 7777 };
    const r = obj.program(names.programs.tc_filter).testRun(data, { repeat: 1000 });
    expect(r.retval).toBe(TC_ACT_OK);
    expect(sumCounters(stats.get(key))).toEqual({ packets: 1000, bytes: 1000 * data.length });
  });
});

describePrivileged('tc_filter with the cfg_blocked_port constant set before load', () => {
  it('drops only the blocked destination port, for TCP and UDP, IPv4 and IPv6', () => {
    using obj = testprog(names.name).setConstant(names.constants.cfg_blocked_port, 6379).load();
    const prog = obj.program(names.programs.tc_filter);
    const verdicts = obj.map(names.maps.verdicts, { key: c.u32, value: c.u64 });
    const cases: [Buffer, number][] = [
      [packet({ family: 4, proto: 'tcp', src: '198.18.1.1', dst: '198.18.0.2', sport: 1, dport: 6379 }), TC_ACT_SHOT],
      [packet({ family: 6, proto: 'udp', src: 'fd00:1::1', dst: 'fd00::2', sport: 1, dport: 6379 }), TC_ACT_SHOT],
      [packet({ family: 4, proto: 'tcp', src: '198.18.1.1', dst: '198.18.0.2', sport: 6379, dport: 6380 }), TC_ACT_OK],
    ];
    for (const [data, verdict] of cases) expect(prog.testRun(data).retval).toBe(verdict);
    expect(verdicts.get(Verdict.DROP_PORT)).toBe(2n);
    expect(verdicts.get(Verdict.PASS)).toBe(1n);
  });
});
