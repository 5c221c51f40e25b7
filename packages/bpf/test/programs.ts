/** Codecs mirroring bpf/include/testprogs.h, and the test programs (bpf/testprogs) by name. They are not
 *  embedded in the addon users install: tests load them from build/bpf/testprogs with ObjectSpec.file. */
import { testprogFile, type TestprogName, testprogs } from '@mesh/testkit/testprogs';

import { codec as c, ObjectSpec } from '../src/index.js';

export { testprogFile, testprogs };

/** The spec of a test program, e.g. testprog(testprogs.tc_filter.name).load(). */
export function testprog(name: TestprogName): ObjectSpec {
  return ObjectSpec.file(testprogFile(name));
}

export { AF_INET, AF_INET6 } from '../src/codec.js';
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

export const lpmV4Key = c.struct({ prefixlen: c.u32, addr: c.ipv4 });
export const lpmV6Key = c.struct({ prefixlen: c.u32, addr: c.ipv6 });
export const l4Key = c.struct({ family: c.u8, proto: c.u8, port: c.u16 });
export const l4Counters = c.struct({ packets: c.u64n, bytes: c.u64n });
export const Verdict = { PASS: 0, DROP_DENY: 1, DROP_PORT: 2, NOT_IP: 3 } as const;
export const dropEvent = c.struct({
  tsNs: c.u64,
  family: c.u8,
  proto: c.u8,
  sport: c.u16,
  dport: c.u16,
  reason: c.u16,
  ruleId: c.u32,
  pktLen: c.u32,
  saddr: c.bytes(16),
  daddr: c.bytes(16),
});

/** endpoint4/endpoint6: address and port in network byte order. */
export const endpoint4 = c.struct({ addr: c.ipv4, port: c.u16be, pad: c.pad(2) });
export const endpoint6 = c.struct({ addr: c.ipv6, port: c.u16be, pad: c.pad(2) });
export const Hook = {
  CONNECT4: 0, CONNECT6: 1, SENDMSG4: 2, SENDMSG6: 3, RECVMSG4: 4, RECVMSG6: 5, GETPEERNAME4: 6, GETPEERNAME6: 7,
} as const;

export const sockKey = c.struct({
  family: c.u32,
  localIp: c.bytes(16),
  remoteIp: c.bytes(16),
  localPort: c.u32,
  remotePort: c.u32,
});
export const connState = c.struct({ cookie: c.u64, establishedNs: c.u64, msgBytes: c.u64n, msgCount: c.u32, role: c.u32 });
export const flowInfo = c.struct({ establishedNs: c.u64, role: c.u32, pad: c.pad(4) });
export const Counter = { ACTIVE_ESTABLISHED: 0, PASSIVE_ESTABLISHED: 1, CLOSED: 2, MSG_CALLS: 3, MSG_BYTES: 4, SKB_CALLS: 5 } as const;
export const Role = { ACTIVE: 1, PASSIVE: 2 } as const;

export const skbCounters = c.struct({ packets: c.u64n, bytes: c.u64n });

/** Sums per-CPU counter structs. */
export function sumCounters(vals: { packets: number; bytes: number }[] | undefined): { packets: number; bytes: number } {
  return (vals ?? []).reduce((a, v) => ({ packets: a.packets + v.packets, bytes: a.bytes + v.bytes }), { packets: 0, bytes: 0 });
}
