/** Certificate builders for tests (including deliberately broken ones), temp dirs and an OpenSSL verdict. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { ensureTool, uniqueName } from '@mesh/testkit';
import { generateKeyPair, KeyUsageFlags, ExtendedKeyUsage, type Certificate, type SigningAuthority } from '../src/index.js';
import { createCertificate, extension, keyIdentifier, randomSerial, wholeSeconds, type CryptoKey } from '../src/x509.js';
import { KeyObject } from 'node:crypto';

export const TD = 'example.org';

/** A private temp directory removed by the returned function. */
export function tempDir(prefix = 'mtls'): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), `${uniqueName(prefix, 64)}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface CertSpec {
  /** Signs the certificate; omitted = self-signed. */
  issuer?: SigningAuthority;
  /** Sign with this key instead of the issuer's (a bad signature under the issuer's name). */
  signWith?: CryptoKey;
  uris?: string[];
  dns?: string[];
  ca?: boolean;
  pathLength?: number;
  keyUsage?: number;
  notBefore?: number;
  notAfter?: number;
  subject?: string;
}

/** Builds one certificate exactly as described; nothing is checked, so broken ones can be made. */
export async function buildCert(spec: CertSpec): Promise<SigningAuthority> {
  const keys = await generateKeyPair();
  const now = Date.now();
  const subject = spec.subject ?? `O=test, CN=${randomSerial().slice(0, 12)}`;
  const issuerCert = spec.issuer?.certificate;
  const keyId = (k: CryptoKey) => keyIdentifier(KeyObject.from(k).export({ type: 'spki', format: 'der' }));
  const extensions = [
    extension.basicConstraints(spec.ca ?? false, spec.pathLength, true),
    extension.keyUsage(spec.keyUsage ?? (spec.ca ? KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign : KeyUsageFlags.digitalSignature), true),
    extension.subjectKeyIdentifier(keyId(keys.publicKey)),
    extension.authorityKeyIdentifier(issuerCert ? keyIdentifier(issuerCert.spki) : keyId(keys.publicKey)),
  ];
  if (spec.uris?.length || spec.dns?.length) extensions.push(extension.subjectAltName({ uris: spec.uris ?? [], dns: spec.dns ?? [] }, true));
  if (!spec.ca) extensions.push(extension.extendedKeyUsage([ExtendedKeyUsage.serverAuth, ExtendedKeyUsage.clientAuth]));
  const certificate = createCertificate({
    serialNumber: randomSerial(),
    subject,
    issuer: issuerCert ? issuerCert.subjectDer : subject,
    notBefore: wholeSeconds(spec.notBefore ?? now - 60_000),
    notAfter: wholeSeconds(spec.notAfter ?? now + 3600_000),
    publicKey: keys.publicKey,
    signingKey: spec.signWith ?? spec.issuer?.privateKey ?? keys.privateKey,
    extensions,
  });
  const chain = issuerCert && issuerCert.subject !== issuerCert.issuer ? [issuerCert, ...spec.issuer!.chain] : [];
  return { certificate, privateKey: keys.privateKey, chain };
}

/** `openssl verify -x509_strict` of `leaf` with `roots` trusted and `untrusted` as intermediates. */
export function opensslVerify(roots: Certificate[], untrusted: Certificate[], leaf: Certificate): { ok: boolean; output: string } {
  const openssl = ensureTool('openssl');
  const t = tempDir('ossl');
  try {
    const pem = (cs: Certificate[]) => cs.map((c) => c.toString('pem')).join('\n') + '\n';
    writeFileSync(join(t.dir, 'roots.pem'), pem(roots));
    writeFileSync(join(t.dir, 'leaf.pem'), pem([leaf]));
    const args = ['verify', '-x509_strict', '-CAfile', join(t.dir, 'roots.pem')];
    if (untrusted.length) {
      writeFileSync(join(t.dir, 'untrusted.pem'), pem(untrusted));
      args.push('-untrusted', join(t.dir, 'untrusted.pem'));
    }
    args.push(join(t.dir, 'leaf.pem'));
    const r = spawnSync(openssl, args, { encoding: 'utf8', timeout: 20_000 });
    return { ok: r.status === 0, output: `${r.stdout}${r.stderr}`.trim() };
  } finally {
    t.remove();
  }
}

/** A node:tls server on 127.0.0.1 whose handler gets each verified connection. */
export async function tlsServer(options: import('node:tls').TlsOptions, onSecure: (s: import('node:tls').TLSSocket) => void): Promise<{ port: number; server: import('node:tls').Server; close(): Promise<void> }> {
  const tls = await import('node:tls');
  const server = tls.createServer(options, onSecure);
  const sockets = new Set<import('node:net').Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve, reject) => server.listen(0, '127.0.0.1', resolve).once('error', reject));
  const port = (server.address() as import('node:net').AddressInfo).port;
  return {
    port,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Connects, waits for the handshake and the server's first line, and returns the socket and that line. */
export async function tlsDial(port: number, options: import('node:tls').ConnectionOptions, timeoutMs = 10_000): Promise<{ socket: import('node:tls').TLSSocket; line: string }> {
  const tls = await import('node:tls');
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ ...options, host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer from 127.0.0.1:${port} in ${timeoutMs} ms`));
    }, timeoutMs);
    let buf = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve({ socket, line: buf.slice(0, nl) });
      }
    });
    socket.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    socket.on('end', () => {
      clearTimeout(timer);
      reject(new Error(`connection closed before a line (got ${JSON.stringify(buf)})`));
    });
  });
}

/** Connects, sends `request` once the handshake is done, reads until the server closes; `onSecure` sees the socket first. */
export async function tlsExchange<T>(port: number, options: import('node:tls').ConnectionOptions, request: string, onSecure: (s: import('node:tls').TLSSocket) => Promise<T>, timeoutMs = 10_000): Promise<{ peer: T; text: string }> {
  const tls = await import('node:tls');
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ ...options, host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no complete answer from 127.0.0.1:${port} in ${timeoutMs} ms`));
    }, timeoutMs);
    let text = '';
    let peer: Promise<T> | undefined;
    socket.setEncoding('utf8');
    socket.on('secureConnect', () => {
      peer = onSecure(socket);
      socket.write(request);
    });
    socket.on('data', (d: string) => (text += d));
    socket.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      if (!peer) return reject(new Error('closed before the handshake completed'));
      peer.then((p) => resolve({ peer: p, text }), reject);
    });
  });
}

/** A clock the test moves: timers run in time order, each followed by `settle` (e.g. the rotator's idle()). */
export class FakeClock {
  #now: number;
  #seq = 0;
  readonly #timers = new Map<number, { at: number; seq: number; fn: () => void }>();
  constructor(start: number) {
    this.#now = start;
  }
  now(): number {
    return this.#now;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const seq = ++this.#seq;
    this.#timers.set(seq, { at: this.#now + Math.max(0, ms), seq, fn });
    return seq;
  }
  clearTimeout(h: unknown): void {
    this.#timers.delete(h as number);
  }
  async advanceTo(t: number, settle: () => Promise<void>): Promise<void> {
    for (let guard = 0; guard < 100_000; guard++) {
      let next: { at: number; seq: number; fn: () => void } | undefined;
      for (const x of this.#timers.values()) if (x.at <= t && (!next || x.at < next.at || (x.at === next.at && x.seq < next.seq))) next = x;
      if (!next) break;
      this.#timers.delete(next.seq);
      this.#now = Math.max(this.#now, next.at);
      next.fn();
      await settle();
    }
    this.#now = Math.max(this.#now, t);
  }
}

/** Writes a cert-manager-layout directory (tls.crt, tls.key, ca.crt) for an intermediate of `root`. */
export async function writeIssuerDir(dir: string, issuer: SigningAuthority, root: SigningAuthority): Promise<void> {
  const { mkdirSync } = await import('node:fs');
  const { exportKeyPem, toPem } = await import('../src/index.js');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tls.crt'), toPem([issuer.certificate, ...issuer.chain]));
  writeFileSync(join(dir, 'tls.key'), await exportKeyPem(issuer.privateKey), { mode: 0o600 });
  writeFileSync(join(dir, 'ca.crt'), toPem([root.certificate]));
}
