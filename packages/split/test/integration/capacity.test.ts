// A full per-connection table degrades only getpeername(): connections keep working and the overflow is counted.
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

  it('10 long-lived connections through a 4-entry table: all work, 6 overflows counted, all forgotten at close', async () => {
    const hold = cg.spawn(process.execPath, [holdScript, '127.0.0.130', '80', '10'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const [opened] = await waitForLine(hold, /^\{"opened":10.*$/, 30_000);
    expect(JSON.parse(opened)).toEqual({ opened: 10, byName: { only: 10 } });
    expect(dp.counters().orig_full).toBe(6n);
    expect(dp.fill().connections).toEqual({ used: 4, max: 4 });
    hold.stdin!.write('ping\n');
    const [round] = await waitForLine(hold, /^\{"round":1,.*$/, 30_000);
    expect(JSON.parse(round)).toMatchObject({ same: 10, dead: 0 });
    hold.stdin!.end();
    await new Promise((r) => hold.once('exit', r));
    expect(dp.fill().connections.used).toBe(0);
  });
});
