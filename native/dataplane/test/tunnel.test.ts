// Node A's outbound data plane → node B's tunnel → a real HTTP server: requests succeed, the tunnel carries
// only TLS records, 64 MiB each way arrive intact, half-close propagates, and connections leave no fd behind.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { capturedOutput, describePrivileged, parsePacket, readPcap, waitForLine } from '@mesh/testkit';
import { Dataplane, dial, get, meshAgent, missingDataplane, readAll } from './harness.js';
import { eventually, fdsOf, MARKER, startNodes, type Nodes } from './fixture.js';

const missing = missingDataplane();

describePrivileged('mesh-dataplane tunnel', () => {
  let n: Nodes;
  beforeAll(async () => {
    if (missing) throw new Error(missing);
    n = await startNodes();
  });
  afterAll(async () => {
    await n?.close();
  });

  it('carries 1,000 requests, and a capture of the tunnel port holds TLS records only', async () => {
    const fdsBefore = await fdsOf(n.a.child.pid!);
    const fdsBeforeB = await fdsOf(n.b.child.pid!);
    const pcap = join(n.dir, 'tunnel.pcap');
    // One capture of both legs: tunnel (A→B, must be ciphertext) and B→backend (plaintext, proves the marker is
    // on the wire at all).
    const filter = `(host ${n.b.tunnel!.host} and port ${n.b.tunnel!.port}) or (host ${n.target.host} and port ${n.target.port})`;
    const tshark = n.tracker.spawn('tshark', ['-i', 'lo', '-n', '-F', 'pcap', '-w', pcap, '-f', filter]);
    await waitForLine(tshark, /Capturing on/, 60_000);
    // tshark prints the line as it opens the device; give it a moment before the first frame.
    await new Promise((r) => setTimeout(r, 500));

    const agent = meshAgent(n.a, n.client, n.target, 8);
    const total = 1000;
    let ok = 0;
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < total) {
          const i = next++;
          const res = await get({ host: n.target.host, port: n.target.port, path: `/req-${i}`, agent });
          if (res.status === 200 && res.body.toString() === `${MARKER} /req-${i}\n`) ok++;
        }
      }),
    );
    agent.destroy();
    expect(ok).toBe(total);

    // Let the last segments reach the capture, then stop it (SIGINT makes tshark flush and exit).
    await new Promise((r) => setTimeout(r, 1000));
    tshark.kill('SIGINT');
    await new Promise((r) => tshark.once('exit', r));
    const dropped = /(\d+) packets? dropped/.exec(capturedOutput(tshark).stderr);
    expect(dropped === null || dropped[1] === '0', `tshark: ${dropped?.[0]}`).toBe(true);

    const frames = readPcap(await readFile(pcap)).records.map((r) => parsePacket(r.data));
    const tunnelPort = n.b.tunnel!.port;
    const onTunnel = frames.filter((f) => f.sport === tunnelPort || f.dport === tunnelPort);
    const onBackend = frames.filter((f) => f.sport === n.target.port || f.dport === n.target.port);
    const count = (fs: typeof frames, s: string): number =>
      fs.reduce((k, f) => k + f.payload.toString('latin1').split(s).length - 1, 0);
    // The plaintext leg shows the marker (so its absence on the tunnel means something); a loaded machine's
    // capture may miss a frame, hence not exactly `total`.
    expect(count(onBackend, MARKER)).toBeGreaterThan(total * 0.9);
    expect(count(onTunnel, MARKER)).toBe(0);
    expect(count(onTunnel, '/req-')).toBe(0);
    // Every tunnel payload byte belongs to TLS records: walk each direction's stream record by record.
    for (const dir of [(f: (typeof frames)[0]) => f.dport === tunnelPort, (f: (typeof frames)[0]) => f.sport === tunnelPort]) {
      const streams = new Map<number, Buffer[]>();
      for (const f of onTunnel.filter(dir)) {
        const key = f.sport === tunnelPort ? f.dport! : f.sport!;
        if (f.payload.length > 0) streams.set(key, [...(streams.get(key) ?? []), f.payload]);
      }
      expect(streams.size).toBeGreaterThan(0);
      for (const parts of streams.values()) {
        const s = Buffer.concat(parts);
        let at = 0;
        let records = 0;
        while (at + 5 <= s.length) {
          // content type 20..23, legacy version 0x0301 (first ClientHello) or 0x0303
          expect([20, 21, 22, 23]).toContain(s[at]);
          expect(s[at + 1]).toBe(3);
          at += 5 + s.readUInt16BE(at + 3);
          records++;
        }
        expect(at).toBe(s.length);
        expect(records).toBeGreaterThan(2);
      }
    }

    expect(await n.a.counter('mesh_dataplane_connections_established_total', 'role="outbound"')).toBeGreaterThanOrEqual(1);
    // All connections closed: the gauge is back to 0 and so is the data plane's fd count.
    await eventually('node A active connections at 0', async () =>
      (await n.a.counter('mesh_dataplane_connections_active', 'role="outbound"')) === 0);
    await eventually('node B active connections at 0', async () =>
      (await n.b.counter('mesh_dataplane_connections_active', 'role="inbound"')) === 0);
    await eventually(`node B back to ${fdsBeforeB} fds`, async () => (await fdsOf(n.b.child.pid!)) === fdsBeforeB);
    await eventually(`node A back to ${fdsBefore} fds`, async () => (await fdsOf(n.a.child.pid!)) === fdsBefore);
  });

  it('serves 300 new connections, 20 at a time, each with its own handshake', async () => {
    // fds first: a scrape's own connection stays open on the data plane until the scraper's FIN is read.
    const fds = [await fdsOf(n.a.child.pid!), await fdsOf(n.b.child.pid!)];
    const before = await n.a.counter('mesh_dataplane_connections_established_total', 'role="outbound"');
    const total = 300;
    let ok = 0;
    let next = 0;
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        while (next < total) {
          const i = next++;
          const sock = dial(n.a, n.client, n.target);
          sock.write(`GET /new-${i} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`);
          const body = (await readAll(sock)).toString();
          if (body.startsWith('HTTP/1.1 200') && body.endsWith(`${MARKER} /new-${i}\n`)) ok++;
        }
      }),
    );
    expect(ok).toBe(total);
    expect(await n.a.counter('mesh_dataplane_connections_established_total', 'role="outbound"')).toBe(before + total);
    await eventually(`node A back to ${fds[0]} fds`, async () => (await fdsOf(n.a.child.pid!)) === fds[0]);
    await eventually(`node B back to ${fds[1]} fds`, async () => (await fdsOf(n.b.child.pid!)) === fds[1]);
  });

  it('bounds what it holds for a backend that does not read: the sender is pushed back, nothing lost', async () => {
    // The backend accepts and reads nothing until told; the client offers 64 MiB.
    const size = 64 * 1024 * 1024;
    let backendSock: Socket | undefined;
    const received = createHash('sha256');
    let receivedBytes = 0;
    const raw: Server = createServer((s) => {
      backendSock = s;
      s.pause();
      s.on('data', (c: Buffer) => {
        received.update(c);
        receivedBytes += c.length;
      });
    });
    await new Promise<void>((r) => raw.listen(0, n.target.host, () => r()));
    try {
      const port = (raw.address() as AddressInfo).port;
      const config = structuredClone(n.configA);
      config.destinations!.push({ address: `${n.target.host}:${port}`, tunnel: n.configB.tunnel!, spiffeId: config.destinations![0]!.spiffeId });
      await n.a.reload(config);
      n.configA = config;
      const rss = (pid: number): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
      const rssBefore = [rss(n.a.child.pid!), rss(n.b.child.pid!)];
      const plainBefore = await n.a.counter('mesh_dataplane_bytes_total', 'role="outbound",direction="plain_to_tls"');
      const up = randomBytes(size);
      const sock = dial(n.a, n.client, { host: n.target.host, port });
      const closed = new Promise((r) => sock.once('close', r));
      sock.end(up);
      await eventually('the backend connection', () => backendSock !== undefined);
      // Let the pipeline fill up and stall.
      let last = -1;
      await eventually('the flow to stall', async () => {
        const now = await n.a.counter('mesh_dataplane_bytes_total', 'role="outbound",direction="plain_to_tls"');
        const stalled = now === last;
        last = now;
        await new Promise((r) => setTimeout(r, 300));
        return stalled;
      }, 60_000);
      // Socket buffers on four sockets plus two 64 KiB data plane buffers: far below the 64 MiB offered.
      expect(last - plainBefore).toBeLessThan(24 * 1024 * 1024);
      expect(rss(n.a.child.pid!) - rssBefore[0]!).toBeLessThan(8 * 1024 * 1024);
      expect(rss(n.b.child.pid!) - rssBefore[1]!).toBeLessThan(8 * 1024 * 1024);
      expect(sock.writableLength).toBeGreaterThan(0);
      backendSock!.resume();
      await eventually('all bytes at the backend', () => receivedBytes === size, 60_000);
      expect(received.digest('hex')).toBe(createHash('sha256').update(up).digest('hex'));
      backendSock!.end();
      await closed;
    } finally {
      backendSock?.destroy();
      await new Promise((r) => raw.close(r));
    }
  });

  it('moves 64 MiB each way through one connection intact, and the client reads the whole response after shutting its write side', async () => {
    const size = 64 * 1024 * 1024;
    // A raw TCP server on the server workload's address: sends 64 MiB at once, hashes what it receives, and after
    // the client's FIN appends the 32-byte hash of it — bytes that can only arrive through a half-closed tunnel.
    const down = randomBytes(size);
    const downHash = createHash('sha256').update(down).digest();
    let serverSock: Socket | undefined;
    const raw: Server = createServer({ allowHalfOpen: true }, (s) => {
      serverSock = s;
      const h = createHash('sha256');
      s.on('data', (c: Buffer) => h.update(c));
      s.once('end', () => s.end(h.digest()));
      s.write(down);
    });
    await new Promise<void>((r) => raw.listen(0, n.target.host, () => r()));
    try {
      const port = (raw.address() as AddressInfo).port;
      const config = structuredClone(n.configA);
      config.destinations!.push({ address: `${n.target.host}:${port}`, tunnel: n.configB.tunnel!, spiffeId: config.destinations![0]!.spiffeId });
      await n.a.reload(config);
      n.configA = config;
      // allowHalfOpen: ending our side must not end the socket.
      const sock = dial(n.a, n.client, { host: n.target.host, port });
      (sock as unknown as { allowHalfOpen: boolean }).allowHalfOpen = true;
      const received = readAll(sock);
      const up = randomBytes(size);
      const upHash = createHash('sha256').update(up).digest();
      await new Promise<void>((r) => sock.once('connect', () => r()));
      sock.end(up);
      const got = await received;
      expect(got.length).toBe(size + 32);
      expect(createHash('sha256').update(got.subarray(0, size)).digest().toString('hex')).toBe(downHash.toString('hex'));
      expect(got.subarray(size).toString('hex')).toBe(upHash.toString('hex'));
      const text = await n.a.scrape();
      expect(Dataplane.sample(text, 'mesh_dataplane_bytes_total', 'role="outbound",direction="plain_to_tls"')).toBeGreaterThanOrEqual(size);
      expect(Dataplane.sample(text, 'mesh_dataplane_bytes_total', 'role="outbound",direction="tls_to_plain"')).toBeGreaterThanOrEqual(size + 32);
    } finally {
      serverSock?.destroy();
      await new Promise((r) => raw.close(r));
    }
  });
}, { tools: ['tshark', 'openssl'] });
