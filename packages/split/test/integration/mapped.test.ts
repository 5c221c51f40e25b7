// A dual-stack client (an AF_INET6 socket, Java's default) dials an IPv4 service as ::ffff:a.b.c.d: it is served
// like an IPv4 client, TCP and UDP (connected and unconnected), and sees the mapped service address as its peer.
import { createCgroup, describePrivileged, type Cgroup } from '@mesh/testkit';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { SplitDatapath } from '../../src/index.js';
import { dialScript, namedServer, service, slice, snapshot, type NamedServer } from '../support.js';

const udpScript = fileURLToPath(new URL('../fixtures/udp.mjs', import.meta.url));

describePrivileged('IPv4-mapped service addresses on dual-stack sockets', () => {
  let cg: Cgroup;
  let dp: SplitDatapath;
  let tcp: NamedServer;
  let udp: UdpSocket & { port: number };

  beforeAll(async () => {
    cg = await createCgroup('splitmap');
    dp = SplitDatapath.load();
    dp.attach(cg.path);
    tcp = await namedServer('tcp4', '127.0.0.12');
    const s = createSocket('udp4');
    s.on('message', (msg, rinfo) => s.send(`udp4:${msg}`, rinfo.port, rinfo.address));
    s.bind(0, '127.0.0.12');
    await once(s, 'listening');
    udp = Object.assign(s, { port: s.address().port });
    dp.apply(
      snapshot({
        services: [service('web', '127.0.0.140', 8080), service('dns', '127.0.0.141', 5353, { protocol: 'UDP' })],
        endpointSlices: [slice('web', [tcp.host], tcp.port), slice('dns', ['127.0.0.12'], udp.port, { protocol: 'UDP' })],
      }),
    );
  });
  afterAll(async () => {
    dp?.close();
    await cg?.close();
    await tcp?.close();
    udp?.close();
  });

  it('TCP to ::ffff:VIP reaches the endpoint; getpeername() shows ::ffff:VIP', async () => {
    const r = await cg.run(process.execPath, [dialScript, '::ffff:127.0.0.140', '8080', '20', '4'], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ done: 20, byName: { tcp4: 20 }, peers: { '::ffff:127.0.0.140:8080': 20 }, errors: {} });
    expect(dp.counters().connect_rewrite).toBeGreaterThanOrEqual(20n);
  });

  it('UDP on a udp6 socket to ::ffff:VIP, unconnected and connected: replies come from ::ffff:VIP', async () => {
    const r = await cg.run(process.execPath, [udpScript, '::ffff:127.0.0.141', '5353', '10'], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      unconnected: { from: { '::ffff:127.0.0.141:5353': 10 }, names: { udp4: 10 } },
      connected: { from: { '::ffff:127.0.0.141:5353': 10 }, names: { udp4: 10 } },
      peer: '::ffff:127.0.0.141:5353',
    });
  });

  it('a mapped address that is no service passes untouched', async () => {
    const r = await cg.run(process.execPath, [dialScript, '::ffff:127.0.0.12', String(tcp.port), '5', '1'], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ byName: { tcp4: 5 }, peers: { [`::ffff:127.0.0.12:${tcp.port}`]: 5 }, errors: {} });
  });
});
