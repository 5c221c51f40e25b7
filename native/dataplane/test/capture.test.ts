// The kernel's capture feeding the real data plane: a plaintext HTTP client in an enrolled cgroup dials the
// server workload's own address; the connect lands on node A's outbound listener, which finds the original
// destination in the pinned map by the accepted socket's peer (no preamble), and the request goes through the
// tunnel to node B and the server. A config naming a map that is not there is refused, naming the field.
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BPFFS } from '@mesh/bpf';
import { MtlsDatapath } from '@mesh/mtls/datapath';
import { createCgroup, describePrivileged, run, uniqueName, waitForLine, type Cgroup } from '@mesh/testkit';
import { DATAPLANE, missingDataplane } from './harness.js';
import { MARKER, startNodes, type Nodes } from './fixture.js';

const missing = missingDataplane();

describePrivileged('mesh-dataplane with the kernel capture', () => {
  let n: Nodes;
  let root: Cgroup, client: Cgroup;
  let mtls: MtlsDatapath;
  const pinDir = join(BPFFS, uniqueName('mtlsdp', 40));

  beforeAll(async () => {
    if (missing) throw new Error(missing);
    mtls = MtlsDatapath.load({ pinDir });
    n = await startNodes({
      tweak: ({ configA }) => {
        configA.originalDst = { map: join(pinDir, 'mtls_orig') };
      },
    });
    root = await createCgroup('mtlsdp');
    client = await createCgroup('cli', { parent: root.path });
    mtls.attach(root.path);
    mtls.apply({
      dataplane: { outbound: { ipv4: n.a.outbound!.host, port: n.a.outbound!.port }, inboundSource: { ipv4: n.ip(2) } },
      enrolled: [{ cgroup: client.path }],
      destinations: [`${n.target.host}:${n.target.port}`],
    });
  });
  afterAll(async () => {
    await client?.close();
    await root?.close();
    await n?.close();
    mtls?.close();
    rmSync(pinDir, { recursive: true, force: true });
  });

  it('a plaintext request to the workload address goes through the data planes, found by the map', async () => {
    const before = n.accepts();
    const captured = mtls.counters().capture;
    for (let i = 0; i < 5; i++) {
      const url = `http://${n.target.host}:${n.target.port}/capture-${i}`;
      const r = await client.run('curl', ['-sS', '--max-time', '20', '--interface', n.client, url], { timeoutMs: 60_000 });
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(`${MARKER} /capture-${i}\n`);
    }
    expect(n.accepts() - before).toBe(5);
    expect(mtls.counters().capture - captured).toBe(5n);
  });

  // Node A tunnels the target host's `port` too (beside the target's own), and the kernel captures the client's
  // connects to it.
  async function captureAlso(port: number): Promise<void> {
    const config = structuredClone(n.configA);
    config.destinations!.push({ address: `${n.target.host}:${port}`, tunnel: n.configB.tunnel!, spiffeId: config.destinations![0]!.spiffeId });
    await n.a.reload(config);
    n.configA = config;
    mtls.apply({
      dataplane: { outbound: { ipv4: n.a.outbound!.host, port: n.a.outbound!.port }, inboundSource: { ipv4: n.ip(2) } },
      enrolled: [{ cgroup: client.path }],
      destinations: [`${n.target.host}:${n.target.port}`, `${n.target.host}:${port}`],
    });
  }

  it('a protocol where the server speaks first works: the data plane does not wait for a client byte', async () => {
    // Like SMTP or MySQL: the server greets on accept; the client reads the greeting before it writes anything.
    const greeting = `220 ${MARKER} greeting\r\n`;
    const server = createServer((s) => {
      s.on('error', () => {});
      s.end(greeting);
    });
    await new Promise<void>((r) => server.listen(0, n.target.host, () => r()));
    try {
      const port = (server.address() as AddressInfo).port;
      await captureAlso(port);
      const script = `const s = require('node:net').connect({ host: ${JSON.stringify(n.target.host)}, port: ${port}, localAddress: ${JSON.stringify(n.client)} });
let got = ''; s.on('data', (c) => (got += c)); s.on('end', () => { process.stdout.write(got); process.exit(0); });
s.on('error', (e) => { process.stderr.write(String(e)); process.exit(1); }); setTimeout(() => { process.stderr.write('timed out'); process.exit(1); }, 20000);`;
      const started = Date.now();
      const r = await client.run(process.execPath, ['-e', script], { timeoutMs: 60_000 });
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(greeting);
      // Not after the data plane's set-up deadline gave up on a first byte.
      expect(Date.now() - started).toBeLessThan(8_000);
    } finally {
      await new Promise((r) => server.close(r));
    }
  }, 90_000);

  it("a pooled stream's header and the client's first bytes, there at accept, cross the tunnel in one TLS record", async () => {
    // An echo server; node A is stopped while the client connects and writes, so that A finds the bytes waiting
    // when it accepts (as when the client writes before A's worker runs).
    const echo = createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.on('data', (c) => s.write(c));
      s.on('end', () => s.end());
    });
    await new Promise<void>((r) => echo.listen(0, n.target.host, () => r()));
    const pid = n.a.child.pid!;
    // write(2)-class syscalls of A's threads (/proc io `syscw`): OpenSSL writes each record with one; the pumps'
    // send(2) to the application is not counted.
    const writes = () =>
      readdirSync(`/proc/${pid}/task`).reduce((k, tid) => k + Number(/^syscw: (\d+)$/m.exec(readFileSync(`/proc/${pid}/task/${tid}/io`, 'utf8'))![1]), 0);
    const script = `const rl = require('node:readline').createInterface({ input: process.stdin });
let s;
let k = 0;
rl.on('line', (l) => {
  if (l === 'open') {
    const i = ++k;
    s = require('node:net').connect({ host: ${JSON.stringify(n.target.host)}, port: Number(process.argv[1]), localAddress: ${JSON.stringify(n.client)} });
    s.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
    s.once('connect', () => s.write('ping', () => console.log('sent ' + i)));
    s.on('data', (c) => console.log('echo ' + i + ' ' + c));
    s.on('end', () => console.log('closed ' + i));
  } else if (l === 'close') {
    s.end();
  } else process.exit(0);
});`;
    let stopped = false;
    try {
      const port = (echo.address() as AddressInfo).port;
      await captureAlso(port);
      const child = client.spawn(process.execPath, ['-e', script, String(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
      const say = (line: string) => child.stdin!.write(`${line}\n`);
      const STREAMS = 5;
      const handshakes = () => n.a.counter('mesh_dataplane_tunnel_streams_total', 'role="outbound",tunnel="pooled",handshake="new"');
      const counted: number[] = [];
      // The first stream leaves a pooled connection; A is stopped for the others. A stream accepted by a worker
      // without an idle connection makes a handshake (its records are not the stream's): not counted.
      for (let i = 0; counted.length < STREAMS && i < 4 * STREAMS; i++) {
        const h0 = await handshakes();
        if (i > 0) {
          process.kill(pid, 'SIGSTOP');
          stopped = true;
        }
        say('open');
        await waitForLine(child, new RegExp(`^sent ${i + 1}$`), 20_000);
        const w0 = writes();
        if (stopped) process.kill(pid, 'SIGCONT');
        stopped = false;
        await waitForLine(child, new RegExp(`^echo ${i + 1} ping$`), 20_000);
        const w1 = writes();
        if (i > 0 && (await handshakes()) === h0) counted.push(w1 - w0);
        say('close');
        await waitForLine(child, new RegExp(`^closed ${i + 1}$`), 20_000);
      }
      expect(counted.length).toBe(STREAMS);
      const perStream = counted.reduce((a, b) => a + b, 0) / STREAMS;
      say('exit');
      console.log(`pooled stream: ${perStream.toFixed(2)} records from A for the header and the first bytes (${counted.join(", ")})`);
      // One record; the header on its own made it 2.
      expect(perStream).toBeLessThan(1.5);
    } finally {
      if (stopped) process.kill(pid, 'SIGCONT');
      await new Promise((r) => echo.close(r));
    }
  }, 90_000);

  it('a config naming a map that is not pinned is refused, naming the field', async () => {
    const path = join(n.dir, 'bad.json');
    await writeFile(path, JSON.stringify({ ...n.configA, outbound: `${n.ip(1)}:0`, stats: undefined, originalDst: { map: join(pinDir, 'nope') } }));
    const r = await run(DATAPLANE, ['--config', path, '--check'], { timeoutMs: 30_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/config\.originalDst\.map: cannot open pinned map ".*nope": No such file or directory/);
  });
});
