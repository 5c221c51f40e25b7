// Requests in many small writes, HTTP/1.0, large bodies in many segments (content-length and chunked), and a
// stream of random bytes: counts stay exact for the HTTP traffic and the random stream is not counted as HTTP.
// Twice: with both ends measured (the server's socket measures both sides) and with only the client measured
// (the server outside the mesh), so the client's own parsing of its requests and responses runs too.
import { createCgroup, describePrivileged, ensureTool, type Cgroup } from '@mesh/testkit';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { byStatus, startServer, topology, type Topology } from '../support.js';

const rawClient = fileURLToPath(new URL('../fixtures/raw-client.mjs', import.meta.url));
const HOST = '127.0.0.13';

for (const placement of ['both ends measured', 'only the client measured'] as const) {
  describePrivileged(`parsing across segments and writes (${placement})`, () => {
    let t: Topology;
    let serverCg: Cgroup | undefined;
    let port: number;
    const both = placement === 'both ends measured';
    /** What the server side should show: the client's counts, or nothing when the server is not measured. */
    const serverView = <T extends object>(client: T): T | Record<string, never> => (both ? client : {});

    beforeAll(async () => {
      t = await topology('metparse');
      if (!both) serverCg = await createCgroup('metparseout');
      port = (await startServer(serverCg ?? t.cg, HOST, [200, 404])).port;
    });
    afterAll(async () => {
      await t?.close();
      await serverCg?.close();
    });

    const delta = async (fn: () => Promise<void>) => {
      const was = { client: byStatus(t.dp.read().http, 'client', port), server: byStatus(t.dp.read().http, 'server', port) };
      await fn();
      const now = t.dp.read();
      const d = (a: Record<string, number>, b: Record<string, number>): Record<string, number> =>
        Object.fromEntries(Object.entries(a).map(([k, v]) => [k, v - (b[k] ?? 0)]).filter(([, v]) => v !== 0));
      return { client: d(byStatus(now.http, 'client', port), was.client), server: d(byStatus(now.http, 'server', port), was.server), counters: now.counters };
    };

    async function raw(mode: string, ...extra: string[]) {
      const r = await t.cg.run(process.execPath, [rawClient, HOST, String(port), mode, ...extra], { timeoutMs: 120_000 });
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as { statuses: Record<string, number>; sentValid?: number; methods?: Record<string, number> };
    }

    /** Runs raw-client MODE, which must get the statuses `want`; the mesh must count exactly those on each side measured. */
    async function countedExactly(mode: string, want: Record<string, number>) {
      const d = await delta(async () => {
        expect((await raw(mode)).statuses).toEqual(want);
      });
      expect(d.client).toEqual(want);
      expect(d.server).toEqual(serverView(want));
    }

    it('20 keep-alive requests written 3 bytes at a time are 20 requests', async () => {
      await countedExactly('small-writes', { 200: 10, 404: 10 });
    });

    it('each method, written whole and in pieces, is counted under its own name (an unknown one as _OTHER)', async () => {
      const byMethod = (dir: 'client' | 'server') => {
        const out: Record<string, number> = {};
        for (const s of t.dp.read().http) if (s.direction === dir && s.port === port) out[s.method] = (out[s.method] ?? 0) + s.count;
        return out;
      };
      const was = { client: byMethod('client'), server: byMethod('server') };
      const r = await raw('methods');
      const sent = { GET: 2, HEAD: 2, POST: 2, PUT: 2, DELETE: 2, OPTIONS: 2, TRACE: 2, PATCH: 2, PURGE: 2 };
      expect(r.methods).toEqual(sent);
      const { PURGE, ...named } = sent;
      const want = { ...named, _OTHER: PURGE };
      for (const dir of ['client', 'server'] as const) {
        const now = byMethod(dir);
        const d = Object.fromEntries(Object.entries(now).map(([k, v]) => [k, v - (was[dir][k] ?? 0)]).filter(([, v]) => v !== 0));
        expect(d, dir).toEqual(dir === 'client' ? want : serverView(want));
      }
    });

    it('HTTP/1.0, one request per connection', async () => {
      await countedExactly('http10', { 200: 5, 404: 5 });
    });

    it('1 MB request and response bodies in many segments, content-length and chunked (curl)', async () => {
      const curl = ensureTool('curl');
      const d = await delta(async () => {
        for (const chunked of [false, true]) {
          const args = ['-s', '-o', '/dev/null', '-w', '%{http_code}\\n', '--data-binary', '@-', ...(chunked ? ['-H', 'Transfer-Encoding: chunked'] : []), `http://${HOST}:${port}/upload`, `http://${HOST}:${port}/upload`];
          const r = await t.cg.run(curl, args, { timeoutMs: 60_000, input: Buffer.alloc(1 << 20, 'b') });
          expect(r.code, r.stderr).toBe(0);
        }
      });
      // 4 POSTs (2 per curl run, on one keep-alive connection each): alternating 200/404 at the server.
      expect(Object.values(d.client).reduce((a, b) => a + b, 0)).toBe(4);
      expect(d.server).toEqual(serverView(d.client));
    });

    it('"Expect: 100-continue": the final status is counted, not the interim 100, and the connection stays HTTP', async () => {
      const before = t.dp.read().counters;
      // 3 POSTs whose bodies follow the server's 100 Continue, then 3 GETs, on one connection: 200/404 alternating.
      await countedExactly('continue', { 200: 3, 404: 3 });
      const after = t.dp.read().counters;
      // The bodies sent after the 100 are bodies: not a request line that failed, not a stream that is not HTTP.
      expect(after.not_http - before.not_http).toBe(0);
      expect(after.unparsed_status - before.unparsed_status).toBe(0);
    });

    it('a stream of random bytes is not counted as HTTP; its bytes are, exactly, on both ends', async () => {
      const bytes = (dir: 'client' | 'server') => {
        const s = t.dp.read().tcp.filter((x) => x.port === port && x.direction === dir);
        return { sent: s.reduce((a, x) => a + x.bytesSent, 0), received: s.reduce((a, x) => a + x.bytesReceived, 0), closed: s.reduce((a, x) => a + x.closed, 0) };
      };
      const [c0, s0] = [bytes('client'), bytes('server')];
      const before = t.dp.read().counters.not_http;
      const d = await delta(async () => {
        await raw('random');
      });
      // Closed connections have flushed their byte counts.
      const closed = () => (both ? bytes('server').closed > s0.closed : bytes('client').closed > c0.closed);
      for (let i = 0; i < 50 && !closed(); i++) await new Promise((r) => setTimeout(r, 50));
      const [c1, s1] = [bytes('client'), bytes('server')];
      expect(c1.sent - c0.sent).toBe(64 * 1024);
      if (both) {
        expect(s1.received - s0.received).toBe(64 * 1024);
        expect(c1.received - c0.received).toBe(s1.sent - s0.sent);
      } else {
        expect(s1).toEqual(s0);
      }
      expect(d.client).toEqual({});
      expect(d.server).toEqual({});
      // Each side measured saw a stream that does not start like HTTP/1.x.
      expect(t.dp.read().counters.not_http - before).toBe(both ? 2 : 1);
    });
  });
}
