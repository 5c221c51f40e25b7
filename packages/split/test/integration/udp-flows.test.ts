// Unconnected UDP reply mappings (split_revnat, an LRU): sized by maxUdpFlows, evictions counted, and a live
// flow keeps its mapping while thousands of short-lived sockets churn the table.
import { createCgroup, describePrivileged, type Cgroup } from '@mesh/testkit';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { SplitDatapath } from '../../src/index.js';
import { service, slice, snapshot } from '../support.js';

const churnScript = fileURLToPath(new URL('../fixtures/udp-churn.mjs', import.meta.url));

describePrivileged('unconnected UDP reply mappings', () => {
  let cg: Cgroup;
  let dp: SplitDatapath;
  let srv: UdpSocket & { port: number };

  beforeAll(async () => {
    cg = await createCgroup('splitflows');
    dp = SplitDatapath.load({ maxUdpFlows: 1024 });
    dp.attach(cg.path);
    const s = createSocket('udp4');
    s.on('message', (msg, rinfo) => s.send(`srv:${msg}`, rinfo.port, rinfo.address));
    s.bind(0, '127.0.0.15');
    await once(s, 'listening');
    srv = Object.assign(s, { port: s.address().port });
    dp.apply(snapshot({ services: [service('dns', '127.0.0.143', 53, { protocol: 'UDP' })], endpointSlices: [slice('dns', ['127.0.0.15'], srv.port, { protocol: 'UDP' })] }));
  });
  afterAll(async () => {
    dp?.close();
    await cg?.close();
    srv?.close();
  });

  it('3,000 one-shot sockets through a 1,024-flow table: the live flow always sees the VIP; evictions are counted', async () => {
    const r = await cg.run(process.execPath, [churnScript, '127.0.0.143', '53', '3000', '100'], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ churn: 3000, from: { '127.0.0.143:53': 31 } });
    const flows = dp.fill().udp_flows;
    expect(flows.max).toBe(1024);
    expect(flows.used).toBeLessThanOrEqual(1024);
    const c = dp.counters();
    // One mapping per socket: the live one's 31 sends refreshed it in place rather than inserting it again.
    expect(c.revnat_insert).toBe(3001n);
    expect(dp.udpFlowsEvicted()).toBe(3001 - flows.used);
    expect(dp.udpFlowsEvicted()).toBeGreaterThanOrEqual(3001 - 1024);
  });

  it('maxUdpFlows is checked', () => {
    expect(() => SplitDatapath.load({ maxUdpFlows: 0 })).toThrow(/maxUdpFlows must be an integer/);
  });
});
