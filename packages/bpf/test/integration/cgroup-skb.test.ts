// skb_guard's cgroup_skb programs on a scratch cgroup: a peer inside does real TCP and UDP over loopback; the
// programs count its packets per direction and drop those to blocked ports.
import { describePrivileged, type Cgroup } from '@mesh/testkit';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { expect, it } from 'vitest';


import { codec as c } from '../../src/index.js';
import { skbCounters, sumCounters, testprog, testprogs } from '../programs.js';
import { startPeer } from './peer.js';
import { localTcpServer, localUdpEcho, scratchCgroups } from './support.js';

const names = testprogs.skb_guard;
const INGRESS = 0;
const EGRESS = 1;
const UDP_HEADERS = { 4: 20 + 8, 6: 40 + 8 } as const;
// IPv4 + TCP with the timestamp option, which Linux puts on every segment after the handshake.
const TCP4_HEADERS = 20 + 20 + 12;

const scratchCgroup = scratchCgroups('bpfskb');

/** skb_guard with both programs attached to `cg`. */
function guard(cg: Cgroup) {
  const obj = testprog(names.name).load();
  try {
    obj.program(names.programs.skb_ingress).attachCgroup(cg.path);
    obj.program(names.programs.skb_egress).attachCgroup(cg.path);
    const stats = obj.perCpuMap(names.maps.skb_stats, { key: c.u32, value: skbCounters });
    return {
      stats: () => ({ ingress: sumCounters(stats.get(INGRESS)), egress: sumCounters(stats.get(EGRESS)) }),
      blocked: obj.map(names.maps.blocked_ports, { key: c.u16, value: c.u64n }),
      [Symbol.dispose]: () => obj.close(),
    };
  } catch (e) {
    obj.close();
    throw e;
  }
}

describePrivileged('cgroup_skb ingress and egress on a cgroup', () => {
  it.each([
    { family: 4, host: '127.0.0.1' },
    { family: 6, host: '::1' },
  ] as const)('IPv$family UDP: every datagram out and every answer in is counted with its IP length', async ({ family, host }) => {
    await using cg = await scratchCgroup();
    using g = guard(cg);
    await using server = await localUdpEcho(family, host);
    const client = await startPeer(cg);
    expect(g.stats()).toEqual({ ingress: { packets: 0, bytes: 0 }, egress: { packets: 0, bytes: 0 } });

    const payloads = ['a'.repeat(100), 'b'.repeat(1000), 'c'.repeat(9000), 'd'];
    const { results } = await client.udpExchange({ family, host, port: server.port, payloads });
    expect(results.map((r) => ('data' in r ? r.data : r))).toEqual(payloads);

    const ipBytes = payloads.reduce((n, p) => n + p.length + UDP_HEADERS[family], 0);
    const expected = { packets: payloads.length, bytes: ipBytes };
    expect(g.stats()).toEqual({ ingress: expected, egress: expected });
  });

  it('IPv4 TCP: data segments are counted out, acknowledgements and the answer in', async () => {
    await using cg = await scratchCgroup();
    using g = guard(cg);
    await using server = await localTcpServer('127.0.0.1', 'sink');
    const client = await startPeer(cg);
    await client.connect({ host: '127.0.0.1', port: server.port });
    await expect.poll(() => server.accepted.length, { timeout: 2000 }).toBe(1);
    const afterHandshake = g.stats();
    // SYN and ACK out, SYN-ACK in.
    expect(afterHandshake.egress.packets).toBe(2);
    expect(afterHandshake.ingress.packets).toBe(1);

    const { bytes } = await client.write({ sizes: [1000, 20_000, 100_000] });
    await expect.poll(() => server.received(), { timeout: 3000 }).toBe(bytes);
    const afterData = g.stats();
    const segments = afterData.egress.packets - afterHandshake.egress.packets;
    expect(segments).toBeGreaterThanOrEqual(3);
    // Every byte written, plus the headers of each segment (GSO super-packets included: one skb, one header).
    expect(afterData.egress.bytes - afterHandshake.egress.bytes).toBe(bytes + segments * TCP4_HEADERS);

    const [answer] = await client.finish();
    expect(answer).toBe(String(bytes));
    await expect.poll(() => g.stats().ingress.bytes - afterData.ingress.bytes, { timeout: 2000 }).toBeGreaterThanOrEqual(
      answer!.length + TCP4_HEADERS,
    );
    // Only headers came in while the client was sending: the server's acknowledgements.
    const acksIn = afterData.ingress.packets - afterHandshake.ingress.packets;
    expect(afterData.ingress.bytes - afterHandshake.ingress.bytes).toBe(acksIn * TCP4_HEADERS);
  });

  it('a blocked port: UDP sends fail with EPERM, a TCP connect never completes, and each drop is counted', async () => {
    await using cg = await scratchCgroup();
    using g = guard(cg);
    await using udp = await localUdpEcho(4, '127.0.0.1');
    await using tcp = await localTcpServer('127.0.0.1');
    g.blocked.set(udp.port, 0);
    g.blocked.set(tcp.port, 0);
    const client = await startPeer(cg);

    const { results } = await client.udpExchange({ family: 4, host: '127.0.0.1', port: udp.port, payloads: ['1', '2', '3'] });
    // A cgroup egress drop is an error the sender sees at once.
    expect(results).toEqual([{ sendError: 'EPERM' }, { sendError: 'EPERM' }, { sendError: 'EPERM' }]);
    expect(g.blocked.get(udp.port)).toBe(3);
    expect(udp.sources).toEqual([]);

    // TCP does not give up on a SYN dropped on the way out: it retransmits it (after 1 s), and each is dropped.
    expect(await client.tryConnect({ host: '127.0.0.1', port: tcp.port, timeoutMs: 1500 })).toEqual({ connected: false, code: 'TIMEOUT' });
    expect(g.blocked.get(tcp.port)).toBeGreaterThanOrEqual(2);
    expect(tcp.accepted).toEqual([]);
    // Dropped packets are not counted as passed.
    expect(g.stats().egress.packets).toBe(0);
  });

  it('a blocked port also drops on ingress: datagrams to a server in the cgroup never reach it', async () => {
    await using cg = await scratchCgroup();
    using g = guard(cg);
    const server = await startPeer(cg);
    const { port } = await server.udpListen({ family: 4, host: '127.0.0.1' });
    const sender = dgram.createSocket('udp4');
    try {
      sender.bind(0, '127.0.0.1');
      await once(sender, 'listening');
      const answers: string[] = [];
      sender.on('message', (m) => answers.push(m.toString()));
      const send = (text: string) => new Promise<void>((resolve, reject) => sender.send(text, port, '127.0.0.1', (e) => (e ? reject(e) : resolve())));

      g.blocked.set(port, 0);
      for (const text of ['x', 'y']) await send(text);
      await expect.poll(() => g.blocked.get(port), { timeout: 2000 }).toBe(2);

      // Unblocked, the same server answers: the drops were the program's.
      g.blocked.delete(port);
      await send('z');
      await expect.poll(() => answers, { timeout: 2000 }).toEqual(['z']);
      expect(g.blocked.get(port)).toBeUndefined();
      expect(g.stats()).toEqual({ ingress: { packets: 1, bytes: 29 }, egress: { packets: 1, bytes: 29 } });
    } finally {
      sender.close();
    }
  });
});
