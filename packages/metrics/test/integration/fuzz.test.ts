// 10,000 random or mutated requests: nothing crashes, nothing is counted that was not an exchange, every
// connection is accounted for, and real traffic afterwards is still counted exactly.
import { describePrivileged, ensureTool } from '@mesh/testkit';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { byStatus, startServer, topology, type Topology } from '../support.js';

const rawClient = fileURLToPath(new URL('../fixtures/raw-client.mjs', import.meta.url));
const HOST = '127.0.0.16';

describePrivileged(
  'fuzzed requests',
  () => {
    let t: Topology;
    let port: number;

    beforeAll(async () => {
      t = await topology('metfuzz');
      port = (await startServer(t.cg, HOST, [200])).port;
    });
    afterAll(async () => t?.close());

    it('10,000 random or mutated requests, then hey: exact counts again', async () => {
      const r = await t.cg.run(process.execPath, [rawClient, HOST, String(port), 'fuzz', '10000', '7'], { timeoutMs: 240_000 });
      expect(r.code, r.stderr).toBe(0);
      const { sentValid } = JSON.parse(r.stdout) as { sentValid: number };
      const snap = t.dp.read();
      const server = byStatus(snap.http, 'server', port);
      const client = byStatus(snap.http, 'client', port);
      const total = (m: Record<string, number>) => Object.values(m).reduce((a, b) => a + b, 0);
      // Every intact request was answered and counted; mutated ones may parse (a changed header byte) or not,
      // but nothing beyond the 10,000 exchanges attempted.
      expect(total(server)).toBeGreaterThanOrEqual(sentValid);
      expect(total(server)).toBeLessThanOrEqual(10_000);
      expect(total(client)).toBe(total(server));
      expect(snap.counters.not_http).toBeGreaterThan(0);
      // Every fuzz connection was opened and closed in the kernel's count (client and server side); the
      // server may close its last sockets a moment after the client is done.
      const tcp = () => {
        const pairs = t.dp.read().tcp.filter((s) => s.port === port);
        return { opened: pairs.reduce((a, s) => a + s.opened, 0), closed: pairs.reduce((a, s) => a + s.closed, 0) };
      };
      for (let i = 0; i < 50 && tcp().closed < 2 * 10_000; i++) await new Promise((res) => setTimeout(res, 100));
      expect(tcp()).toEqual({ opened: 2 * 10_000, closed: 2 * 10_000 });

      const h = await t.cg.run(ensureTool('hey'), ['-n', '500', '-c', '4', `http://${HOST}:${port}/`], { timeoutMs: 60_000 });
      expect(h.code, h.stderr).toBe(0);
      const after = byStatus(t.dp.read().http, 'server', port);
      expect((after['200'] ?? 0) - (server['200'] ?? 0)).toBe(500);
    });
  },
  { tools: ['hey'] },
);
