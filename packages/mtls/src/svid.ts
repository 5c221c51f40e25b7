// X.509-SVIDs (spiffe/standards X509-SVID.md): what a leaf and a signing certificate carry, and how they are made.
import { Certificate, createCertificate, extension, ExtendedKeyUsage, KeyUsageFlags, keyIdentifier, type CryptoKey, type ExtensionDer, generateKeyPair, exportKeyPem, randomSerial, toPem, wholeSeconds } from './x509.js';
import { KeyObject } from 'node:crypto';
import { formatSpiffeId, checkTrustDomain, type SpiffeId } from './spiffe-id.js';

export const DEFAULT_SVID_TTL_MS = 24 * 3600_000;
/** Shorter lifetimes are for tests; the agent itself accepts a minute or more. */
export const MIN_SVID_TTL_MS = 1000;

/** A certificate and the key that signs with it, plus the intermediates between it and its root (root excluded). */
export interface SigningAuthority {
  readonly certificate: Certificate;
  readonly privateKey: CryptoKey;
  readonly chain: readonly Certificate[];
}

/** A workload's identity: its leaf, the intermediates a peer needs to reach the root, and its private key. */
export interface Svid {
  readonly id: SpiffeId;
  /** `spiffe://…` */
  readonly uri: string;
  readonly certificate: Certificate;
  readonly intermediates: readonly Certificate[];
  readonly privateKey: CryptoKey;
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Who signed it (the issuing certificate's subject). */
  readonly issuer: string;
}

/** PEM for node:tls or OpenSSL: `cert` is the leaf followed by its intermediates. Never log `key`. */
export async function svidPem(svid: Svid): Promise<{ cert: string; key: string }> {
  return { cert: toPem([svid.certificate, ...svid.intermediates]), key: await exportKeyPem(svid.privateKey) };
}

function checkTtl(ttlMs: number, what: string): void {
  if (!Number.isInteger(ttlMs) || ttlMs < MIN_SVID_TTL_MS) throw new RangeError(`${what} must be an integer number of ms ≥ ${MIN_SVID_TTL_MS}, got ${ttlMs}`);
}

/** The key identifier of a public key (the SKID it gets, the AKID of what it signs). */
function keyIdOf(publicKey: CryptoKey): Buffer {
  return keyIdentifier(KeyObject.from(publicKey).export({ type: 'spki', format: 'der' }));
}

/** The AKID of a certificate `issuer` signs: the issuer's own SKID when it has one (a root made elsewhere may
 *  compute it another way), else its key's. */
function authorityKeyId(issuer: Certificate): Buffer {
  return issuer.subjectKeyId !== undefined ? Buffer.from(issuer.subjectKeyId, 'hex') : keyIdentifier(issuer.spki);
}

/** The extensions of a CA certificate: critical basicConstraints CA=true, keyCertSign|cRLSign, SKID, the trust domain's ID. */
function caExtensions(trustDomain: string, publicKey: CryptoKey, pathLength: number | undefined, issuerKeyId: Buffer): ExtensionDer[] {
  return [
    extension.basicConstraints(true, pathLength, true),
    extension.keyUsage(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign, true),
    extension.subjectKeyIdentifier(keyIdOf(publicKey)),
    extension.authorityKeyIdentifier(issuerKeyId),
    extension.subjectAltName({ uris: [formatSpiffeId({ trustDomain, path: '' })] }, false),
  ];
}

export interface RootOptions {
  trustDomain: string;
  /** Default 1 year. */
  ttlMs?: number;
  now?: number;
  /** Common name, to tell roots apart in a bundle. */
  name?: string;
  pathLength?: number;
}

/** A self-signed root for a trust domain. */
export async function createRoot(o: RootOptions): Promise<SigningAuthority> {
  checkTrustDomain(o.trustDomain);
  const ttl = o.ttlMs ?? 365 * 24 * 3600_000;
  checkTtl(ttl, 'root TTL');
  const now = o.now ?? Date.now();
  const keys = await generateKeyPair();
  const name = `O=mesh, OU=${o.trustDomain}, CN=${o.name ?? 'mesh root'} ${randomSerial().slice(0, 8)}`;
  const certificate = createCertificate({
    serialNumber: randomSerial(),
    subject: name,
    issuer: name,
    notBefore: wholeSeconds(now),
    notAfter: wholeSeconds(now + ttl),
    publicKey: keys.publicKey,
    signingKey: keys.privateKey,
    extensions: caExtensions(o.trustDomain, keys.publicKey, o.pathLength, keyIdOf(keys.publicKey)),
  });
  return { certificate, privateKey: keys.privateKey, chain: [] };
}

/** An intermediate CA signed by `parent` (what an external issuer such as cert-manager hands the mesh). */
export async function createIntermediate(parent: SigningAuthority, o: RootOptions): Promise<SigningAuthority> {
  checkTrustDomain(o.trustDomain);
  const ttl = o.ttlMs ?? 30 * 24 * 3600_000;
  checkTtl(ttl, 'intermediate TTL');
  const now = o.now ?? Date.now();
  const keys = await generateKeyPair();
  const certificate = createCertificate({
    serialNumber: randomSerial(),
    subject: `O=mesh, OU=${o.trustDomain}, CN=${o.name ?? 'mesh intermediate'} ${randomSerial().slice(0, 8)}`,
    issuer: parent.certificate.subjectDer,
    notBefore: wholeSeconds(now),
    notAfter: wholeSeconds(Math.min(now + ttl, parent.certificate.notAfter.getTime())),
    publicKey: keys.publicKey,
    signingKey: parent.privateKey,
    extensions: caExtensions(o.trustDomain, keys.publicKey, o.pathLength, authorityKeyId(parent.certificate)),
  });
  const parentIsRoot = parent.certificate.subject === parent.certificate.issuer;
  return { certificate, privateKey: keys.privateKey, chain: parentIsRoot ? [] : [parent.certificate, ...parent.chain] };
}

/** The extensions every leaf SVID carries. */
export function leafExtensions(uri: string, publicKey: CryptoKey, issuer: Certificate): ExtensionDer[] {
  return [
    extension.basicConstraints(false, undefined, true),
    extension.keyUsage(KeyUsageFlags.digitalSignature, true),
    extension.extendedKeyUsage([ExtendedKeyUsage.serverAuth, ExtendedKeyUsage.clientAuth], false),
    // Critical: the subject carries no identity, the URI SAN is the identity.
    extension.subjectAltName({ uris: [uri] }, true),
    extension.subjectKeyIdentifier(keyIdOf(publicKey)),
    extension.authorityKeyIdentifier(authorityKeyId(issuer)),
  ];
}

export interface IssueOptions {
  /** Default 24 h. */
  ttlMs?: number;
  now?: number;
}

/**
 * Issues a leaf SVID for `id` with a fresh ECDSA P-256 key. Its lifetime is cut to the issuing certificate's
 * (a leaf never outlives its signer) and starts at the current whole second.
 */
export async function issueSvid(authority: SigningAuthority, id: SpiffeId, o: IssueOptions = {}): Promise<Svid> {
  const uri = formatSpiffeId(id);
  if (id.path === '') throw new RangeError(`an SVID needs a path: ${uri} names a trust domain`);
  const ttl = o.ttlMs ?? DEFAULT_SVID_TTL_MS;
  checkTtl(ttl, 'SVID TTL');
  const now = o.now ?? Date.now();
  const notBefore = wholeSeconds(now);
  const notAfter = wholeSeconds(Math.min(notBefore.getTime() + ttl, authority.certificate.notAfter.getTime()));
  if (notAfter <= notBefore) throw new Error(`the issuing certificate ${authority.certificate.subject} has expired (${authority.certificate.notAfter.toISOString()})`);
  const keys = await generateKeyPair();
  const certificate = createCertificate({
    serialNumber: randomSerial(),
    subject: `O=mesh, OU=${id.trustDomain}`,
    issuer: authority.certificate.subjectDer,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: authority.privateKey,
    extensions: leafExtensions(uri, keys.publicKey, authority.certificate),
  });
  const chain = authority.certificate.subject === authority.certificate.issuer ? [] : [authority.certificate, ...authority.chain];
  return {
    id,
    uri,
    certificate,
    intermediates: chain,
    privateKey: keys.privateKey,
    serial: certificate.serialNumber,
    notBefore: certificate.notBefore,
    notAfter: certificate.notAfter,
    issuer: authority.certificate.subject,
  };
}
