// SVIDs on node:tls: mutual TLS 1.3 where each side checks the other's chain against the trust bundles (OpenSSL)
// and then by the X509-SVID rules (validateSvid), and reads the peer's SPIFFE ID.
import type { ConnectionOptions, PeerCertificate, TlsOptions, TLSSocket } from 'node:tls';
import { svidPem, type Svid } from './svid.js';
import type { TrustBundleSet } from './bundle.js';
import { validateSvid, type ValidateOptions, type ValidationResult } from './validate.js';
import { toPem } from './x509.js';

/** Options for tls.createServer / tls.createSecureContext: present `svid`, require and check a client certificate. */
export async function tlsServerOptions(svid: Svid, bundles: TrustBundleSet): Promise<TlsOptions> {
  const { cert, key } = await svidPem(svid);
  return { cert, key, ca: toPem(bundles.allRoots()), requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' };
}

/**
 * Options for tls.connect: present `svid`, check the server's chain. SVIDs name no host, so the host name
 * check is replaced: the server's identity is its SPIFFE ID, read with verifyPeer once connected.
 */
export async function tlsClientOptions(svid: Svid, bundles: TrustBundleSet): Promise<ConnectionOptions> {
  const { cert, key } = await svidPem(svid);
  return { cert, key, ca: toPem(bundles.allRoots()), rejectUnauthorized: true, minVersion: 'TLSv1.3', checkServerIdentity: () => undefined };
}

/** The certificates the peer presented, leaf first, as DER (from node's detailed peer certificate). */
export function peerChain(socket: TLSSocket): Buffer[] {
  const out: Buffer[] = [];
  let c: PeerCertificate | undefined = socket.getPeerCertificate(true);
  const seen = new Set<PeerCertificate>();
  while (c && c.raw && !seen.has(c) && out.length < 10) {
    seen.add(c);
    out.push(c.raw);
    c = (c as { issuerCertificate?: PeerCertificate }).issuerCertificate;
  }
  return out;
}

/** Checks a connected peer by the X509-SVID rules; `ok` carries its SPIFFE ID. */
export async function verifyPeer(socket: TLSSocket, bundles: TrustBundleSet, o: ValidateOptions = {}): Promise<ValidationResult> {
  const chain = peerChain(socket);
  return validateSvid(chain.map((b) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength)), bundles, o);
}
