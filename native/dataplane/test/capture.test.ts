// The kernel's capture feeding the real data plane: a plaintext HTTP client in an enrolled cgroup dials the
// server workload's own address; the connect lands on node A's outbound listener, which finds the original
// destination in the pinned map by the accepted socket's peer (no preamble), and the request goes through the
// tunnel to node B and the server. A config naming a map that is not there is refused, naming the field.
import { rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BPFFS } from '@mesh/bpf';
import { MtlsDatapath } from '@mesh/mtls/datapath';
import { createCgroup, describePrivileged, run, uniqueName, type Cgroup } from '@mesh/testkit';
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
      const config = structuredClone(n.configA);
      config.destinations!.push({ address: `${n.target.host}:${port}`, tunnel: n.configB.tunnel!, spiffeId: config.destinations![0]!.spiffeId });
      await n.a.reload(config);
      n.configA = config;
      mtls.apply({
        dataplane: { outbound: { ipv4: n.a.outbound!.host, port: n.a.outbound!.port }, inboundSource: { ipv4: n.ip(2) } },
        enrolled: [{ cgroup: client.path }],
        destinations: [`${n.target.host}:${n.target.port}`, `${n.target.host}:${port}`],
      });
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

  it('a config naming a map that is not pinned is refused, naming the field', async () => {
    const path = join(n.dir, 'bad.json');
    await writeFile(path, JSON.stringify({ ...n.configA, outbound: `${n.ip(1)}:0`, stats: undefined, originalDst: { map: join(pinDir, 'nope') } }));
    const r = await run(DATAPLANE, ['--config', path, '--check'], { timeoutMs: 30_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/config\.originalDst\.map: cannot open pinned map ".*nope": No such file or directory/);
  });
});
