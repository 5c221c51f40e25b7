// sock_track's sockops program on a scratch cgroup, driven by real TCP connections over loopback from peer
// processes inside the cgroup: the counters, the flows LRU, the sockhash and the sk_storage it fills.
import { describePrivileged, type Cgroup } from '@mesh/testkit';
import { expect, it } from 'vitest';


import { codec as c, socketCookie, socketFd } from '../../src/index.js';
import { connState, Counter, flowInfo, Role, sockKey, testprog, testprogs } from '../programs.js';
import { startPeer } from './peer.js';
import { localTcpServer, scratchCgroups, sockKeyOf } from './support.js';

const names = testprogs.sock_track;
const N = 20;
const hosts = [
  { family: 4, host: '127.0.0.1' },
  { family: 6, host: '::1' },
] as const;

const scratchCgroup = scratchCgroups('bpfso');

/** sock_track loaded with its sockops program attached to `cg`, and its maps opened. */
function tracker(cg: Cgroup) {
  const obj = testprog(names.name).load();
  try {
    obj.program(names.programs.sockops_track).attachCgroup(cg.path);
    const counters = obj.map(names.maps.counters, { key: c.u32, value: c.u64n });
    const flows = obj.map(names.maps.flows, { key: c.u64, value: flowInfo });
    const sockHash = obj.map(names.maps.sock_hash, { key: sockKey, value: c.u64 });
    return {
      counter: (i: number) => counters.get(i),
      flows,
      sockHash,
      connState: obj.map(names.maps.conn_state, { key: c.i32, value: connState }),
      /**
       * Counters with the sizes of the maps they go with. A callback counts first and updates the maps after, and
       * the kernel unhashes a closed socket only once the state callback has returned, so a test polls them together.
       */
      snapshot: () => ({
        active: counters.get(Counter.ACTIVE_ESTABLISHED),
        passive: counters.get(Counter.PASSIVE_ESTABLISHED),
        closed: counters.get(Counter.CLOSED),
        flows: [...flows.keys()].length,
        hashed: [...sockHash.keys()].length,
      }),
      [Symbol.dispose]: () => obj.close(),
    };
  } catch (e) {
    obj.close();
    throw e;
  }
}

describePrivileged('sockops connection tracking on a cgroup', () => {
  it.each(hosts)('IPv$family: client and server both in the cgroup: both ends established, hashed by 4-tuple, cleaned on close', async ({ host }) => {
    await using cg = await scratchCgroup();
    using t = tracker(cg);
    const server = await startPeer(cg);
    const client = await startPeer(cg);
    const { port } = await server.listen({ host });

    const conns = await client.connect({ host, port, count: N });

    // The server's end is established when the client's ACK arrives, which may trail the client's connect().
    await expect.poll(() => t.snapshot(), { timeout: 2000 }).toEqual({ active: N, passive: N, closed: 0, flows: 2 * N, hashed: 2 * N });

    const cookies = new Set<bigint>();
    for (const conn of conns) {
      const clientEnd = { address: conn.localAddress, port: conn.localPort };
      const serverEnd = { address: conn.remoteAddress, port: conn.remotePort };
      expect(serverEnd).toEqual({ address: host, port });
      const activeCookie = t.sockHash.get(sockKeyOf(clientEnd, serverEnd));
      const passiveCookie = t.sockHash.get(sockKeyOf(serverEnd, clientEnd));
      expect(activeCookie).toBeTypeOf('bigint');
      expect(passiveCookie).toBeTypeOf('bigint');
      // The sockhash answers user space with the socket cookie: the flows key of that same socket.
      expect(t.flows.get(activeCookie!)?.role).toBe(Role.ACTIVE);
      expect(t.flows.get(passiveCookie!)?.role).toBe(Role.PASSIVE);
      cookies.add(activeCookie!).add(passiveCookie!);
    }
    expect(cookies.size).toBe(2 * N);
    expect([...t.flows.keys()].sort()).toEqual([...cookies].sort());

    // sink mode: the server answers each connection with the byte count it read, then closes too.
    expect(await client.finish()).toEqual(new Array(N).fill('0'));

    await expect.poll(() => t.snapshot(), { timeout: 3000 }).toEqual({ active: N, passive: N, closed: 2 * N, flows: 0, hashed: 0 });
  });

  it.each(hosts)('IPv$family: server outside the cgroup (this process): only the client ends are tracked', async ({ host }) => {
    await using cg = await scratchCgroup();
    using t = tracker(cg);
    await using server = await localTcpServer(host);
    const client = await startPeer(cg);

    const conns = await client.connect({ host, port: server.port, count: N });
    await expect.poll(() => server.accepted.length, { timeout: 2000 }).toBe(N);

    // Accepted sockets belong to the listener's cgroup, which is not the one the program is attached to.
    expect(t.snapshot()).toEqual({ active: N, passive: 0, closed: 0, flows: N, hashed: N });
    for (const conn of conns) {
      const clientEnd = { address: conn.localAddress, port: conn.localPort };
      const serverEnd = { address: host, port: server.port };
      expect(t.sockHash.get(sockKeyOf(clientEnd, serverEnd))).toBeTypeOf('bigint');
      expect(t.sockHash.get(sockKeyOf(serverEnd, clientEnd))).toBeUndefined();
    }
    expect([...t.flows.values()].map((f) => f.role)).toEqual(new Array(N).fill(Role.ACTIVE));
    // The sockets this process accepted carry no socket storage: sockops never ran for them.
    for (const s of server.accepted) expect(t.connState.get(socketFd(s))).toBeUndefined();

    expect(await client.finish()).toEqual(new Array(N).fill('0'));
    await expect.poll(() => t.snapshot(), { timeout: 3000 }).toEqual({ active: N, passive: 0, closed: N, flows: 0, hashed: 0 });
  });

  it('sk_storage written by sockops is read from user space through an fd of the same socket', async () => {
    await using cg = await scratchCgroup();
    using t = tracker(cg);
    await using server = await localTcpServer('127.0.0.1');
    const client = await startPeer(cg);

    const before = process.hrtime.bigint();
    const [conn] = await client.connect({ host: '127.0.0.1', port: server.port });
    const after = process.hrtime.bigint();

    // sk_storage is keyed by an fd of this process: the peer passes its socket over (SCM_RIGHTS).
    const mine = await client.handOver(conn!.index);
    try {
      const fd = socketFd(mine);
      const cookie = socketCookie(fd);
      const st = t.connState.get(fd);
      expect(st).toMatchObject({ cookie, role: Role.ACTIVE, msgBytes: 0, msgCount: 0 });
      // bpf_ktime_get_ns and process.hrtime both read CLOCK_MONOTONIC.
      expect(st!.establishedNs).toBeGreaterThanOrEqual(before);
      expect(st!.establishedNs).toBeLessThanOrEqual(after);
      // flows holds the same moment under the same socket's cookie.
      expect(t.flows.get(cookie)).toEqual({ establishedNs: st!.establishedNs, role: Role.ACTIVE });
      expect(t.sockHash.get(sockKeyOf({ address: conn!.localAddress, port: conn!.localPort }, { address: '127.0.0.1', port: server.port }))).toBe(cookie);

      // User space can write the same storage; the program's next read sees it (here: ours).
      t.connState.set(fd, { ...st!, msgCount: 7 });
      expect(t.connState.get(fd)?.msgCount).toBe(7);
    } finally {
      // Closing our fd leaves the connection open: the peer still holds its own.
      mine.destroy();
    }
    expect(await client.finish()).toEqual(['0']);
    await expect.poll(() => t.counter(Counter.CLOSED), { timeout: 3000 }).toBe(1);
  });
});
