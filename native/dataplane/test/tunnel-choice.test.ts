// Which tunnel outbound connections take when the config does not say: pooled (no handshake per connection)
// unless the connection could hand its record layer to the kernel, which needs one TLS connection per
// application connection. "pool" forces either; the choice and its reason are a stats series, and a reload
// that changes it applies to new connections.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '@mesh/testkit';
import { Dataplane, get, meshAgent, missingDataplane } from './harness.js';
import { MARKER, startNodes, type Nodes } from './fixture.js';

const missing = missingDataplane();
const STREAMS = 'mesh_dataplane_tunnel_streams_total';
const hostHasTls = readFileSync('/proc/sys/net/ipv4/tcp_available_ulp', 'utf8').split(/\s+/).includes('tls');

describePrivileged('mesh-dataplane tunnel choice', () => {
  let n: Nodes;
  beforeAll(async () => {
    if (missing) throw new Error(missing);
    n = await startNodes(); // neither "pool" nor "ktls" in either config
  });
  afterAll(async () => {
    await n?.close();
  });

  /** The outbound tunnel series: { tunnel, choice } of its one sample. */
  const choice = async (dp: Dataplane) => {
    const line = (await dp.scrape()).split('\n').find((l) => l.startsWith('mesh_dataplane_outbound_tunnel_info{'));
    const m = line && /^mesh_dataplane_outbound_tunnel_info\{tunnel="(\w+)",choice="((?:[^"\\]|\\.)*)"\} 1$/.exec(line);
    return m ? { tunnel: m[1], choice: m[2]!.replace(/\\(.)/g, '$1') } : line;
  };
  /** Outbound streams by tunnel and handshake, as counters. */
  const streams = async () => {
    const t = await n.a.scrape();
    return {
      dedicated: Dataplane.sample(t, STREAMS, 'role="outbound",tunnel="dedicated",handshake="new"'),
      pooledNew: Dataplane.sample(t, STREAMS, 'role="outbound",tunnel="pooled",handshake="new"'),
      reused: Dataplane.sample(t, STREAMS, 'role="outbound",tunnel="pooled",handshake="reused"'),
    };
  };
  /** `count` application connections one after another, each with one request. */
  const requests = async (count: number, tag: string) => {
    for (let i = 0; i < count; i++) {
      const agent = meshAgent(n.a, n.client, n.target, 1);
      const res = await get({ host: n.target.host, port: n.target.port, path: `/${tag}-${i}`, agent });
      agent.destroy();
      expect(res.body.toString()).toBe(`${MARKER} /${tag}-${i}\n`);
      // The stream's end reaches the pool after the response: the next connection finds it idle.
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  /** What `count` connections took: dedicated, pooled; handshakes for the pooled ones (a pool per worker, 2). */
  const delta = (a: Awaited<ReturnType<typeof streams>>, b: typeof a) => ({
    dedicated: b.dedicated - a.dedicated,
    pooled: b.pooledNew - a.pooledNew + b.reused - a.reused,
    handshakesAtMost2: b.pooledNew - a.pooledNew <= 2,
  });

  it('without kTLS and no "pool" in the config, new connections go pooled and reuse one TLS connection; the stats say why', async () => {
    if (hostHasTls) {
      // A kernel with kTLS keeps the dedicated tunnel (the kTLS tests cover that path).
      expect(await choice(n.a)).toEqual({ tunnel: 'dedicated', choice: 'auto: kTLS available' });
      return;
    }
    const before = await streams();
    await requests(5, 'auto');
    expect(delta(before, await streams())).toEqual({ dedicated: 0, pooled: 5, handshakesAtMost2: true });
    expect(await choice(n.a)).toEqual({ tunnel: 'pooled', choice: 'auto: kTLS unavailable' });
  });

  it('"pool": false forces the dedicated tunnel, "pool": true the pooled one, from the reload on', async () => {
    await n.a.reload({ ...n.configA, pool: false });
    expect(await choice(n.a)).toEqual({ tunnel: 'dedicated', choice: 'config' });
    let before = await streams();
    await requests(3, 'dedicated');
    expect(delta(before, await streams())).toEqual({ dedicated: 3, pooled: 0, handshakesAtMost2: true });

    await n.a.reload({ ...n.configA, pool: true, ktls: false });
    expect(await choice(n.a)).toEqual({ tunnel: 'pooled', choice: 'config' });
    before = await streams();
    await requests(3, 'pooled');
    expect(delta(before, await streams())).toEqual({ dedicated: 0, pooled: 3, handshakesAtMost2: true });

    // "ktls": false without "pool": the record layer stays in user space, so the pool.
    await n.a.reload({ ...n.configA, ktls: false });
    expect(await choice(n.a)).toEqual({ tunnel: 'pooled', choice: 'auto: "ktls": false' });
  });
});
