// Two "pods" on one node: a client and a server in network namespaces of their own, joined by a veth pair, both
// in the measured cgroup. Their connections pair across the namespaces (the server's socket measures both sides),
// over IPv4 and IPv6, and the counts stay exact on both sides.
import { createNetns, describePrivileged, ensureTool, inNetns, vethPair, waitForLine, type Netns } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { byStatus, serverScript, topology, type Topology } from '../support.js';

const ADDR = {
  client: { 4: '198.18.9.1', 6: 'fd00:9::1' },
  server: { 4: '198.18.9.2', 6: 'fd00:9::2' },
} as const;

describePrivileged(
  'pairing across network namespaces',
  () => {
    let t: Topology;
    let nsClient: Netns;
    let nsServer: Netns;
    const port = { 4: 0, 6: 0 };

    beforeAll(async () => {
      t = await topology('metns');
      nsClient = await createNetns('metnsc');
      nsServer = await createNetns('metnss');
      await vethPair(nsClient, nsServer, { addrA: [ADDR.client[4], ADDR.client[6]], addrB: [ADDR.server[4], ADDR.server[6]], prefix: 'metns' });
      for (const family of [4, 6] as const) {
        // The server runs in the server namespace and in the measured cgroup.
        const [cmd, args] = inNetns(nsServer, process.execPath, [serverScript, ADDR.server[family], '200,404']);
        const child = t.cg.spawn(cmd, args);
        const [line] = await waitForLine(child, /^\{"port":\d+\}$/, 15_000);
        port[family] = (JSON.parse(line) as { port: number }).port;
      }
    });
    afterAll(async () => {
      await t?.close();
      await nsClient?.close();
      await nsServer?.close();
    });

    for (const family of [4, 6] as const) {
      it(`IPv${family}: hey from the client namespace, 400 requests, a connection each: exact counts on both sides, the connections paired`, async () => {
        const before = t.dp.readCounters().paired;
        const host = family === 4 ? ADDR.server[4] : `[${ADDR.server[6]}]`;
        const [cmd, args] = inNetns(nsClient, ensureTool('hey'), ['-n', '400', '-c', '4', '-disable-keepalive', `http://${host}:${port[family]}/`]);
        const r = await t.cg.run(cmd, args, { timeoutMs: 60_000 });
        expect(r.code, r.stderr).toBe(0);
        const snap = t.dp.read();
        expect(byStatus(snap.http, 'client', port[family])).toEqual({ 200: 200, 404: 200 });
        expect(byStatus(snap.http, 'server', port[family])).toEqual({ 200: 200, 404: 200 });
        // Every one, in practice; at least 90 % asserted (see the same check in hey.test.ts).
        expect(snap.counters.paired - before).toBeLessThanOrEqual(400);
        expect(snap.counters.paired - before).toBeGreaterThanOrEqual(360);
        // Each side names its peer by the address it sees: the client the server's, the server the client's.
        const peers = (dir: 'client' | 'server') => new Set(snap.http.filter((s) => s.port === port[family] && s.direction === dir).map((s) => s.remoteIp));
        expect(peers('client')).toEqual(new Set([ADDR.server[family]]));
        expect(peers('server')).toEqual(new Set([ADDR.client[family]]));
      });
    }
  },
  { tools: ['hey', 'ip'] },
);
