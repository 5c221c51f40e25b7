// A full per-connection table degrades only a TCP connection's getpeername(): connections keep working, show the
// endpoint as their peer, and the overflow is counted. Slots given back at close are taken again. Connected UDP
// falls back to the reply-mapping table: its replies and peer still show the service address.
import { createCgroup, describePrivileged, waitForLine, type Cgroup } from '@mesh/testkit';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { SplitDatapath } from '../../src/index.js';
import { namedServer, service, slice, snapshot, type NamedServer } from '../support.js';

const holdScript = fileURLToPath(new URL('../fixtures/hold.mjs', import.meta.url));
const udpScript = fileURLToPath(new URL('../fixtures/udp.mjs', import.meta.url));

describePrivileged('per-connection table capacity', () => {
  let cg: Cgroup;
  let dp: SplitDatapath;
  let srv: NamedServer;
  let udp: UdpSocket & { port: number };

  beforeAll(async () => {
    cg = await createCgroup('splitcap');
    dp = SplitDatapath.load({ maxConnections: 4 });
    dp.attach(cg.path);
    srv = await namedServer('only', '127.0.0.11', { keepOpen: true });
    const u = createSocket('udp4');
    u.on('message', (msg, rinfo) => u.send(`udp:${msg}`, rinfo.port, rinfo.address));
    u.bind(0, '127.0.0.11');
    await once(u, 'listening');
    udp = Object.assign(u, { port: u.address().port });
    dp.apply(
      snapshot({
        services: [service('small', '127.0.0.130', 80), service('dns', '127.0.0.131', 53, { protocol: 'UDP' })],
        endpointSlices: [slice('small', [srv.host], srv.port), slice('dns', ['127.0.0.11'], udp.port, { protocol: 'UDP' })],
      }),
    );
  });
  afterAll(async () => {
    dp?.close();
    await cg?.close();
    await srv?.close();
    udp?.close();
  });

  async function holdOpen(n: number) {
    const hold = cg.spawn(process.execPath, [holdScript, '127.0.0.130', '80', String(n)], { stdio: ['pipe', 'pipe', 'pipe'] });
    const [opened] = await waitForLine(hold, new RegExp(`^\\{"opened":${n},.*$`), 30_000);
    return { hold, opened: JSON.parse(opened) as { opened: number; byName: Record<string, number>; peers: Record<string, number> } };
  }

  it('10 long-lived connections through a 4-slot table: all work, 4 see the VIP, 6 overflows counted; slots come back at close', async () => {
    const { hold, opened } = await holdOpen(10);
    expect(opened).toEqual({ opened: 10, byName: { only: 10 }, peers: { '127.0.0.130:80': 4, [`${srv.host}:${srv.port}`]: 6 } });
    expect(dp.counters().orig_full).toBe(6n);
    expect(dp.fill().connections).toEqual({ used: 4, max: 4 });
    hold.stdin!.write('ping\n');
    const [round] = await waitForLine(hold, /^\{"round":1,.*$/, 30_000);
    expect(JSON.parse(round)).toMatchObject({ same: 10, dead: 0 });
    hold.stdin!.end();
    await new Promise((r) => hold.once('exit', r));
    expect(dp.fill().connections.used).toBe(0);

    // The released slots are free again: four new connections all see the VIP.
    const again = await holdOpen(4);
    expect(again.opened.peers).toEqual({ '127.0.0.130:80': 4 });
    expect(dp.counters().orig_full).toBe(6n);
    again.hold.stdin!.end();
    await new Promise((r) => again.hold.once('exit', r));
    expect(dp.fill().connections.used).toBe(0);
  });

  it('with every slot held, connected UDP still shows the VIP (reply-mapping fallback, counted)', async () => {
    const { hold } = await holdOpen(4);
    const before = dp.counters();
    const r = await cg.run(process.execPath, [udpScript, '127.0.0.131', '53', '5'], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      unconnected: { from: { '127.0.0.131:53': 5 }, names: { udp: 5 } },
      connected: { from: { '127.0.0.131:53': 5 }, names: { udp: 5 } },
      peer: '127.0.0.131:53',
    });
    const after = dp.counters();
    expect(after.orig_full - before.orig_full).toBe(1n);
    expect(after.orig_fallback - before.orig_fallback).toBe(1n);
    hold.stdin!.end();
    await new Promise((r) => hold.once('exit', r));
  });
});
