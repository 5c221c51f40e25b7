// sock_track's socket-map programs on real loopback connections: msg_count (sk_msg) on the sockhash that
// sockops fills from a scratch cgroup, and skb_verdict (sk_skb stream_verdict) on a sockmap filled by fd.
import { describePrivileged, type Cgroup } from '@mesh/testkit';
import { once } from 'node:events';
import { connect } from 'node:net';
import { expect, it } from 'vitest';


import { codec as c, socketCookie, socketFd } from '../../src/index.js';
import { connState, Counter, Role, sockKey, testprog, testprogs } from '../programs.js';
import { startPeer } from './peer.js';
import { localTcpServer, pattern, scratchCgroups } from './support.js';

const names = testprogs.sock_track;
/** Writes per connection, each flushed before the next: one sendmsg() each. */
const SIZES = [100, 1000, 5000, 1];
const PER_CONN = SIZES.reduce((a, b) => a + b, 0);
const CONNS = 3;

const scratchCgroup = scratchCgroups('bpfmsg');

/** sock_track with sockops on `cg` and msg_count on the sockhash sockops fills. */
function msgCounting(cg: Cgroup) {
  const obj = testprog(names.name).load();
  try {
    const sockHash = obj.map(names.maps.sock_hash, { key: sockKey, value: c.u64 });
    // Programs of a sockmap apply to the sockets inserted after they are attached: attach first.
    obj.program(names.programs.msg_count).attachSockMap(sockHash);
    obj.program(names.programs.sockops_track).attachCgroup(cg.path);
    const counters = obj.map(names.maps.counters, { key: c.u32, value: c.u64n });
    return {
      counter: (i: number) => counters.get(i),
      sockHash,
      connState: obj.map(names.maps.conn_state, { key: c.i32, value: connState }),
      [Symbol.dispose]: () => obj.close(),
    };
  } catch (e) {
    obj.close();
    throw e;
  }
}

describePrivileged('sk_msg and sk_skb programs on socket maps', () => {
  it('msg_count sees every byte the sockets of the sockhash send, and the data still arrives', async () => {
    await using cg = await scratchCgroup();
    using t = msgCounting(cg);
    const server = await startPeer(cg);
    const client = await startPeer(cg);
    const { port } = await server.listen({ host: '127.0.0.1', mode: 'sink' });
    await client.connect({ host: '127.0.0.1', port, count: CONNS });
    // Both ends of every connection go into the sockhash (both processes are in the cgroup); the server's once
    // the client's ACK has arrived.
    await expect.poll(() => [...t.sockHash.keys()].length, { timeout: 2000 }).toBe(2 * CONNS);

    const { bytes } = await client.write({ sizes: SIZES });
    expect(bytes).toBe(CONNS * PER_CONN);
    // sk_msg runs inside sendmsg(): the counts are final when the write has returned.
    expect(t.counter(Counter.MSG_BYTES)).toBe(CONNS * PER_CONN);
    expect(t.counter(Counter.MSG_CALLS)).toBe(CONNS * SIZES.length);
    await expect.poll(async () => (await server.serverStats()).received, { timeout: 3000 }).toBe(CONNS * PER_CONN);

    // The per-socket share, in the client socket's sk_storage, read through an fd handed to this process.
    const mine = await client.handOver(0);
    try {
      expect(t.connState.get(socketFd(mine))).toMatchObject({
        cookie: socketCookie(mine),
        role: Role.ACTIVE,
        msgBytes: PER_CONN,
        msgCount: SIZES.length,
      });
    } finally {
      mine.destroy();
    }

    // Each server end answers with the count it read: one more sendmsg() per connection, through sk_msg too.
    const answers = await client.finish();
    expect(answers).toEqual(new Array(CONNS).fill(String(PER_CONN)));
    expect(t.counter(Counter.MSG_BYTES)).toBe(CONNS * PER_CONN + CONNS * String(PER_CONN).length);
    expect(t.counter(Counter.MSG_CALLS)).toBe(CONNS * SIZES.length + CONNS);
  });

  it('an echo through sk_msg on both ends returns the bytes intact and is counted twice', async () => {
    await using cg = await scratchCgroup();
    using t = msgCounting(cg);
    const server = await startPeer(cg);
    const client = await startPeer(cg);
    const { port } = await server.listen({ host: '::1', mode: 'echo' });
    await client.connect({ host: '::1', port, count: 1 });
    await expect.poll(() => [...t.sockHash.keys()].length, { timeout: 2000 }).toBe(2);

    await client.write({ sizes: SIZES });
    const [echoed] = await client.finish();
    expect(echoed).toBe(pattern(0, PER_CONN).toString());
    // The client's sends, then the echo's, however the server's reads split them.
    expect(t.counter(Counter.MSG_BYTES)).toBe(2 * PER_CONN);
    expect(t.counter(Counter.MSG_CALLS)).toBeGreaterThanOrEqual(SIZES.length + 1);
  });

  it('skb_verdict sees what a socket inserted into the sockmap by fd receives; the data still arrives', async () => {
    using obj = testprog(names.name).load();
    const sockMap = obj.map(names.maps.sock_map, { key: c.u32, value: c.u64 });
    const counters = obj.map(names.maps.counters, { key: c.u32, value: c.u64n });
    obj.program(names.programs.skb_verdict).attachSockMap(sockMap);
    await using server = await localTcpServer('127.0.0.1', 'sink');
    const client = connect(server.port, '127.0.0.1');
    try {
      await once(client, 'connect');
      await expect.poll(() => server.accepted.length, { timeout: 2000 }).toBe(1);
      const receiver = server.accepted[0]!;
      const received: Buffer[] = [];
      receiver.on('data', (d: Buffer) => received.push(d));

      sockMap.set(5, BigInt(socketFd(receiver)));
      // User space gets the socket cookie back, not the fd it put in.
      expect(sockMap.get(5)).toBe(socketCookie(receiver));
      expect(counters.get(Counter.SKB_CALLS)).toBe(0);

      let sent = 0;
      for (const size of SIZES) {
        await new Promise<void>((resolve, reject) => client.write(pattern(sent, size), (e) => (e ? reject(e) : resolve())));
        sent += size;
        // Each write arrives before the next is sent: one skb each on loopback.
        await expect.poll(() => Buffer.concat(received).length, { timeout: 3000 }).toBe(sent);
      }
      expect(Buffer.concat(received).equals(pattern(0, sent))).toBe(true);
      expect(counters.get(Counter.SKB_CALLS)).toBe(SIZES.length);

      // The FIN reaches the verdict as one more (empty) skb. The sending socket is not in the map: the answer
      // it receives is not seen.
      client.end();
      expect((await once(client, 'data'))[0].toString()).toBe(String(sent));
      expect(counters.get(Counter.SKB_CALLS)).toBe(SIZES.length + 1);
    } finally {
      client.destroy();
    }
  });
});
