import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { SocketAddress } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import {
  ETH_P_ARP,
  ethernet,
  findTool,
  formatIp,
  internetChecksum,
  ipBytes,
  ipv4Bytes,
  ipv6Bytes,
  onesComplementSum,
  packet,
  parsePacket,
  readPcap,
  writePcap,
  type PacketSpec,
} from '../../src/index.js';

// Deliberately naive and separate from src/checksum.ts: one big sum over the concatenation, folded at the end.
function naiveSum(...parts: Uint8Array[]): number {
  const bytes = Buffer.concat(parts);
  let sum = 0n;
  for (let i = 0; i < bytes.length; i += 2) sum += BigInt((bytes[i]! << 8) | (bytes[i + 1] ?? 0));
  while (sum > 0xffffn) sum = (sum & 0xffffn) + (sum >> 16n);
  return Number(sum);
}

function pseudo(family: 4 | 6, src: string, dst: string, proto: number, len: number): Buffer {
  const lenBytes = Buffer.alloc(family === 4 ? 2 : 4);
  if (family === 4) lenBytes.writeUInt16BE(len);
  else lenBytes.writeUInt32BE(len);
  const protoBytes = family === 4 ? Buffer.from([0, proto]) : Buffer.from([0, 0, 0, proto]);
  return Buffer.concat([ipBytes(src), ipBytes(dst), family === 4 ? protoBytes : lenBytes, family === 4 ? lenBytes : protoBytes]);
}

describe('addresses', () => {
  it.each([
    ['198.18.0.1', '198.18.0.1', 'c6120001'],
    ['::', '::', '0'.repeat(32)],
    ['::1', '::1', `${'0'.repeat(31)}1`],
    ['fd00::1', 'fd00::1', `fd00${'0'.repeat(27)}1`],
    ['FD00:0:0:0:0:0:0:1', 'fd00::1', `fd00${'0'.repeat(27)}1`],
    ['1::', '1::', `0001${'0'.repeat(28)}`],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8', '00010002000300040005000600070008'],
    ['fd00:0:0:1:0:0:0:1', 'fd00:0:0:1::1', 'fd00000000000001' + '0000000000000001'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1', '20010db8000000000001000000000001'],
    ['fd00:1:0:1:1:1:1:1', 'fd00:1:0:1:1:1:1:1', 'fd000001000000010001000100010001'],
    ['::ffff:198.18.0.1', '::ffff:198.18.0.1', `${'0'.repeat(20)}ffffc6120001`],
    ['64:ff9b::198.18.0.1', '64:ff9b::c612:1', `0064ff9b${'0'.repeat(16)}c6120001`],
  ])('%s → %s', (input, text, hex) => {
    expect(ipBytes(input).toString('hex')).toBe(hex);
    expect(formatIp(ipBytes(input))).toBe(text);
  });

  it('formats IPv6 as inet_ntop does', () => {
    const samples = ['fd00::1:0:0:1', '1:0:0:2:0:0:0:3', '0:0:1::', 'fd00:0:0:0:0:0:0:0', '::2:3:4:5:6:7:8', 'fd00:ab:cd:ef:1:2:3:0'];
    for (const s of samples) {
      // SocketAddress normalises through libuv's inet_pton/inet_ntop: an oracle that shares no code with ip.ts.
      expect(formatIp(ipv6Bytes(s))).toBe(new SocketAddress({ address: s, family: 'ipv6' }).address);
    }
  });

  it('rejects what is not an address', () => {
    expect(() => ipv4Bytes('198.18.0')).toThrow(TypeError);
    expect(() => ipv4Bytes('fd00::1')).toThrow(TypeError);
    expect(() => ipv6Bytes('198.18.0.1')).toThrow(TypeError);
    expect(() => ipv6Bytes('fe80::1%eth0')).toThrow(TypeError);
    expect(() => ipBytes('fd00:::1')).toThrow(TypeError);
    expect(() => formatIp(Buffer.alloc(5))).toThrow(RangeError);
  });
});

describe('checksum', () => {
  it('matches the RFC 1071 worked example', () => {
    const data = Buffer.from('0001f203f4f5f6f7', 'hex');
    expect(onesComplementSum(data)).toBe(0xddf2);
    expect(internetChecksum(data)).toBe(0x220d);
  });

  it('treats split buffers as one byte string, odd boundaries included', () => {
    const data = Buffer.from('0001f203f4f5f6f7ab', 'hex');
    expect(onesComplementSum(data.subarray(0, 3), data.subarray(3, 4), data.subarray(4))).toBe(naiveSum(data));
  });

  it('gives the known header checksum of a classic IPv4 header', () => {
    // 4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7: the textbook example; bytes only, nothing is sent.
    const frame = packet({ proto: 'udp', src: '192.168.0.1', dst: '192.168.0.199', dontFragment: true, payload: Buffer.alloc(0x73 - 28) });
    expect(frame.subarray(14, 34).toString('hex')).toBe('450000730000400040 11b861c0a80001c0a800c7'.replace(/ /g, ''));
  });
});

describe('packet', () => {
  it('builds IPv4/TCP whose header and pseudo-header sums fold to 0xffff', () => {
    const payload = Buffer.from('GET / HTTP/1.1\r\n\r\n');
    const frame = packet({ proto: 'tcp', src: '198.18.0.1', dst: '198.18.0.2', sport: 40000, dport: 8080, payload, tcpFlags: { psh: true, ack: true } });
    expect(frame.length).toBe(14 + 20 + 20 + payload.length);
    expect(frame.readUInt16BE(12)).toBe(0x0800);
    expect(naiveSum(frame.subarray(14, 34))).toBe(0xffff);
    const l4 = frame.subarray(34);
    expect(naiveSum(pseudo(4, '198.18.0.1', '198.18.0.2', 6, l4.length), l4)).toBe(0xffff);
    expect(l4.readUInt8(13)).toBe(0x18);
  });

  it('builds IPv6/UDP whose pseudo-header sum folds to 0xffff', () => {
    const frame = packet({ proto: 'udp', src: 'fd00::1', dst: 'fd00::2', sport: 5353, dport: 53, payload: 'odd' });
    expect(frame.readUInt16BE(12)).toBe(0x86dd);
    expect(frame.readUInt16BE(14 + 4)).toBe(8 + 3);
    const l4 = frame.subarray(54);
    expect(naiveSum(pseudo(6, 'fd00::1', 'fd00::2', 17, l4.length), l4)).toBe(0xffff);
  });

  it('sends a UDP checksum that computes to zero as 0xffff', () => {
    const base: PacketSpec = { proto: 'udp', src: '198.18.0.1', dst: '198.18.0.2', payload: Buffer.alloc(2) };
    const l4 = packet(base).subarray(34);
    l4.writeUInt16BE(0, 6);
    // Two payload bytes that bring the sum to 0xffff, so the checksum proper is 0.
    const filler = 0xffff - naiveSum(pseudo(4, '198.18.0.1', '198.18.0.2', 17, l4.length), l4);
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(filler);
    const frame = packet({ ...base, payload });
    expect(frame.readUInt16BE(34 + 6)).toBe(0xffff);
    expect(parsePacket(frame).l4ChecksumOk).toBe(true);
  });

  it('pads IPv4 options and counts them in IHL and the checksum', () => {
    const frame = packet({ proto: 'tcp', src: '198.18.0.1', dst: '198.18.0.2', ipv4Options: Buffer.from([0x01, 0x01, 0x01]) });
    expect(frame.readUInt8(14) & 0xf).toBe(6);
    expect(naiveSum(frame.subarray(14, 38))).toBe(0xffff);
    expect(parsePacket(frame)).toMatchObject({ ipChecksumOk: true, l4ChecksumOk: true, sport: 49152, dport: 80 });
  });

  it('rejects inconsistent or out-of-range fields', () => {
    expect(() => packet({ family: 6, proto: 'tcp', src: '198.18.0.1', dst: '198.18.0.2' })).toThrow(TypeError);
    expect(() => packet({ proto: 'tcp', src: '198.18.0.1', dst: 'fd00::2' })).toThrow(TypeError);
    expect(() => packet({ proto: 'tcp', src: '198.18.0.1', dst: '198.18.0.2', dport: 65536 })).toThrow(RangeError);
    expect(() => packet({ proto: 'udp', src: '198.18.0.1', dst: '198.18.0.2', fragmentOffset: 12 })).toThrow(RangeError);
    expect(() => packet({ proto: 'udp', src: 'fd00::1', dst: 'fd00::2', ipv4Options: Buffer.alloc(4) })).toThrow(TypeError);
    expect(() => packet({ proto: 'tcp', src: '198.18.0.1', dst: '198.18.0.2', tcpOptions: Buffer.alloc(44) })).toThrow(RangeError);
  });

  it('wraps non-IP payloads, e.g. ARP', () => {
    const arp = Buffer.alloc(28, 7);
    const frame = ethernet({ ethertype: ETH_P_ARP, payload: arp, dstMac: 'ff:ff:ff:ff:ff:ff' });
    expect(parsePacket(frame)).toEqual({
      dstMac: 'ff:ff:ff:ff:ff:ff',
      srcMac: '02:00:00:00:00:01',
      ethertype: ETH_P_ARP,
      payload: arp,
    });
  });
});

describe('parsePacket', () => {
  const cases: [string, PacketSpec][] = [
    ['IPv4 TCP SYN', { proto: 'tcp', src: '198.18.0.1', dst: '198.18.0.2', sport: 40000, dport: 9080, tcpFlags: { syn: true }, seq: 1000, ttl: 3 }],
    ['IPv4 TCP with options and payload', { proto: 'tcp', src: '198.18.1.1', dst: '198.19.255.254', tcpOptions: Buffer.from([2, 4, 5, 0xb4]), payload: 'hello', ackSeq: 77, window: 512, tcpFlags: { ack: true, psh: true, fin: true } }],
    ['IPv4 UDP', { proto: 'udp', src: '198.18.0.1', dst: '198.18.0.2', sport: 1, dport: 65535, payload: Buffer.from([1, 2, 3]), tos: 0xb8, id: 4242 }],
    ['IPv6 TCP', { proto: 'tcp', src: 'fd00::1', dst: 'fd00:0:0:1::2', sport: 443, dport: 50000, payload: 'x'.repeat(101), flowLabel: 0xabcde, tos: 0x20 }],
    ['IPv6 UDP', { proto: 'udp', src: 'fd00::1', dst: 'fd00::2', payload: '', ttl: 255 }],
    ['MACs', { proto: 'udp', src: '198.18.0.1', dst: '198.18.0.2', srcMac: '0a:0b:0c:0d:0e:0f', dstMac: 'AA-BB-CC-DD-EE-FF' }],
  ];

  it.each(cases)('round-trips %s', (_, spec) => {
    const parsed = parsePacket(packet(spec));
    const payload = typeof spec.payload === 'string' ? Buffer.from(spec.payload) : spec.payload ?? Buffer.alloc(0);
    const { payload: _p, tcpOptions: _o, srcMac, dstMac, tcpFlags, ...fields } = spec;
    expect(parsed).toMatchObject({ ...fields, family: spec.src.includes(':') ? 6 : 4, l4ChecksumOk: true });
    expect(parsed.payload.equals(Buffer.from(payload))).toBe(true);
    if (srcMac) expect(parsed.srcMac).toBe(srcMac.toLowerCase());
    if (dstMac) expect(parsed.dstMac).toBe(dstMac.toLowerCase().replace(/-/g, ':'));
    if (tcpFlags) expect(parsed.tcpFlags).toMatchObject(tcpFlags);
    if (parsed.family === 4) expect(parsed.ipChecksumOk).toBe(true);
  });

  it('defaults TCP to an ACK, with PSH when there is data', () => {
    expect(parsePacket(packet({ proto: 'tcp', src: '198.18.0.1', dst: '198.18.0.2' })).tcpFlags)
      .toMatchObject({ ack: true, psh: false, syn: false });
    expect(parsePacket(packet({ proto: 'tcp', src: '198.18.0.1', dst: '198.18.0.2', payload: 'x' })).tcpFlags)
      .toMatchObject({ ack: true, psh: true });
  });

  it('notices broken checksums', () => {
    const frame = packet({ proto: 'tcp', src: '198.18.0.1', dst: '198.18.0.2', payload: 'data' });
    const badL4 = Buffer.from(frame);
    badL4[badL4.length - 1]! ^= 0xff;
    expect(parsePacket(badL4)).toMatchObject({ ipChecksumOk: true, l4ChecksumOk: false });
    const badIp = Buffer.from(frame);
    badIp[14 + 8] = 1; // TTL rewritten without fixing the checksum, as a buggy program would
    expect(parsePacket(badIp)).toMatchObject({ ipChecksumOk: false, ttl: 1 });
    const badV6 = packet({ proto: 'udp', src: 'fd00::1', dst: 'fd00::2', payload: 'data' });
    badV6[14 + 8 + 15] = 9; // source address changed: the pseudo-header no longer matches
    expect(parsePacket(badV6)).toMatchObject({ src: 'fd00::9', l4ChecksumOk: false });
  });

  it('reads IPv4 fragments', () => {
    const first = parsePacket(packet({ proto: 'udp', src: '198.18.0.1', dst: '198.18.0.2', dport: 53, moreFragments: true, id: 7, payload: Buffer.alloc(16) }));
    expect(first).toMatchObject({ proto: 'udp', dport: 53, moreFragments: true, fragmentOffset: 0, id: 7 });
    expect(first.l4ChecksumOk).toBeUndefined();
    const later = parsePacket(packet({ proto: 'udp', src: '198.18.0.1', dst: '198.18.0.2', fragmentOffset: 24, id: 7, payload: 'tail' }));
    expect(later).toMatchObject({ proto: 'udp', fragmentOffset: 24, moreFragments: false, ipChecksumOk: true });
    expect(later.sport).toBeUndefined();
    expect(later.payload.toString()).toBe('tail');
  });

  it('reads IPv6 fragment headers', () => {
    const frame = packet({ proto: 'tcp', src: 'fd00::1', dst: 'fd00::2', fragmentOffset: 1280, moreFragments: true, id: 0xdeadbeef, payload: 'raw' });
    expect(frame.readUInt8(14 + 6)).toBe(44);
    expect(parsePacket(frame)).toMatchObject({ family: 6, proto: 'tcp', fragmentOffset: 1280, moreFragments: true, id: 0xdeadbeef });
    const first = parsePacket(packet({ proto: 'udp', src: 'fd00::1', dst: 'fd00::2', dport: 7, moreFragments: true }));
    expect(first).toMatchObject({ proto: 'udp', dport: 7, fragmentOffset: 0, moreFragments: true });
  });

  it('skips IPv6 extension headers to the upper layer', () => {
    const frame = packet({ proto: 'udp', src: 'fd00::1', dst: 'fd00::2', dport: 4789, payload: 'vx' });
    // Splice in an 8-byte hop-by-hop header (PadN) in front of UDP.
    const hbh = Buffer.from([17, 0, 1, 4, 0, 0, 0, 0]);
    const withExt = Buffer.concat([frame.subarray(0, 54), hbh, frame.subarray(54)]);
    withExt.writeUInt8(0, 14 + 6);
    withExt.writeUInt16BE(withExt.length - 54, 14 + 4);
    expect(parsePacket(withExt)).toMatchObject({ proto: 'udp', dport: 4789, l4ChecksumOk: true });
  });

  it('ignores Ethernet padding after the IP packet', () => {
    const frame = packet({ proto: 'udp', src: '198.18.0.1', dst: '198.18.0.2', payload: 'a' });
    const padded = Buffer.concat([frame, Buffer.alloc(60 - frame.length)]);
    expect(parsePacket(padded)).toMatchObject({ l4ChecksumOk: true });
    expect(parsePacket(padded).payload.toString()).toBe('a');
  });

  it('throws RangeError on truncated frames', () => {
    const frame = packet({ proto: 'tcp', src: 'fd00::1', dst: 'fd00::2', payload: 'abc' });
    for (const len of [0, 13, 14 + 39, frame.length - 1]) {
      expect(() => parsePacket(frame.subarray(0, len))).toThrow(RangeError);
    }
  });
});

describe('pcap', () => {
  it('reads back what it writes', () => {
    const frames = [packet({ proto: 'tcp', src: '198.18.0.1', dst: '198.18.0.2' }), ethernet({ ethertype: ETH_P_ARP, payload: Buffer.alloc(28) })];
    const { linktype, records } = readPcap(writePcap(frames, 1_700_000_000_000_001));
    expect(linktype).toBe(1);
    expect(records.map((r) => r.data)).toEqual(frames);
    expect(records[1]!.timeUs).toBe(1_700_000_000_000_002);
  });
});

const tshark = findTool('tshark');

describe('cross-checked by tshark', () => {
  it.skipIf(tshark === undefined)('decodes our frames with correct checksums', async () => {
    const frames = [
      packet({ proto: 'tcp', src: '198.18.0.1', dst: '198.18.0.2', sport: 40001, dport: 8080, tcpFlags: { syn: true }, payload: 'syn-data' }),
      packet({ proto: 'udp', src: 'fd00::1', dst: 'fd00::2', sport: 5001, dport: 5002, payload: 'odd-length' }),
      packet({ proto: 'tcp', src: 'fd00::a', dst: 'fd00::b', sport: 443, dport: 50000, tcpOptions: Buffer.from([2, 4, 5, 0xb4]), payload: 'v6' }),
      packet({ proto: 'udp', src: '198.18.0.1', dst: '198.18.0.2', sport: 7, dport: 9, ipv4Options: Buffer.from([1, 1, 1, 1]), payload: 'x' }),
    ];
    const dir = mkdtempSync(join(tmpdir(), 'testkit-pcap-'));
    try {
      const file = join(dir, 'frames.pcap');
      writeFileSync(file, writePcap(frames));
      const checks = ['-o', 'ip.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE'];
      const run = async (args: string[]): Promise<string> =>
        (await promisify(execFile)(tshark!, ['-r', file, '-n', ...checks, ...args], { timeout: 30_000 })).stdout;
      const fields = ['ip.src', 'ipv6.src', 'tcp.srcport', 'udp.srcport', 'ip.checksum.status', 'tcp.checksum.status', 'udp.checksum.status'];
      const table = await run(['-T', 'fields', ...fields.flatMap((f) => ['-e', f]), '-E', 'separator=,']);
      // Checksum status 1 is "Good" (0 Bad, 2 Unverified, 3 Not present).
      expect(table.trim().split('\n')).toEqual([
        '198.18.0.1,,40001,,1,1,',
        ',fd00::1,,5001,,,1',
        ',fd00::a,443,,,1,',
        '198.18.0.1,,,7,1,,1',
      ]);
      const verbose = await run(['-V']);
      expect(verbose.match(/\[correct\]|Checksum Status: Good|checksum status: Good/gi)?.length).toBeGreaterThanOrEqual(6);
      expect(verbose).not.toMatch(/Bad|Malformed|incorrect/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
