// The pooled tunnel ("pool": true): node A carries each application connection as a stream over a TLS connection
// to node B's tunnel that it keeps and reuses (one stream at a time per connection), so new connections cost no
// handshake; every stream is still checked at B (destination, policy in force) before a byte reaches the workload.
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged, waitForLine } from '@mesh/testkit';
import { compilePolicies } from '@mesh/mtls';
import { Dataplane, dial, get, meshAgent, missingDataplane, outcome, readAll, type Endpoint } from './harness.js';
import { eventually, MARKER, startNodes, type Nodes } from './fixture.js';

const missing = missingDataplane();
// Reads each connection to its end, then answers "pong:<what it read>" and its FIN in one segment.
const CORKED_SERVER = `
import socket, sys
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.bind((sys.argv[1], 0))
l.listen(64)
print('listening', l.getsockname()[1], flush=True)
while True:
    s, _ = l.accept()
    data = b''
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    s.sendall(b'pong:' + data)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()
`;
const STREAMS = 'mesh_dataplane_tunnel_streams_total';

describePrivileged('mesh-dataplane pooled tunnel', () => {
  let n: Nodes;
  let raw: Server;
  let rawAt: Endpoint;
  const rawSockets = new Set<Socket>();
  beforeAll(async () => {
    if (missing) throw new Error(missing);
    n = await startNodes({
      tweak: async ({ configA, configB, target }) => {
        for (const c of [configA, configB]) Object.assign(c, { pool: true, ktls: false, poolIdleMs: 2000 });
        // A raw server on the server workload's address: hashes what it receives until the client's FIN, then
        // sends the hash and `size` bytes it takes from the first line the client wrote ("<size>\n"), and ends.
        raw = createServer({ allowHalfOpen: true }, (s) => {
          rawSockets.add(s);
          s.once('close', () => rawSockets.delete(s));
          s.on('error', () => {});
          const chunks: Buffer[] = [];
          s.on('data', (c: Buffer) => chunks.push(c));
          s.once('end', () => {
            const all = Buffer.concat(chunks);
            const nl = all.indexOf(10);
            const size = Number(all.subarray(0, nl).toString());
            const body = all.subarray(nl + 1);
            const reply = Buffer.alloc(size, body.length % 251);
            s.end(Buffer.concat([createHash('sha256').update(body).digest(), reply]));
          });
        });
        await new Promise<void>((r) => raw.listen(0, target.host, () => r()));
        rawAt = { host: target.host, port: (raw.address() as AddressInfo).port };
        configA.destinations = [{ address: `${rawAt.host}:${rawAt.port}`, tunnel: 'B', spiffeId: `spiffe://cluster.local/ns/default/sa/server` }];
      },
    });
  });
  afterAll(async () => {
    for (const s of rawSockets) s.destroy();
    if (raw) await new Promise((r) => raw.close(r));
    await n?.close();
  });

  const counter = (dp: Dataplane, labels: string) => dp.counter(STREAMS, labels);
  /** The sum of a metric's samples whose labels contain `part`. */
  const total = async (dp: Dataplane, name: string, part = ''): Promise<number> =>
    (await dp.scrape())
      .split('\n')
      .filter((l) => l.startsWith(`${name}{`) && l.includes(part))
      .reduce((a, l) => a + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);

  /** One stream to the raw server: `up` bytes up, half-close, then the hash of them and `down` bytes back. */
  const exchange = async (upBytes: number, down: number): Promise<void> => {
    const sock = dial(n.a, n.client, rawAt);
    (sock as unknown as { allowHalfOpen: boolean }).allowHalfOpen = true;
    const received = readAll(sock);
    const body = randomBytes(upBytes);
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.end(Buffer.concat([Buffer.from(`${down}\n`), body]));
    const got = await received;
    sock.destroy();
    expect(got.length).toBe(32 + down);
    expect(got.subarray(0, 32).toString('hex')).toBe(createHash('sha256').update(body).digest('hex'));
    expect(got.subarray(32).equals(Buffer.alloc(down, body.length % 251))).toBe(true);
  };

  it('carries 200 new connections, 10 at a time, over a few pooled TLS connections: every response right', async () => {
    const newBefore = await counter(n.a, 'role="outbound",tunnel="pooled",handshake="new"');
    const reusedBefore = await counter(n.a, 'role="outbound",tunnel="pooled",handshake="reused"');
    const inboundBefore = await counter(n.b, 'role="inbound",tunnel="pooled"');
    let ok = 0;
    let next = 0;
    const count = 200;
    await Promise.all(
      Array.from({ length: 10 }, async () => {
        while (next < count) {
          const i = next++;
          const agent = meshAgent(n.a, n.client, n.target, 1);
          const res = await get({ host: n.target.host, port: n.target.port, path: `/req-${i}`, agent });
          agent.destroy();
          if (res.status === 200 && res.body.toString() === `${MARKER} /req-${i}\n`) ok++;
        }
      }),
    );
    expect(ok).toBe(count);
    // Each application connection one stream; handshakes only for the connections the concurrency needs.
    await eventually('B counted every stream', async () => (await counter(n.b, 'role="inbound",tunnel="pooled"')) - inboundBefore === count);
    const handshakes = (await counter(n.a, 'role="outbound",tunnel="pooled",handshake="new"')) - newBefore;
    const reused = (await counter(n.a, 'role="outbound",tunnel="pooled",handshake="reused"')) - reusedBefore;
    expect(handshakes + reused).toBe(count);
    expect(handshakes).toBeLessThanOrEqual(40);
    expect(await total(n.a, 'mesh_dataplane_connection_errors_total')).toBe(0);
    expect(await total(n.b, 'mesh_dataplane_connection_errors_total')).toBe(0);
  });

  it('half-closes each way with sha256 checks both ways on 24 streams, 4 at a time, over reused connections', async () => {
    const reusedBefore = await counter(n.a, 'role="outbound",tunnel="pooled",handshake="reused"');
    let next = 0;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < 24) {
          const i = next++;
          await exchange(256 * 1024 + i * 1000, 512 * 1024 - i * 777);
        }
      }),
    );
    expect((await counter(n.a, 'role="outbound",tunnel="pooled",handshake="reused"')) - reusedBefore).toBeGreaterThanOrEqual(12);
  });

  it("a stream's last bytes and its end cross the tunnel together: one TLS record for a reply and its close", async () => {
    // A server that answers each request with a reply and its FIN in one segment (TCP_CORK held the bytes until
    // the shutdown): node B sees both in one event.
    const server = n.tracker.spawn('python3', ['-c', CORKED_SERVER, n.target.host]);
    const port = Number((await waitForLine(server, /^listening (\d+)$/m, 20_000))[1]);
    const at = { host: n.target.host, port };
    const config = structuredClone(n.configA);
    config.destinations!.push({ address: `${at.host}:${port}`, tunnel: n.configB.tunnel!, spiffeId: config.destinations![0]!.spiffeId });
    await n.a.reload(config);
    n.configA = config;
    // write(2)-class syscalls of B's threads (/proc io `syscw`): OpenSSL writes each record with one; the pumps'
    // send(2) to the server is not counted.
    const pid = n.b.child.pid!;
    const writes = () =>
      readdirSync(`/proc/${pid}/task`).reduce((k, tid) => k + Number(/^syscw: (\d+)$/m.exec(readFileSync(`/proc/${pid}/task/${tid}/io`, 'utf8'))![1]), 0);
    const request = async () => {
      const sock = dial(n.a, n.client, at);
      (sock as unknown as { allowHalfOpen: boolean }).allowHalfOpen = true;
      const got = readAll(sock);
      await new Promise<void>((r) => sock.once('connect', () => r()));
      sock.end('ping');
      expect((await got).toString()).toBe('pong:ping');
      sock.destroy();
    };
    const STREAMS = 50;
    await request(); // a pooled connection in A's pool, and B's stream loop waiting for the next
    const w0 = writes();
    for (let i = 0; i < STREAMS; i++) await request();
    const perStream = (writes() - w0) / STREAMS;
    console.log(`pooled stream: ${perStream.toFixed(2)} records from B per reply and its close`);
    // One record; the close as a record of its own made it 2.
    expect(perStream).toBeLessThan(1.5);
    server.kill();
  });

  it('a reset stream does not disturb one beside it', async () => {
    const victim = dial(n.a, n.client, rawAt);
    victim.on('error', () => {});
    await new Promise<void>((r) => victim.once('connect', () => r()));
    victim.write('100\nsome bytes');
    const other = exchange(1024 * 1024, 1024 * 1024);
    await new Promise((r) => setTimeout(r, 100));
    victim.resetAndDestroy();
    await other;
    await exchange(1000, 1000);
  });

  it('a stream whose reader stops does not stall another, and what the data plane holds for it stays bounded', async () => {
    // A server that never reads: the writer's stream fills its buffers and is pushed back by TCP.
    const stalled = new Set<Socket>();
    const sink = createServer((s) => {
      stalled.add(s);
      s.pause();
    });
    await new Promise<void>((r) => sink.listen(0, n.target.host, () => r()));
    const sinkAt = { host: n.target.host, port: (sink.address() as AddressInfo).port };
    const config = structuredClone(n.configA);
    config.destinations!.push({ address: `${sinkAt.host}:${sinkAt.port}`, tunnel: n.configB.tunnel!, spiffeId: config.destinations![0]!.spiffeId });
    await n.a.reload(config);
    n.configA = config;
    const writer = dial(n.a, n.client, sinkAt);
    writer.on('error', () => {});
    await new Promise<void>((r) => writer.once('connect', () => r()));
    let written = 0;
    const chunk = Buffer.alloc(256 * 1024, 7);
    // Write until the socket stays blocked for 500 ms: everything between it and the sink is full.
    for (let i = 0; i < 400; i++) {
      if (writer.write(chunk)) {
        written += chunk.length;
        continue;
      }
      written += chunk.length;
      const drained = await Promise.race([new Promise((r) => writer.once('drain', () => r(true))), new Promise((r) => setTimeout(() => r(false), 500))]);
      if (!drained) break;
    }
    expect(written).toBeLessThan(400 * chunk.length);
    // Meanwhile another stream goes through, whole.
    await exchange(512 * 1024, 512 * 1024);
    // The data plane's memory did not grow with what the writer pushed (its buffers are fixed per connection).
    const rssKb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
    expect(rssKb(n.a.child.pid!)).toBeLessThan(64 * 1024);
    writer.destroy();
    for (const s of stalled) s.destroy();
    await new Promise((r) => sink.close(r));
  });

  it('checks a later stream of a pooled connection against the policy in force: refused and counted, then served again', async () => {
    // A stream leaves its connection idle in A's pool; B's policy then changes.
    await exchange(10, 10);
    const reusedBefore = await counter(n.a, 'role="outbound",tunnel="pooled",handshake="reused"');
    const policy = compilePolicies({
      objects: [{ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { namespace: 'default', name: 'allow-other' }, spec: { action: 'ALLOW', selector: { matchLabels: { app: 'server' } }, rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/other'] } }] }] } }],
      workloads: [{ namespace: 'default', name: 'server', labels: { app: 'server' }, ports: [rawAt.port, n.target.port] }],
    });
    if (!policy.ok) throw new Error(policy.errors.join('\n'));
    const open = structuredClone(n.configB);
    n.configB.workloads[0]!.policies = policy.workloads.get('default/server')!.policies;
    await n.b.reload(n.configB);
    const accepted = rawSockets.size;
    const sock = dial(n.a, n.client, rawAt);
    sock.end('10\nrefused?');
    const r = await outcome(sock);
    expect(r.bytes).toBe(0);
    expect((await counter(n.a, 'role="outbound",tunnel="pooled",handshake="reused"')) - reusedBefore).toBe(1);
    expect(await total(n.b, 'mesh_dataplane_authz_denied_total', 'policy="default/allow-other"')).toBeGreaterThanOrEqual(1);
    expect(rawSockets.size).toBe(accepted);
    n.configB = open;
    await n.b.reload(n.configB);
    await exchange(10, 10);
  });

  it('closes idle pooled connections after poolIdleMs, cleanly on both sides', async () => {
    const resetsBefore = await total(n.b, 'mesh_dataplane_connection_errors_total', 'role="inbound"');
    const failuresBefore = await total(n.b, 'mesh_dataplane_handshake_failures_total');
    await exchange(10, 10);
    await eventually('no outbound connection left', async () => (await n.a.counter('mesh_dataplane_connections_active', 'role="outbound"')) === 0, 20_000);
    await eventually('no inbound connection left', async () => (await n.b.counter('mesh_dataplane_connections_active', 'role="inbound"')) === 0, 20_000);
    // The idle connections ended with close_notify: no error on either side.
    expect(await total(n.b, 'mesh_dataplane_connection_errors_total', 'role="inbound"')).toBe(resetsBefore);
    expect(await total(n.b, 'mesh_dataplane_handshake_failures_total')).toBe(failuresBefore);
  });
}, { tools: ['openssl'] });
