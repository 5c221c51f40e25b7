// What the application sees: getpeername() is the address it dialled; UDP replies come from the service
// address; IPv6 services work like IPv4 ones; addresses that are no service pass untouched.
import { createCgroup, describePrivileged, type Cgroup } from '@mesh/testkit';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { SplitDatapath } from '../../src/index.js';
import { dialScript, namedServer, service, slice, snapshot, type NamedServer } from '../support.js';

const udpScript = fileURLToPath(new URL('../fixtures/udp.mjs', import.meta.url));

async function udpServer(name: string, host: string): Promise<UdpSocket & { port: number }> {
  const s = createSocket(host.includes(':') ? 'udp6' : 'udp4');
  s.on('message', (msg, rinfo) => s.send(`${name}:${msg}`, rinfo.port, rinfo.address));
  s.bind(0, host);
  await once(s, 'listening');
  return Object.assign(s, { port: s.address().port });
}

describePrivileged('what the application sees', () => {
  let cg: Cgroup;
  let dp: SplitDatapath;
  let tcp4: NamedServer, tcp6: NamedServer;
  let udp4: UdpSocket & { port: number }, udp6: UdpSocket & { port: number };

  beforeAll(async () => {
    cg = await createCgroup('splitpeer');
    dp = SplitDatapath.load();
    dp.attach(cg.path);
    tcp4 = await namedServer('tcp4', '127.0.0.8');
    tcp6 = await namedServer('tcp6', '::1');
    udp4 = await udpServer('udp4', '127.0.0.8');
    udp6 = await udpServer('udp6', '::1');
    dp.apply(
      snapshot({
        services: [
          service('web', ['127.0.0.120', '::1'], 8080),
          service('dns', ['127.0.0.121', '::1'], 5353, { protocol: 'UDP' }),
          // No endpoints: nothing can take its traffic.
          service('void', '127.0.0.122', 5353, { protocol: 'UDP' }),
        ],
        endpointSlices: [
          slice('web', ['127.0.0.8'], tcp4.port, { name: 'web-v4' }),
          slice('web', ['::1'], tcp6.port, { name: 'web-v6', family: 6 }),
          slice('dns', ['127.0.0.8'], udp4.port, { name: 'dns-v4', protocol: 'UDP' }),
          slice('dns', ['::1'], udp6.port, { name: 'dns-v6', protocol: 'UDP', family: 6 }),
        ],
      }),
    );
  });
  afterAll(async () => {
    dp?.close();
    await cg?.close();
    await tcp4?.close();
    await tcp6?.close();
    udp4?.close();
    udp6?.close();
  });

  async function dial(host: string, port: number, n: number) {
    const r = await cg.run(process.execPath, [dialScript, host, String(port), String(n), '8'], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as { byName: Record<string, number>; peers: Record<string, number>; errors: Record<string, number> };
  }

  it('TCP over IPv4 and IPv6: the backend answers, getpeername() shows the service address', async () => {
    expect(await dial('127.0.0.120', 8080, 50)).toMatchObject({ byName: { tcp4: 50 }, peers: { '127.0.0.120:8080': 50 }, errors: {} });
    expect(await dial('::1', 8080, 50)).toMatchObject({ byName: { tcp6: 50 }, peers: { '::1:8080': 50 }, errors: {} });
  });

  it('UDP, unconnected and connected: replies come from the service address', async () => {
    for (const [vip, name] of [['127.0.0.121', 'udp4'], ['::1', 'udp6']] as const) {
      const r = await cg.run(process.execPath, [udpScript, vip, '5353', '10'], { timeoutMs: 30_000 });
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out).toEqual({
        unconnected: { from: { [`${vip}:5353`]: 10 }, names: { [name]: 10 } },
        connected: { from: { [`${vip}:5353`]: 10 }, names: { [name]: 10 } },
        peer: `${vip}:5353`,
      });
    }
    const c = dp.counters();
    expect(c.sendmsg_rewrite).toBeGreaterThanOrEqual(20n);
    expect(c.recvmsg_rewrite).toBeGreaterThanOrEqual(40n);
  });

  it('UDP to a service without endpoints is refused with ECONNREFUSED, sent or connected', async () => {
    const before = dp.counters();
    const script = `
      const dgram = require('node:dgram');
      const out = {};
      const done = () => { console.log(JSON.stringify(out)); process.exit(0); };
      const s = dgram.createSocket('udp4');
      s.send('x', 5353, '127.0.0.122', (err) => {
        out.send = err ? err.code : 'sent';
        const c = dgram.createSocket('udp4');
        c.on('error', (e) => { out.connect = e.code; done(); });
        c.connect(5353, '127.0.0.122', (e) => { out.connect = e ? e.code : 'connected'; done(); });
      });`;
    const r = await cg.run(process.execPath, ['-e', script], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ send: 'ECONNREFUSED', connect: 'ECONNREFUSED' });
    const after = dp.counters();
    expect(after.sendmsg_no_backend - before.sendmsg_no_backend).toBe(1n);
    expect(after.connect_no_backend - before.connect_no_backend).toBe(1n);
  });

  it('an address that is no service passes untouched', async () => {
    const r = await dial('127.0.0.8', tcp4.port, 10);
    expect(r).toMatchObject({ byName: { tcp4: 10 }, peers: { [`127.0.0.8:${tcp4.port}`]: 10 }, errors: {} });
  });

  it('a process outside the cgroup is not served: the VIP is just an address with nothing behind it', async () => {
    const { connect } = await import('node:net');
    const s = connect({ host: '127.0.0.120', port: 8080 });
    const [err] = (await once(s, 'error')) as [NodeJS.ErrnoException];
    expect(err.code).toBe('ECONNREFUSED');
  });
});
