// A UDP socket that stops being connected to a service address stops seeing it: after connect(AF_UNSPEC), after
// connect() to a plain address, after connect() to the endpoint's own address, getpeername() and recvmsg() show
// what the socket talks to now.
import { createCgroup, describePrivileged, type Cgroup } from '@mesh/testkit';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { SplitDatapath } from '../../src/index.js';
import { service, slice, snapshot } from '../support.js';

const staleScript = fileURLToPath(new URL('../fixtures/udp-stale.mjs', import.meta.url));

async function udpServer(name: string, host: string): Promise<UdpSocket & { port: number }> {
  const s = createSocket('udp4');
  s.on('message', (msg, rinfo) => s.send(`${name}:${msg}`, rinfo.port, rinfo.address));
  s.bind(0, host);
  await once(s, 'listening');
  return Object.assign(s, { port: s.address().port });
}

describePrivileged('stale per-socket state after a UDP re-connect', () => {
  let cg: Cgroup;
  let dp: SplitDatapath;
  let ep: UdpSocket & { port: number }, plain: UdpSocket & { port: number };

  beforeAll(async () => {
    cg = await createCgroup('splitstale');
    dp = SplitDatapath.load();
    dp.attach(cg.path);
    ep = await udpServer('ep', '127.0.0.13');
    plain = await udpServer('plain', '127.0.0.14');
    dp.apply(snapshot({ services: [service('dns', '127.0.0.142', 53, { protocol: 'UDP' })], endpointSlices: [slice('dns', ['127.0.0.13'], ep.port, { protocol: 'UDP' })] }));
  });
  afterAll(async () => {
    dp?.close();
    await cg?.close();
    ep?.close();
    plain?.close();
  });

  it('connect(VIP), then AF_UNSPEC, a plain address, the endpoint itself: each shows what it talks to', async () => {
    const r = await cg.run(process.execPath, [staleScript, '127.0.0.142', '53', '127.0.0.13', String(ep.port), '127.0.0.14', String(plain.port)], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      vip: { peer: '127.0.0.142:53', reply: 'ep@127.0.0.142:53' },
      unspec: { reply: `ep@127.0.0.13:${ep.port}` },
      plain: { peer: `127.0.0.14:${plain.port}`, reply: `plain@127.0.0.14:${plain.port}` },
      direct: { peer: `127.0.0.13:${ep.port}`, reply: `ep@127.0.0.13:${ep.port}` },
    });
  });
});
