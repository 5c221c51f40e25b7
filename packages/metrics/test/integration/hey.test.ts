// hey against a node:http server answering a fixed mix of 200/404/503: the kernel's counts per status equal
// the requests made, on the client side and on the server side, with keep-alive on and off.
import { describePrivileged, ensureTool } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { byStatus, startServer, topology, type Topology } from '../support.js';

describePrivileged(
  'request counts',
  () => {
    let t: Topology;
    let port: number;
    const HOST = '127.0.0.12';

    beforeAll(async () => {
      t = await topology('metrics');
      port = (await startServer(t.cg, HOST, [200, 200, 404, 503])).port;
    });
    afterAll(async () => t?.close());

    for (const keepAlive of [true, false]) {
      it(`hey -n 2000 (keep-alive ${keepAlive ? 'on' : 'off'}): exact counts per status on both sides`, async () => {
        const before = { client: byStatus(t.dp.read().http, 'client', port), server: byStatus(t.dp.read().http, 'server', port) };
        const args = ['-n', '2000', '-c', '8', ...(keepAlive ? [] : ['-disable-keepalive']), `http://${HOST}:${port}/`];
        const r = await t.cg.run(ensureTool('hey'), args, { timeoutMs: 120_000 });
        expect(r.code, r.stderr).toBe(0);
        // hey's own summary: [200] 1000 responses …
        const heyCounts = Object.fromEntries([...r.stdout.matchAll(/\[(\d{3})\]\s+(\d+) responses/g)].map((m) => [m[1]!, Number(m[2])]));
        expect(heyCounts).toEqual({ 200: 1000, 404: 500, 503: 500 });
        const snap = t.dp.read();
        const delta = (now: Record<string, number>, was: Record<string, number>) =>
          Object.fromEntries(Object.entries(now).map(([k, v]) => [k, v - (was[k] ?? 0)]).filter(([, v]) => v !== 0));
        expect(delta(byStatus(snap.http, 'client', port), before.client)).toEqual({ 200: 1000, 404: 500, 503: 500 });
        expect(delta(byStatus(snap.http, 'server', port), before.server)).toEqual({ 200: 1000, 404: 500, 503: 500 });
        expect(snap.http.filter((s) => s.port === port).every((s) => s.method === 'GET')).toBe(true);
        expect(snap.counters.not_http).toBe(0);
      });
    }
  },
  { tools: ['hey'] },
);
