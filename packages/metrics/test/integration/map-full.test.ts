// Full aggregation maps: what finds no entry of its own is counted under the overflow key, and counted as
// overflow; no request and no connection is lost.
import { describePrivileged, ensureTool } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { startServer, topology, type Topology } from '../support.js';

const HOST = '127.0.0.15';

describePrivileged(
  'full kernel maps',
  () => {
    let t: Topology;
    let port: number;

    beforeAll(async () => {
      // Room for two request series (http_cells) and, with the overflow entry, one connection key: six request
      // keys (client and server side × three statuses) and two connection keys (client and server side) meet
      // full maps.
      t = await topology('metfull', { maxHttpKeys: 3, maxTcpKeys: 2 });
      port = (await startServer(t.cg, HOST, [200, 404, 503])).port;
    });
    afterAll(async () => t?.close());

    it('300 requests on 3 connections: 600 counted in all (own entries + overflow), overflow counted', async () => {
      const r = await t.cg.run(ensureTool('hey'), ['-n', '300', '-c', '3', `http://${HOST}:${port}/`], { timeoutMs: 60_000 });
      expect(r.code, r.stderr).toBe(0);
      const snap = t.dp.read();
      const own = snap.http.filter((s) => s.cgroupId !== undefined);
      const over = snap.http.filter((s) => s.cgroupId === undefined);
      expect(own.length).toBe(2);
      const total = (xs: { count: number }[]) => xs.reduce((a, s) => a + s.count, 0);
      expect(total(own) + total(over)).toBe(600);
      expect(total(over)).toBeGreaterThan(0);
      expect(snap.counters.http_overflow).toBe(total(over));
      // Each side saw all 300, counting its overflow: a server-side exchange that overflowed is a server one.
      const side = (d: 'client' | 'server') => total(snap.http.filter((s) => s.direction === d));
      expect({ client: side('client'), server: side('server') }).toEqual({ client: 300, server: 300 });
      // Connections: hey's 3 on the client side and the server's 3; one side found an entry, the other overflowed.
      const opened = snap.tcp.reduce((a, s) => a + s.opened, 0);
      expect(opened).toBe(6);
      expect(snap.tcp.filter((s) => s.cgroupId !== undefined).length).toBe(1);
      expect(snap.counters.tcp_overflow).toBeGreaterThanOrEqual(3);
    });
  },
  { tools: ['hey'] },
);
