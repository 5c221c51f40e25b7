// Any local user can connect to a measured server from as many loopback addresses as it likes. Peers that are not
// known workloads are folded into one "unknown" peer per series, so they cannot fill the aggregation tables:
// a workload pair that comes afterwards still gets series of its own, counted exactly.
import { describePrivileged, ensureTool, run } from '@mesh/testkit';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { startServer, topology, type Topology } from '../support.js';

const flood = fileURLToPath(new URL('../fixtures/flood.mjs', import.meta.url));
const SERVER = '127.0.0.16';
const CLIENT = '127.0.0.17';
const SOURCES = 10_000;

describePrivileged(
  'peers that are not workloads',
  () => {
    let t: Topology;
    let port: number;

    beforeAll(async () => {
      // The default table sizes (8,192 request series, 8,192 TCP pairs): fewer than the flood's addresses.
      t = await topology('metpeers');
      t.dp.setKnownPeers([SERVER, CLIENT]);
      port = (await startServer(t.cg, SERVER, [200, 404])).port;
    });
    afterAll(async () => t?.close());

    it(`${SOURCES.toLocaleString('en')} source addresses from nobody, then a workload pair: counted exactly, in series of its own`, async () => {
      // Outside the mesh's cgroup, without privileges: any local user.
      const r = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--', process.execPath, flood, SERVER, String(port), String(SOURCES)], { timeoutMs: 100_000 });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual({ ok: SOURCES, failed: 0 });
      // A workload pair (a client in the mesh, from its own address): 20 requests on one connection.
      const url = `http://${SERVER}:${port}/pair`;
      const c = await t.cg.run(ensureTool('curl'), ['-s', '--interface', CLIENT, '-w', '%{http_code}\\n', ...Array.from({ length: 20 }, () => ['-o', '/dev/null', url]).flat()], { timeoutMs: 60_000 });
      expect(c.code, c.stderr).toBe(0);
      const snap = t.dp.read();
      const pair = (dir: 'client' | 'server', peer: string) => {
        const out: Record<string, number> = {};
        for (const s of snap.http) if (s.direction === dir && s.port === port && s.remoteIp === peer) out[s.status] = (out[s.status] ?? 0) + s.count;
        return out;
      };
      expect(pair('client', SERVER)).toEqual({ 200: 10, 404: 10 });
      expect(pair('server', CLIENT)).toEqual({ 200: 10, 404: 10 });
      expect(snap.counters.http_overflow).toBe(0);
      expect(snap.counters.tcp_overflow).toBe(0);
      const tcp = snap.tcp.filter((s) => s.direction === 'server' && s.remoteIp === CLIENT);
      expect(tcp.reduce((a, s) => a + s.opened, 0)).toBe(1);
      // The flood is counted, under one peer: the server's side, by status. is counted, under one peer: the server's side, by status.
      const unknown = snap.http.filter((s) => s.direction === 'server' && s.port === port && s.cgroupId !== undefined && s.remoteIp === '');
      expect(unknown.reduce((a, s) => a + s.count, 0)).toBe(SOURCES);
      expect(unknown.length).toBe(2); // 200 and 404
      const fill = t.dp.fill();
      expect(fill.http_requests.used).toBeLessThan(16);
      expect(fill.tcp_stats.used).toBeLessThan(16);
    });

    it('a known-peer set with a word that is not an address is refused whole, naming it', () => {
      const before = t.dp.fill().http_peers.used;
      expect(() => t.dp.setKnownPeers(['127.0.0.18', 'web-a'])).toThrow(/"web-a" is not an IP address/);
      expect(t.dp.fill().http_peers.used).toBe(before);
    });
  },
  { tools: ['curl', 'setpriv'] },
);
