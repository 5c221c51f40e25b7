// A full per-connection table degrades only getpeername(): connections keep working, show the endpoint as their
// peer, and the overflow is counted. Slots given back at close are taken again.
import { createCgroup, describePrivileged, waitForLine, type Cgroup } from '@mesh/testkit';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { SplitDatapath } from '../../src/index.js';
import { namedServer, service, slice, snapshot, type NamedServer } from '../support.js';

const holdScript = fileURLToPath(new URL('../fixtures/hold.mjs', import.meta.url));

describePrivileged('per-connection table capacity', () => {
  let cg: Cgroup;
  let dp: SplitDatapath;
  let srv: NamedServer;

  beforeAll(async () => {
    cg = await createCgroup('splitcap');
    dp = SplitDatapath.load({ maxConnections: 4 });
    dp.attach(cg.path);
    srv = await namedServer('only', '127.0.0.11', { keepOpen: true });
    dp.apply(snapshot({ services: [service('small', '127.0.0.130', 80)], endpointSlices: [slice('small', [srv.host], srv.port)] }));
  });
  afterAll(async () => {
    dp?.close();
    await cg?.close();
    await srv?.close();
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
});
