// SVIDs on node:tls: mutual TLS 1.3 where each side checks the other's chain against the trust bundles (OpenSSL)
// and then by the X509-SVID rules (validateSvid), and reads the peer's SPIFFE ID.
import type { ConnectionOptions, TlsOptions, TLSSocket } from 'node:tls';
import type { X509Certificate } from 'node:crypto';
import { svidPem, type Svid } from './svid.js';
import type { TrustBundleSet } from './bundle.js';
import { validateSvid, type SvidVerifier, type ValidateOptions, type ValidationResult } from './validate.js';
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

/**
 * The peer's certificates, leaf first, as DER. Node gives the chain OpenSSL verified, so it ends with the trust
 * anchor from our bundle; read through X509Certificate.issuerCertificate (getPeerCertificate(true) builds far
 * larger objects).
 */
export function peerChain(socket: TLSSocket): Buffer[] {
  const out: Buffer[] = [];
  let c: X509Certificate | undefined = socket.getPeerX509Certificate();
  while (c && out.length < 10) {
    out.push(c.raw);
    const next: X509Certificate | undefined = c.issuerCertificate;
    if (!next || next.raw.equals(c.raw)) break;
    c = next;
  }
  return out;
}

/**
 * Checks a connected peer by the X509-SVID rules; `ok` carries its SPIFFE ID. Given an SvidVerifier (over the
 * same bundles), a chain it accepted before is not parsed and verified again.
 */
export async function verifyPeer(socket: TLSSocket, bundles: TrustBundleSet, o: ValidateOptions = {}, verifier?: SvidVerifier): Promise<ValidationResult> {
  // Certificates that are our own bundle's roots are not parsed again: the validator has them.
  const roots = bundles.allRoots().map((r) => r.raw);
  const chain = peerChain(socket)
    .filter((der, i) => i === 0 || !roots.some((r) => r.equals(der)))
    .map((b) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
  if (verifier && verifier.bundles !== bundles) throw new TypeError('the SvidVerifier checks against other bundles than these');
  return verifier ? verifier.verify(chain, o) : validateSvid(chain, bundles, o);
}
