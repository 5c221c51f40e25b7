// An SVID we issued completes mutual TLS 1.3 with node:tls and with openssl s_server / s_client, each side
// reading the other's SPIFFE ID.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureTool, ProcessTracker, waitForLine } from '@mesh/testkit';
import { createRoot, issueSvid, svidPem, toPem, TrustBundle, TrustBundleSet, tlsClientOptions, tlsServerOptions, verifyPeer, workloadSpiffeId, type SigningAuthority, type Svid } from '../../src/index.js';
import { tempDir, tlsDial, tlsExchange, tlsServer, TD } from '../support.js';

const WEB = `spiffe://${TD}/ns/default/sa/web`;
const API = `spiffe://${TD}/ns/default/sa/api`;

let root: SigningAuthority;
let bundles: TrustBundleSet;
let web: Svid;
let api: Svid;
let tmp: { dir: string; remove(): void };
const procs = new ProcessTracker('mtls handshake');

beforeAll(async () => {
  root = await createRoot({ trustDomain: TD });
  bundles = new TrustBundleSet([new TrustBundle(TD, [root.certificate])]);
  web = await issueSvid(root, workloadSpiffeId(TD, 'default', 'web'), { ttlMs: 600_000 });
  api = await issueSvid(root, workloadSpiffeId(TD, 'default', 'api'), { ttlMs: 600_000 });
  tmp = tempDir('hs');
  writeFileSync(join(tmp.dir, 'root.pem'), toPem([root.certificate]));
  for (const [name, s] of [['web', web], ['api', api]] as const) {
    const { cert, key } = await svidPem(s);
    writeFileSync(join(tmp.dir, `${name}.crt`), cert);
    writeFileSync(join(tmp.dir, `${name}.key`), key, { mode: 0o600 });
  }
});
afterAll(async () => {
  await procs.close();
  tmp?.remove();
});

/** A node:tls server holding `web` that answers each client with the SPIFFE ID it validated, or the reason. */
async function webServer() {
  return tlsServer(await tlsServerOptions(web, bundles), (s) => {
    // Answered on the next turn of the event loop: node:tls ends a socket in the tick of 'secureConnection'
    // without a close_notify (openssl s_client then exits 1, "unexpected eof"), and verifyPeer, which does no
    // I/O, settles within that tick.
    setImmediate(() => void verifyPeer(s, bundles).then((r) => s.end(`${r.ok ? r.uri : `rejected ${r.reason}`} ${s.getProtocol()}\n`)));
  });
}

describe('mutual TLS 1.3 with SVIDs', () => {
  it('node:tls ↔ node:tls: each side reads the other\'s SPIFFE ID', async () => {
    const srv = await webServer();
    try {
      const { socket, line } = await tlsDial(srv.port, await tlsClientOptions(api, bundles));
      const seen = await verifyPeer(socket, bundles);
      socket.destroy();
      expect(line).toBe(`${API} TLSv1.3`);
      expect(seen.ok && seen.uri).toBe(WEB);
    } finally {
      await srv.close();
    }
  });

  it('openssl s_server holding an SVID ↔ node:tls client: s_server shows our URI, node reads its', async () => {
    const openssl = ensureTool('openssl');
    const d = tmp.dir;
    const server = procs.spawn(openssl, ['s_server', '-accept', '127.0.0.1:0', '-tls1_3', '-cert', join(d, 'web.crt'), '-key', join(d, 'web.key'), '-CAfile', join(d, 'root.pem'), '-Verify', '1', '-verify_return_error', '-www', '-naccept', '1']);
    const port = Number((await waitForLine(server, /^ACCEPT 127\.0\.0\.1:(\d+)/, 20_000))[1]);
    // -www answers a GET with the session and the client certificate as OpenSSL parsed it (X509_print).
    const { peer, text } = await tlsExchange(port, await tlsClientOptions(api, bundles), 'GET / HTTP/1.0\r\n\r\n', (s) => verifyPeer(s, bundles));
    expect(peer.ok && peer.uri).toBe(WEB);
    expect(text).toMatch(/Protocol version: TLSv1\.3|New, TLSv1\.3/);
    expect(text).toContain('Client certificate');
    expect(text).toContain(`URI:${API}`);
  });

  it('openssl s_client holding an SVID ↔ node:tls server: node reads its URI, s_client gets ours', async () => {
    const openssl = ensureTool('openssl');
    const d = tmp.dir;
    const srv = await webServer();
    try {
      const r = await procs.runChecked(openssl, ['s_client', '-connect', `127.0.0.1:${srv.port}`, '-tls1_3', '-cert', join(d, 'api.crt'), '-key', join(d, 'api.key'), '-CAfile', join(d, 'root.pem'), '-verify_return_error', '-showcerts', '-ign_eof'], { input: '', timeoutMs: 20_000 });
      // What the server validated, echoed back: the client's SPIFFE ID.
      expect(r.stdout).toContain(`${API} TLSv1.3`);
      expect(r.stdout).toMatch(/Verify return code: 0 \(ok\)/);
      // What s_client received: the server's leaf, read by OpenSSL.
      const leafPem = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(r.stdout)![0];
      const san = await procs.runChecked(openssl, ['x509', '-noout', '-ext', 'subjectAltName'], { input: leafPem });
      expect(san.stdout).toContain(`URI:${WEB}`);
    } finally {
      await srv.close();
    }
  });

  it('a client with an SVID of an unknown root is refused by the handshake', async () => {
    const stranger = await issueSvid(await createRoot({ trustDomain: TD }), workloadSpiffeId(TD, 'default', 'evil'), { ttlMs: 60_000 });
    const srv = await webServer();
    try {
      await expect(tlsDial(srv.port, await tlsClientOptions(stranger, bundles))).rejects.toThrow(/alert|unknown ca|socket hang up|ECONNRESET|closed/i);
    } finally {
      await srv.close();
    }
  });
});
