// The data plane's life: SIGHUP rotates certificates for new handshakes without touching open connections
// (and a bad config is refused whole), and after kill -9 a restarted data plane serves new connections.
import { X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { connect as tlsConnect } from 'node:tls';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged, pidAlive, waitForExit, waitForLine } from '@mesh/testkit';
import { DATAPLANE, dial, get, meshAgent, missingDataplane, outcome, startDataplane, type Endpoint } from './harness.js';
import { CLIENT_ID, eventually, SERVER_ID, startNodes, type Nodes } from './fixture.js';

const missing = missingDataplane();

// The server name outbound data planes send: the destination IP in hex, then ".dst.mesh".
function sniFor(ip: string): string {
  return `${Buffer.from(ip.split('.').map(Number)).toString('hex')}.dst.mesh`;
}

/** The certificate node B's tunnel presents for `target`, seen by a client with the client SVID. */
function presented(n: Nodes, target: Endpoint): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = tlsConnect({
      host: n.b.tunnel!.host,
      port: n.b.tunnel!.port,
      servername: sniFor(target.host),
      cert: readFileSync(n.clientSvid.cert),
      key: readFileSync(n.clientSvid.key),
      ca: readFileSync(n.root.cert),
      minVersion: 'TLSv1.3',
      // The SPIFFE ID is in a URI SAN, not a DNS name; the fingerprint is what this probe compares.
      checkServerIdentity: () => undefined,
    });
    sock.once('secureConnect', () => {
      resolve(sock.getPeerCertificate().fingerprint256);
      sock.destroy();
    });
    sock.once('error', reject);
  });
}

const fingerprint = (pem: string): string => new X509Certificate(readFileSync(pem)).fingerprint256;

describePrivileged('mesh-dataplane lifecycle', () => {
  let n: Nodes;
  beforeAll(async () => {
    if (missing) throw new Error(missing);
    n = await startNodes();
  });
  afterAll(async () => {
    await n?.close();
  });

  const fresh = async (path: string): Promise<number> =>
    (await get({ host: n.target.host, port: n.target.port, path, agent: meshAgent(n.a, n.client, n.target, 1) })).status;

  it('rotates certificates on SIGHUP: open connections keep working, new handshakes present the new SVID', async () => {
    const kept = meshAgent(n.a, n.client, n.target, 1);
    const viaKept = async (path: string): Promise<number> =>
      (await get({ host: n.target.host, port: n.target.port, path, agent: kept })).status;
    expect(await viaKept('/1')).toBe(200);
    expect(n.accepts()).toBe(1);
    expect(await presented(n, n.target)).toBe(fingerprint(n.serverSvid.cert));

    // Node B: a new server SVID (same SPIFFE ID, new key).
    const serverV2 = await n.pki.svid(n.root, 'server-v2', SERVER_ID);
    n.configB.workloads[0] = { ...n.configB.workloads[0]!, ...serverV2 };
    await n.b.reload(n.configB);
    expect(await presented(n, n.target)).toBe(fingerprint(serverV2.cert));
    expect(await viaKept('/2')).toBe(200);
    expect(n.accepts()).toBe(1);

    // Node A: a client SVID from a root node B does not trust. New connections now fail at B — so A's new
    // handshakes do use the new certificate — while the open one carries on.
    const rogue = await n.pki.root('rogue');
    const foreign = await n.pki.svid(rogue, 'client-foreign', CLIENT_ID);
    n.configA.workloads[0] = { ...n.configA.workloads[0]!, ...foreign };
    await n.a.reload(n.configA);
    const refused = dial(n.a, n.client, n.target);
    refused.write('GET /refused HTTP/1.1\r\nhost: x\r\n\r\n');
    expect((await outcome(refused)).bytes).toBe(0);
    await eventually('untrusted_chain counted on node B', async () =>
      (await n.b.counter('mesh_dataplane_handshake_failures_total', 'role="inbound",reason="untrusted_chain"')) === 1);
    expect(await viaKept('/3')).toBe(200);

    // And back to a good one.
    const clientV3 = await n.pki.svid(n.root, 'client-v3', CLIENT_ID);
    n.configA.workloads[0] = { ...n.configA.workloads[0]!, ...clientV3 };
    await n.a.reload(n.configA);
    expect(await fresh('/4')).toBe(200);
    expect(await viaKept('/5')).toBe(200);
    expect(n.accepts()).toBe(2);
    kept.destroy();
  });

  it('refuses a bad config on SIGHUP whole, naming the field, and keeps serving with the previous one', async () => {
    const broken = structuredClone(n.configA);
    broken.workloads[0]!.key = '/nonexistent/key.pem';
    await writeFile(n.a.configPath, JSON.stringify(broken));
    n.a.child.kill('SIGHUP');
    await waitForLine(n.a.child, /reload failed, keeping generation \d+: config\.workloads\[0\]\.key: cannot load "\/nonexistent\/key\.pem"/, 20_000);
    expect(await n.a.counter('mesh_dataplane_config_reloads_total', 'result="error"')).toBe(1);
    expect(await fresh('/after-bad-reload')).toBe(200);
    await writeFile(n.a.configPath, JSON.stringify(n.configA));
  });

  it('refuses to start on a bad config, naming the field; --check validates', async () => {
    const bad = structuredClone(n.configB);
    bad.workloads[0]!.spiffeId = `${SERVER_ID}-not-this`;
    bad.tunnel = `${n.ip(3)}:0`;
    await writeFile(`${n.dir}/bad.json`, JSON.stringify(bad));
    const r = await n.tracker.run(DATAPLANE, ['--config', `${n.dir}/bad.json`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`config.workloads[0].spiffeId: "${SERVER_ID}-not-this" but the certificate says "${SERVER_ID}"`);
    // --check validates without listening: the good config passes while node B holds its addresses.
    const ok = await n.tracker.run(DATAPLANE, ['--config', n.b.configPath, '--check']);
    expect([ok.code, ok.stdout.trim()]).toEqual([0, 'mesh-dataplane: config ok']);
  });

  it('after kill -9 of the tunnel side, open connections end, and a restarted data plane serves new ones', async () => {
    const open = dial(n.a, n.client, n.target);
    open.write('GET /open HTTP/1.1\r\nhost: x\r\n\r\n');
    const ended = outcome(open, 60_000);
    // Wait until that connection is through, so the kill cuts a live connection.
    await eventually('the open request served', () => n.accepts() >= 4);
    const pid = n.b.child.pid!;
    n.b.child.kill('SIGKILL');
    await waitForExit(n.b.child, 10_000);
    expect(pidAlive(pid)).toBe(false);
    const r = await ended;
    expect(r.bytes).toBeGreaterThan(0); // the response arrived before the kill; then the connection ended
    // Down: new connections are refused by node A, counted.
    const down = dial(n.a, n.client, n.target);
    down.write('GET /down HTTP/1.1\r\nhost: x\r\n\r\n');
    expect((await outcome(down)).bytes).toBe(0);
    expect(await n.a.counter('mesh_dataplane_connection_errors_total', 'role="outbound",reason="tunnel_connect_failed"')).toBe(1);

    // Restarted on the same tunnel address (SO_REUSEADDR): serves at once.
    n.b = await startDataplane(n.tracker, n.dir, 'node-b', n.configB);
    expect(await fresh('/after-restart-b')).toBe(200);

    // Same for the outbound side.
    n.a.child.kill('SIGKILL');
    await waitForExit(n.a.child, 10_000);
    n.a = await startDataplane(n.tracker, n.dir, 'node-a', n.configA);
    expect(await fresh('/after-restart-a')).toBe(200);
  });
}, { tools: ['openssl'] });
