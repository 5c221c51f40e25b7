#!/usr/bin/env node
// Loads a compiled .bpf.o (the repo's tc_filter test program, build/bpf/testprogs/tc_filter.bpf.o), test-runs
// 1,000 packets through it in the kernel (BPF_PROG_TEST_RUN, nothing is attached and no traffic is sent), and
// prints the counters it read back from the program's maps. Run as root after `npm run build`:
// node examples/tc-counter.mjs
import { codec, ObjectSpec } from '@mesh/bpf';
import { testprogFile, testprogs } from '@mesh/testkit/testprogs';

const names = testprogs.tc_filter;
const AF_INET = 2;
const IPPROTO_UDP = 17;

/** An Ethernet + IPv4 + UDP frame to 198.18.0.2:dport (checksums are not checked by the program). */
function udpFrame(dport, payloadLength) {
  const ip = 20, udp = 8;
  const b = Buffer.alloc(14 + ip + udp + payloadLength);
  b.writeUInt16BE(0x0800, 12); // EtherType IPv4
  b[14] = 0x45; // version 4, IHL 5
  b.writeUInt16BE(ip + udp + payloadLength, 16);
  b[22] = 64; // TTL
  b[23] = IPPROTO_UDP;
  Buffer.from([198, 18, 0, 1]).copy(b, 26);
  Buffer.from([198, 18, 0, 2]).copy(b, 30);
  b.writeUInt16BE(40000, 34);
  b.writeUInt16BE(dport, 36);
  b.writeUInt16BE(udp + payloadLength, 38);
  return b;
}

const obj = ObjectSpec.file(testprogFile(names.name)).load();
try {
  const program = obj.program(names.programs.tc_filter);
  const verdicts = obj.map(names.maps.verdicts, { key: codec.u32, value: codec.u64 });
  const portStats = obj.perCpuMap(names.maps.port_stats, {
    key: codec.struct({ family: codec.u8, proto: codec.u8, port: codec.u16 }),
    value: codec.struct({ packets: codec.u64n, bytes: codec.u64n }),
  });

  // 1,000 packets: 600 to port 53, 400 to port 8125, each run once in the kernel.
  const plan = [[53, 600, 32], [8125, 400, 200]];
  let total = 0;
  for (const [port, count, size] of plan) {
    const r = program.testRun(udpFrame(port, size), { repeat: count });
    total += count;
    console.log(`ran ${count} packets to udp/${port}: verdict ${r.retval === 0 ? 'pass' : r.retval}, ${r.durationNs} ns per run`);
  }

  const passed = verdicts.get(0);
  console.log(`\nverdicts[PASS] read from the kernel map: ${passed} (sent ${total})`);
  for (const [key, perCpu] of portStats) {
    const sum = perCpu.reduce((a, v) => ({ packets: a.packets + v.packets, bytes: a.bytes + v.bytes }), { packets: 0, bytes: 0 });
    const fam = key.family === AF_INET ? 'ipv4' : 'ipv6';
    console.log(`port_stats ${fam}/udp/${key.port}: ${sum.packets} packets, ${sum.bytes} bytes (across ${perCpu.length} CPUs)`);
  }
  if (passed !== BigInt(total)) {
    console.error(`unexpected: the counter says ${passed}, ${total} packets were run`);
    process.exitCode = 1;
  }
} finally {
  obj.close();
}
