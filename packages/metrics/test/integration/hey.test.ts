// hey against a node:http server answering a fixed mix of 200/404/503: the kernel's counts per status equal
// the requests made, on the client side and on the server side, with keep-alive on and off. Three placements:
// both ends measured (the connection is measured once, at the server's socket, for both sides), only the client
// measured (the server outside the mesh, as a peer on another node is), only the server measured.
import type { ChildProcess } from 'node:child_process';

import { capturedOutput, createCgroup, describePrivileged, ensureTool, type Cgroup } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { byStatus, startServer, topology, type Topology } from '../support.js';

const EXPECTED = { 200: 1000, 404: 500, 503: 500 };

describePrivileged(
  'request counts',
  () => {
    let t: Topology;
    let outside: Cgroup;
    const HOST = '127.0.0.12';
    const port = { inside: 0, outside: 0 };
    let insideServer: ChildProcess;
    /** Connections the server inside accepted so far (its last {"connections":N} line). */
    const accepted = () => Number([...capturedOutput(insideServer).stdout.matchAll(/^\{"connections":(\d+)\}$/gm)].pop()?.[1] ?? 0);

    beforeAll(async () => {
      t = await topology('metrics');
      outside = await createCgroup('metout');
      ({ port: port.inside, child: insideServer } = await startServer(t.cg, HOST, [200, 200, 404, 503]));
      port.outside = (await startServer(outside, HOST, [200, 200, 404, 503])).port;
    });
    afterAll(async () => {
      await t?.close();
      await outside?.close();
    });

    const delta = (now: Record<string, number>, was: Record<string, number>) =>
      Object.fromEntries(Object.entries(now).map(([k, v]) => [k, v - (was[k] ?? 0)]).filter(([, v]) => v !== 0));

    /** Runs hey from `from` against the server on `serverPort`; returns what each side's series gained. */
    async function hey(from: Cgroup, serverPort: number, keepAlive: boolean) {
      const side = (d: 'client' | 'server') => byStatus(t.dp.read().http, d, serverPort);
      const before = { client: side('client'), server: side('server'), paired: t.dp.readCounters().paired, accepted: accepted() };
      const args = ['-n', '2000', '-c', '8', ...(keepAlive ? [] : ['-disable-keepalive']), `http://${HOST}:${serverPort}/`];
      const r = await from.run(ensureTool('hey'), args, { timeoutMs: 120_000 });
      expect(r.code, r.stderr).toBe(0);
      // hey's own summary: [200] 1000 responses …
      const heyCounts = Object.fromEntries([...r.stdout.matchAll(/\[(\d{3})\]\s+(\d+) responses/g)].map((m) => [m[1]!, Number(m[2])]));
      expect(heyCounts).toEqual(EXPECTED);
      const snap = t.dp.read();
      expect(snap.http.filter((s) => s.port === serverPort).every((s) => s.method === 'GET')).toBe(true);
      expect(snap.counters.not_http).toBe(0);
      return {
        client: delta(side('client'), before.client),
        server: delta(side('server'), before.server),
        paired: snap.counters.paired - before.paired,
        accepted: accepted() - before.accepted,
      };
    }

    for (const keepAlive of [true, false]) {
      const connections = keepAlive ? 8 : 2000;
      it(`hey -n 2000 (keep-alive ${keepAlive ? 'on' : 'off'}), both ends measured: exact counts per status on both sides, the connections paired`, async () => {
        const got = await hey(t.cg, port.inside, keepAlive);
        expect(got.client).toEqual(EXPECTED);
        expect(got.server).toEqual(EXPECTED);
        // Every one, in practice. Not asserted: when the kernel defers its packet processing (to ksoftirqd, under
        // load), a client can send its request before the handshake's last packet reached the server's socket,
        // and then each end measures its own side (the counts above stay exact either way).
        // hey's Go client may dial a ninth connection with -c 8 (a request that finds no idle connection while
        // another is being returned): the bound is what the server accepted, not what hey was asked for.
        expect(got.accepted).toBeGreaterThanOrEqual(connections);
        expect(got.paired).toBeLessThanOrEqual(got.accepted);
        expect(got.paired).toBeGreaterThanOrEqual(got.accepted * 0.9);
      });

      it(`hey -n 2000 (keep-alive ${keepAlive ? 'on' : 'off'}), only the client measured: exact counts on the client side`, async () => {
        const got = await hey(t.cg, port.outside, keepAlive);
        expect(got.client).toEqual(EXPECTED);
        expect(got.server).toEqual({});
        expect(got.paired).toBe(0);
      });

      it(`hey -n 2000 (keep-alive ${keepAlive ? 'on' : 'off'}), only the server measured: exact counts on the server side`, async () => {
        const got = await hey(outside, port.inside, keepAlive);
        expect(got.client).toEqual({});
        expect(got.server).toEqual(EXPECTED);
        expect(got.paired).toBe(0);
      });
    }

    it('a dual-stack server (listening on ::) pairs with an IPv4 client; both sides name the peer by its IPv4 address', async () => {
      const dual = (await startServer(t.cg, '::', [200])).port;
      const before = t.dp.readCounters().paired;
      const r = await t.cg.run(ensureTool('hey'), ['-n', '100', '-c', '2', `http://127.0.0.1:${dual}/`], { timeoutMs: 60_000 });
      expect(r.code, r.stderr).toBe(0);
      const snap = t.dp.read();
      expect(snap.counters.paired - before).toBeGreaterThanOrEqual(1);
      const sides = snap.http.filter((s) => s.port === dual);
      expect(sides.filter((s) => s.direction === 'client').reduce((a, s) => a + s.count, 0)).toBe(100);
      expect(sides.filter((s) => s.direction === 'server').reduce((a, s) => a + s.count, 0)).toBe(100);
      expect(new Set(sides.map((s) => s.remoteIp))).toEqual(new Set(['127.0.0.1']));
    });

    it('no client connection is left waiting for its server to join, also when it closes without a byte', async () => {
      // 20 connections opened, held until all are established, then closed without sending anything.
      const script = `const net = require('node:net');
        const socks = Array.from({ length: 20 }, () => net.connect(${port.inside}, '${HOST}'));
        Promise.all(socks.map((s) => new Promise((ok, fail) => { s.on('connect', ok); s.on('error', fail); })))
          .then(() => { socks.forEach((s) => s.destroy()); setTimeout(() => process.exit(0), 200); });`;
      const r = await t.cg.run(process.execPath, ['-e', script], { timeoutMs: 30_000 });
      expect(r.code, r.stderr).toBe(0);
      for (let i = 0; i < 50 && t.dp.fill().http_pending.used > 0; i++) await new Promise((ok) => setTimeout(ok, 20));
      expect(t.dp.fill().http_pending.used).toBe(0);
    });
  },
  { tools: ['hey'] },
);
