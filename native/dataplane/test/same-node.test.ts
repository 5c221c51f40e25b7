// A tunnel between two workloads of one node: the data plane is both ends (its outbound side dials its own
// tunnel listener). Both ends belong to the worker thread that dialled, so an exchange wakes one thread, not one
// per hop: with the tunnel's accepted end on another worker, every request and every response crossed threads
// through the kernel, and each crossing was a wake-up (bench:mesh's one-node topology pays it on every request).
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged, threadsOf } from '@mesh/testkit';
import { dial, missingDataplane, type DataplaneConfig, type Endpoint } from './harness.js';
import { CLIENT_ID, SERVER_ID, startNodes, type Nodes } from './fixture.js';

const missing = missingDataplane();
const ROUND_TRIPS = 300;
const MESSAGE = Buffer.alloc(200, 'r');

/** Voluntary context switches (wake-ups after blocking) of each worker thread of `pid` (all but the main one). */
function workerWakeups(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const t of threadsOf(pid)) if (t.tid !== pid) out.set(String(t.tid), t.voluntarySwitches);
  return out;
}

/** Waits for `sock` to connect, then `count` exchanges of MESSAGE, one at a time. */
async function exchanges(sock: Socket, count: number): Promise<void> {
  let got = 0;
  let done = 0;
  await new Promise<void>((resolve, reject) => {
    sock.on('error', reject);
    sock.on('data', (c: Buffer) => {
      got += c.length;
      if (got < MESSAGE.length) return;
      got = 0;
      if (++done === count) resolve();
      else sock.write(MESSAGE);
    });
    sock.write(MESSAGE);
  });
  sock.removeAllListeners('data');
}

describePrivileged('mesh-dataplane same-node tunnel', () => {
  let n: Nodes;
  let echo: Server;
  let at: Endpoint;
  const sockets = new Set<Socket>();
  beforeAll(async () => {
    if (missing) throw new Error(missing);
    n = await startNodes({
      tweak: async ({ ip, pki, root, configB, target }) => {
        echo = createServer((s) => {
          sockets.add(s);
          s.once('close', () => sockets.delete(s));
          s.on('error', () => {});
          s.setNoDelay(true);
          s.on('data', (c: Buffer) => s.write(c));
        });
        await new Promise<void>((r) => echo.listen(0, target.host, () => r()));
        at = { host: target.host, port: (echo.address() as AddressInfo).port };
        // Node B runs the client workload too: its outbound side tunnels to its own tunnel listener.
        const client = await pki.svid(root, 'client-b', CLIENT_ID);
        configB.outbound = `${ip(2)}:0`;
        configB.workers = 2;
        configB.workloads.push({ address: ip(10), spiffeId: CLIENT_ID, ...client, bundle: root.cert });
      },
    });
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    if (echo) await new Promise((r) => echo.close(r));
    await n?.close();
  });

  for (const pool of [false, true]) {
    it(`one worker thread carries both ends of a same-node tunnel (${pool ? 'pooled' : 'dedicated'})`, async () => {
      const config: DataplaneConfig = {
        ...structuredClone(n.configB),
        outbound: `${n.b.outbound!.host}:${n.b.outbound!.port}`,
        destinations: [{ address: `${at.host}:${at.port}`, tunnel: n.configB.tunnel!, spiffeId: SERVER_ID }],
        ...(pool ? { pool: true, ktls: false } : { pool: false }),
      };
      await n.b.reload(config);
      const sock = dial(n.b, n.client, at);
      sockets.add(sock);
      await exchanges(sock, 1); // the handshake and set-up are not what is measured
      const pid = n.b.child.pid!;
      const before = workerWakeups(pid);
      await exchanges(sock, ROUND_TRIPS);
      const after = workerWakeups(pid);
      sock.destroy();
      const deltas = [...after].map(([tid, v]) => v - (before.get(tid) ?? 0));
      console.log(`same-node ${pool ? 'pooled' : 'dedicated'}: worker wake-ups over ${ROUND_TRIPS} exchanges: ${deltas.join(', ')}`);
      expect(deltas.length).toBe(2);
      // The worker that holds neither end wakes only for its sweep (twice a second); holding one end it woke
      // about twice per exchange.
      expect(Math.min(...deltas), 'wake-ups of the worker holding neither end').toBeLessThan(ROUND_TRIPS / 10);
    }, 120_000);
  }
}, { tools: [] });
