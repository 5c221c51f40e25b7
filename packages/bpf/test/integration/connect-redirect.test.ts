// sock_redirect's sock_addr programs on a scratch cgroup: a peer inside the cgroup talks to a service address
// ("VIP") where nothing listens and reaches the real server, while every address it sees is still the VIP.
import { describePrivileged, type Cgroup } from '@mesh/testkit';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo } from 'node:net';
import { expect, it } from 'vitest';


import { codec as c } from '../../src/index.js';
import { endpoint4, endpoint6, Hook, testprog, testprogs } from '../programs.js';
import { startPeer } from './peer.js';
import { localTcpServer, localUdpEcho, pattern, readArray, scratchCgroups } from './support.js';

const names = testprogs.sock_redirect;
const HOOKS = Object.keys(Hook).length;
const families = [
  { family: 4, host: '127.0.0.1', connect: Hook.CONNECT4, getpeername: Hook.GETPEERNAME4, sendmsg: Hook.SENDMSG4, recvmsg: Hook.RECVMSG4 },
  { family: 6, host: '::1', connect: Hook.CONNECT6, getpeername: Hook.GETPEERNAME6, sendmsg: Hook.SENDMSG6, recvmsg: Hook.RECVMSG6 },
] as const;

const scratchCgroup = scratchCgroups('bpfrd');

/** sock_redirect with all eight programs attached to `cg`. */
function redirector(cg: Cgroup) {
  const obj = testprog(names.name).load();
  try {
    for (const p of Object.values(names.programs)) obj.program(p).attachCgroup(cg.path);
    const hits = obj.map(names.maps.hook_hits, { key: c.u32, value: c.u64n });
    const v4 = {
      redirect: obj.map(names.maps.redirect_v4, { key: endpoint4, value: endpoint4 }),
      reverse: obj.map(names.maps.reverse_v4, { key: endpoint4, value: endpoint4 }),
    };
    const v6 = {
      redirect: obj.map(names.maps.redirect_v6, { key: endpoint6, value: endpoint6 }),
      reverse: obj.map(names.maps.reverse_v6, { key: endpoint6, value: endpoint6 }),
    };
    return {
      hits: () => readArray(hits, HOOKS),
      /** Service vip:vipPort → backend host:realPort, both ways. */
      route(family: 4 | 6, host: string, vipPort: number, realPort: number) {
        const m = family === 4 ? v4 : v6;
        m.redirect.set({ addr: host, port: vipPort }, { addr: host, port: realPort });
        m.reverse.set({ addr: host, port: realPort }, { addr: host, port: vipPort });
      },
      [Symbol.dispose]: () => obj.close(),
    };
  } catch (e) {
    obj.close();
    throw e;
  }
}

/** A TCP port on `host` where nothing listens now: a connect from outside the cgroup is refused. */
async function unusedPort(host: string): Promise<number> {
  const probe = createServer().listen(0, host);
  await once(probe, 'listening');
  const port = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));
  const s = connect(port, host);
  const outcome = await new Promise<string>((resolve) => {
    s.once('connect', () => resolve('connected'));
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
  s.destroy();
  expect(outcome).toBe('ECONNREFUSED');
  return port;
}

/** Hit counts with only the given hooks set. */
function only(entries: [number, number][]): number[] {
  const out = new Array<number>(HOOKS).fill(0);
  for (const [hook, n] of entries) out[hook] = n;
  return out;
}

describePrivileged('connect/sendmsg redirection with recvmsg/getpeername reversal', () => {
  it.each(families)('IPv$family TCP: a connect to the VIP reaches the real server; the client still sees the VIP', async (f) => {
    await using cg = await scratchCgroup();
    using r = redirector(cg);
    await using server = await localTcpServer(f.host, 'echo');
    const vip = await unusedPort(f.host);
    r.route(f.family, f.host, vip, server.port);
    const client = await startPeer(cg);

    const [conn] = await client.connect({ host: f.host, port: vip });
    // getpeername() in the client is rewritten back to the VIP it dialled.
    expect(conn).toMatchObject({ remoteAddress: f.host, remotePort: vip });
    await expect.poll(() => server.accepted.length, { timeout: 2000 }).toBe(1);
    // The server sees the client's real address and port, on its own port.
    expect(server.accepted[0]).toMatchObject({ remotePort: conn!.localPort, localPort: server.port });

    await client.write({ sizes: [10, 2000, 3] });
    const [echoed] = await client.finish();
    expect(echoed).toBe(pattern(0, 2013).toString());
    expect(r.hits()).toEqual(only([[f.connect, 1], [f.getpeername, 1]]));
  });

  it.each(families)('IPv$family UDP: sendto the VIP reaches the real server; answers come from the VIP', async (f) => {
    await using cg = await scratchCgroup();
    using r = redirector(cg);
    await using server = await localUdpEcho(f.family, f.host);
    const vip = await unusedPort(f.host);
    r.route(f.family, f.host, vip, server.port);
    const client = await startPeer(cg);

    const payloads = ['one', 'two', 'three'];
    const { localPort, results } = await client.udpExchange({ family: f.family, host: f.host, port: vip, payloads });

    expect(results).toEqual(payloads.map((data) => ({ data, fromAddress: f.host, fromPort: vip })));
    expect(server.sources).toEqual(payloads.map(() => ({ address: f.host, port: localPort })));
    expect(r.hits()).toEqual(only([[f.sendmsg, payloads.length], [f.recvmsg, payloads.length]]));
  });

  it.each(families)('IPv$family: addresses with no map entry pass untouched', async (f) => {
    await using cg = await scratchCgroup();
    using r = redirector(cg);
    await using tcp = await localTcpServer(f.host, 'echo');
    await using udp = await localUdpEcho(f.family, f.host);
    // A route for another service: a lookup miss must not disturb these connections.
    r.route(f.family, f.host, await unusedPort(f.host), await unusedPort(f.host));
    const client = await startPeer(cg);

    const [conn] = await client.connect({ host: f.host, port: tcp.port });
    expect(conn).toMatchObject({ remoteAddress: f.host, remotePort: tcp.port });
    await client.write({ sizes: [5] });
    expect(await client.finish()).toEqual([pattern(0, 5).toString()]);
    const { results } = await client.udpExchange({ family: f.family, host: f.host, port: udp.port, payloads: ['x'] });
    expect(results).toEqual([{ data: 'x', fromAddress: f.host, fromPort: udp.port }]);
    expect(r.hits()).toEqual(only([]));
  });
});
