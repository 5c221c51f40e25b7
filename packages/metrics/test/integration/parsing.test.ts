// Requests in many small writes, HTTP/1.0, large bodies in many segments (content-length and chunked), and a
// stream of random bytes: counts stay exact for the HTTP traffic and the random stream is not counted as HTTP.
// Twice: with both ends measured (the server's socket measures both sides) and with only the client measured
// (the server outside the mesh), so the client's own parsing of its requests and responses runs too.
import { createCgroup, describePrivileged, ensureTool, type Cgroup } from '@mesh/testkit';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { byStatus, startFixture, startServer, topology, type Topology } from '../support.js';

const rawClient = fileURLToPath(new URL('../fixtures/raw-client.mjs', import.meta.url));
const HOST = '127.0.0.13';

for (const placement of ['both ends measured', 'only the client measured'] as const) {
  describePrivileged(`parsing across segments and writes (${placement})`, () => {
    let t: Topology;
    let serverCg: Cgroup | undefined;
    let port: number;
    /** special-server.mjs (early hints, upgrade, CONNECT) and h2-server.mjs, beside the fixture server. */
    let special: number, h2: number;
    const both = placement === 'both ends measured';
    /** What the server side should show: the client's counts, or nothing when the server is not measured. */
    const serverView = <T extends object>(client: T): T | Record<string, never> => (both ? client : {});

    beforeAll(async () => {
      t = await topology('metparse');
      if (!both) serverCg = await createCgroup('metparseout');
      port = (await startServer(serverCg ?? t.cg, HOST, [200, 404])).port;
      special = (await startFixture(serverCg ?? t.cg, 'special-server.mjs', [HOST])).port;
      h2 = (await startFixture(serverCg ?? t.cg, 'h2-server.mjs', [HOST])).port;
    });
    afterAll(async () => {
      await t?.close();
      await serverCg?.close();
    });

    const diff = (a: Record<string, number>, b: Record<string, number>): Record<string, number> =>
      Object.fromEntries(Object.entries(a).map(([k, v]) => [k, v - (b[k] ?? 0)]).filter(([, v]) => v !== 0));
    /** What fn adds on `on` (default: the fixture server's port), per side: by status, by method, and the counters. */
    const delta = async (fn: () => Promise<void>, on = port) => {
      const read = () => {
        const snap = t.dp.read();
        const method = (dir: 'client' | 'server') => {
          const out: Record<string, number> = {};
          for (const s of snap.http) if (s.direction === dir && s.port === on) out[s.method] = (out[s.method] ?? 0) + s.count;
          return out;
        };
        return { client: byStatus(snap.http, 'client', on), server: byStatus(snap.http, 'server', on), methods: { client: method('client'), server: method('server') }, counters: snap.counters };
      };
      const was = read();
      await fn();
      const now = read();
      return {
        client: diff(now.client, was.client),
        server: diff(now.server, was.server),
        methods: { client: diff(now.methods.client, was.methods.client), server: diff(now.methods.server, was.methods.server) },
        counters: diff(now.counters, was.counters),
      };
    };
    /** curl with OPTIONS, fetching URLS on one connection; resolves with the status codes, one a line. */
    const curl = async (opts: string[], urls: string[], input?: Buffer) => {
      const args = ['-s', '-w', '%{http_code}\\n', ...opts, ...urls.flatMap((u) => ['-o', '/dev/null', u])];
      const r = await t.cg.run(ensureTool('curl'), args, { timeoutMs: 60_000, input });
      expect(r.code, r.stderr).toBe(0);
      return r.stdout;
    };
    /** The sides measured: both, or the client's alone. */
    const sides = both ? 2 : 1;

    async function raw(mode: string, ...extra: string[]) {
      return rawAt(port, mode, ...extra);
    }

    async function rawAt(to: number, mode: string, ...extra: string[]) {
      const r = await t.cg.run(process.execPath, [rawClient, HOST, String(to), mode, ...extra], { timeoutMs: 120_000 });
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

    it('10 pipelined requests per write (3 writes on one connection) are 30 requests', async () => {
      const d = await delta(async () => {
        expect((await raw('pipelined')).statuses).toEqual({ 200: 15, 404: 15 });
      });
      expect(d.client).toEqual({ 200: 15, 404: 15 });
      expect(d.server).toEqual(serverView({ 200: 15, 404: 15 }));
      expect(d.methods.client).toEqual({ GET: 30 });
      expect(d.counters).toEqual(both ? { paired: 1 } : {});
    });

    it("writeEarlyHints() then writeHead(200) in one segment: the 200 is counted, not the 103", async () => {
      // 5 requests on one connection (curl reuses it).
      const url = `http://${HOST}:${special}/early`;
      const d = await delta(async () => {
        expect(await curl([], [url, url, url, url, url])).toBe('200\n'.repeat(5));
      }, special);
      expect(d.client).toEqual({ 200: 5 });
      expect(d.server).toEqual(serverView({ 200: 5 }));
      expect(d.counters.unparsed_status ?? 0).toBe(0);
    });

    it('HTTP/2 with prior knowledge (curl against node:http2) is not counted as HTTP/1: counted as HTTP/2', async () => {
      const url = `http://${HOST}:${h2}/`;
      // Two connections (curl 7.88 fails a second request on a reused prior-knowledge connection).
      const d = await delta(async () => {
        for (let i = 0; i < 2; i++) expect(await curl(['--http2-prior-knowledge'], [url])).toBe('200\n');
      }, h2);
      expect(d.client).toEqual({});
      expect(d.server).toEqual({});
      // Each connection seen by each side measured; nothing counted as a failed HTTP/1 exchange.
      expect(d.counters).toEqual({ http2: 2 * sides, ...(both ? { paired: 2 } : {}) });
    });

    it('after 101 Switching Protocols (Upgrade: h2c) the connection is not HTTP/1: only the 101 counts', async () => {
      const d = await delta(async () => {
        expect((await rawAt(special, 'upgrade')).statuses).toEqual({ 101: 1 });
      }, special);
      expect(d.client).toEqual({ 101: 1 });
      expect(d.server).toEqual(serverView({ 101: 1 }));
      expect(d.counters).toEqual({ http2: sides, ...(both ? { paired: 1 } : {}) });
    });

    it('a 101 after which nothing comes back (the tunnel closed before its server spoke) is counted at the close', async () => {
      const d = await delta(async () => {
        expect((await rawAt(special, 'upgrade-quiet')).statuses).toEqual({ 101: 1 });
        // The sockets close after the client's process ends: wait for the counts (bounded).
        const deadline = performance.now() + 10_000;
        const counted = () => t.dp.read().http.filter((s) => s.port === special && s.status === 101).reduce((a, s) => a + s.count, 0);
        const before = counted();
        while (counted() < before + sides && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      }, special);
      expect(d.client).toEqual({ 101: 1 });
      expect(d.server).toEqual(serverView({ 101: 1 }));
    });

    it('curl through a CONNECT proxy: the CONNECT is counted once, the tunnel it opens is not parsed', async () => {
      const target = `http://${HOST}:${port}/through`;
      const atTarget = await delta(async () => {
        const atProxy = await delta(async () => {
          expect(await curl(['--proxytunnel', '-x', `http://${HOST}:${special}`], [target, target])).toMatch(/^(200|404)\n(200|404)\n$/);
        }, special);
        expect(atProxy.client).toEqual({ 200: 1 });
        expect(atProxy.server).toEqual(serverView({ 200: 1 }));
        expect(atProxy.methods.client).toEqual({ CONNECT: 1 });
        expect(atProxy.counters.not_http ?? 0).toBe(0);
      });
      // The proxy's own connection to the target carries the two GETs: measured when the proxy is in the mesh.
      const sum = (x: Record<string, number>) => Object.values(x).reduce((a, b) => a + b, 0);
      expect(sum(atTarget.client)).toBe(both ? 2 : 0);
      expect(sum(atTarget.server)).toBe(both ? 2 : 0);
    });

    it('a POST whose body begins like a request line is one POST, body sent with the headers or after 100 Continue', async () => {
      const body = Buffer.concat([Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), Buffer.alloc(2000, 'b')]);
      const url = `http://${HOST}:${special}/upload`;
      const d = await delta(async () => {
        for (const expect100 of [true, false]) {
          const opts = ['--data-binary', '@-', '-H', `Expect:${expect100 ? ' 100-continue' : ''}`];
          expect(await curl(opts, [url, url], body)).toBe('200\n200\n');
        }
      }, special);
      expect(d.methods.client).toEqual({ POST: 4 });
      expect(d.methods.server).toEqual(serverView({ POST: 4 }));
      expect(d.client).toEqual({ 200: 4 });
    });

    it('a stream of random bytes is not counted as HTTP; its bytes are, exactly, on both ends', async () => {
      const bytes = (dir: 'client' | 'server') => {
        const s = t.dp.read().tcp.filter((x) => x.port === port && x.direction === dir);
        return { sent: s.reduce((a, x) => a + x.bytesSent, 0), received: s.reduce((a, x) => a + x.bytesReceived, 0), closed: s.reduce((a, x) => a + x.closed, 0) };
      };
      // Connections of the tests before this one add their last bytes when they close (a loaded machine closes
      // them late): start once every one of them has.
      const open = () => t.dp.read().tcp.filter((x) => x.port === port).reduce((a, x) => a + x.opened - x.closed, 0);
      for (let i = 0; i < 100 && open() > 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect(open()).toBe(0);
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
