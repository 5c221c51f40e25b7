// What an idle tunnelled connection costs the data planes in memory: a keep-alive connection waiting between
// requests has nothing queued, so it must hold no pump buffers (they were 2 × 64 KiB per connection at each end,
// zeroed when the connection was made, whether a byte ever waited in them or not).
import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '@mesh/testkit';
import { dial, missingDataplane, type Endpoint } from './harness.js';
import { SERVER_ID, startNodes, type Nodes } from './fixture.js';

const missing = missingDataplane();
const WARM = 20;
const IDLE = 100;

const rssKb = (pid: number): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);

describePrivileged('mesh-dataplane idle connection memory', () => {
  let n: Nodes;
  let echo: Server;
  let at: Endpoint;
  const sockets = new Set<Socket>();
  beforeAll(async () => {
    if (missing) throw new Error(missing);
    n = await startNodes({
      tweak: async ({ configA, target }) => {
        // Echoes every chunk: one small exchange per connection, then the connection stays open and idle.
        echo = createServer((s) => {
          sockets.add(s);
          s.once('close', () => sockets.delete(s));
          s.on('error', () => {});
          s.on('data', (c: Buffer) => s.write(c));
        });
        await new Promise<void>((r) => echo.listen(0, target.host, () => r()));
        at = { host: target.host, port: (echo.address() as AddressInfo).port };
        configA.destinations = [{ address: `${at.host}:${at.port}`, tunnel: 'B', spiffeId: SERVER_ID }];
      },
    });
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    if (echo) await new Promise((r) => echo.close(r));
    await n?.close();
  });

  /** A connection through the tunnel that has made one exchange of 1 KiB and is left open. */
  async function idleConnection(): Promise<Socket> {
    const sock = dial(n.a, n.client, at);
    sockets.add(sock);
    const msg = Buffer.alloc(1024, 'm');
    await new Promise<void>((resolve, reject) => {
      let got = 0;
      sock.on('error', reject);
      sock.on('data', (c: Buffer) => {
        got += c.length;
        if (got >= msg.length) resolve();
      });
      sock.write(msg);
    });
    return sock;
  }

  it(`${IDLE} idle keep-alive connections cost both data planes a few KiB each, not their pump buffers`, async () => {
    // The first connections warm the allocators (OpenSSL's, glibc's arenas of the worker threads).
    for (let i = 0; i < WARM; i++) await idleConnection();
    const pids = [n.a.child.pid!, n.b.child.pid!];
    const before = pids.map(rssKb);
    for (let i = 0; i < IDLE; i++) await idleConnection();
    const grown = pids.map((p, i) => rssKb(p) - before[i]!);
    const perConnKb = (grown[0]! + grown[1]!) / IDLE;
    console.log(`idle connections: RSS grew by ${grown.join(' + ')} KiB (A + B) for ${IDLE}: ${perConnKb.toFixed(1)} KiB per connection`);
    // Two 64 KiB buffers per connection at each end were 256 KiB (334 KiB per connection measured with them);
    // OpenSSL's own state and the pages a small exchange touched in its buffers come to about 70.
    expect(perConnKb).toBeLessThan(100);
  }, 180_000);
}, { tools: [] });
