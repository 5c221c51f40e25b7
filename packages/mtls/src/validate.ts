// Validation of a peer's X.509-SVID chain per spiffe/standards X509-SVID.md §4/§5: build a path from the leaf
// to a root of the bundle for the leaf's trust domain, verify each signature (OpenSSL), and check times,
// basic constraints, key usage, path length and the one URI SAN. Each failure has its own reason.
import { createHash } from 'node:crypto';
import { Certificate, KeyUsageFlags } from './x509.js';
import { trySpiffeId, type SpiffeId } from './spiffe-id.js';
import type { TrustBundleSet } from './bundle.js';

export const REJECTION_REASONS = [
  'expired',
  'not-yet-valid',
  'wrong-trust-domain',
  'no-uri-san',
  'several-uri-sans',
  'malformed-id',
  'leaf-is-ca',
  'leaf-can-sign',
  'no-digital-signature',
  'untrusted-chain',
  'path-length-exceeded',
  'bad-signature',
] as const;
export type RejectionReason = (typeof REJECTION_REASONS)[number];

export type ValidationResult =
  | { ok: true; id: SpiffeId; uri: string; leaf: Certificate; path: Certificate[] }
  | { ok: false; reason: RejectionReason; detail: string };

export interface ValidateOptions {
  /** Milliseconds since the epoch; default now. */
  now?: number;
  /** When set, an ID of any other trust domain is rejected as `wrong-trust-domain`. */
  trustDomain?: string;
}

/** Deeper chains are refused: nothing the mesh issues has more than a couple of intermediates. */
const MAX_PATH = 8;

const reject = (reason: RejectionReason, detail: string): ValidationResult => ({ ok: false, reason, detail });

function certOf(c: Certificate | Uint8Array | ArrayBuffer | string): Certificate {
  return c instanceof Certificate ? c : new Certificate(c);
}

function uriSans(cert: Certificate): string[] {
  return [...cert.uris];
}

function timeProblem(cert: Certificate, now: number, what: string): ValidationResult | undefined {
  if (now < cert.notBefore.getTime()) return reject('not-yet-valid', `${what} is valid from ${cert.notBefore.toISOString()}`);
  if (now > cert.notAfter.getTime()) return reject('expired', `${what} expired at ${cert.notAfter.toISOString()}`);
  return undefined;
}

/** Could `issuer` have issued `cert`, going by names and key identifiers (the signature is checked after)? */
function mayHaveIssued(issuer: Certificate, cert: Certificate): boolean {
  if (issuer.subject !== cert.issuer) return false;
  const akid = cert.authorityKeyId;
  const skid = issuer.subjectKeyId;
  return akid === undefined || skid === undefined || akid === skid;
}

function signedBy(cert: Certificate, issuer: Certificate): boolean {
  return cert.signedBy(issuer);
}

/**
 * Validates `chain` (the peer's leaf first, then any intermediates it sent) against `bundles`.
 * Never throws for a bad certificate: every failure is a `reason`.
 */
export async function validateSvid(
  chain: readonly (Certificate | Uint8Array | ArrayBuffer | string)[],
  bundles: TrustBundleSet,
  o: ValidateOptions = {},
): Promise<ValidationResult> {
  const now = o.now ?? Date.now();
  if (chain.length === 0) return reject('untrusted-chain', 'no certificate');
  let certs: Certificate[];
  try {
    certs = chain.map(certOf);
  } catch (e) {
    return reject('untrusted-chain', `a certificate does not parse: ${(e as Error).message}`);
  }
  const leaf = certs[0]!;

  // The identity: exactly one URI SAN, a valid SPIFFE ID with a path.
  const uris = uriSans(leaf);
  if (uris.length === 0) return reject('no-uri-san', 'the leaf has no URI SAN');
  if (uris.length > 1) return reject('several-uri-sans', `the leaf has ${uris.length} URI SANs: ${uris.join(', ')}`);
  const uri = uris[0]!;
  const parsed = trySpiffeId(uri);
  if ('error' in parsed) return reject('malformed-id', parsed.error);
  const id = parsed.id;
  if (id.path === '') return reject('malformed-id', `${uri} names a trust domain, not a workload`);

  // The leaf's role: not a CA, signs TLS handshakes, signs nothing else.
  const bc = leaf.basicConstraints;
  if (bc?.ca) return reject('leaf-is-ca', 'the leaf has basicConstraints CA=true');
  const ku = leaf.keyUsage;
  if (ku !== undefined && ku & (KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign)) {
    return reject('leaf-can-sign', 'the leaf has keyUsage keyCertSign or cRLSign');
  }
  if (ku === undefined || !(ku & KeyUsageFlags.digitalSignature)) return reject('no-digital-signature', 'the leaf lacks keyUsage digitalSignature');

  // The trust domain picks the bundle: a root of another trust domain never vouches for this ID.
  if (o.trustDomain !== undefined && id.trustDomain !== o.trustDomain) {
    return reject('wrong-trust-domain', `${uri} is in ${id.trustDomain}, expected ${o.trustDomain}`);
  }
  const bundle = bundles.get(id.trustDomain);
  if (!bundle || bundle.roots.length === 0) return reject('wrong-trust-domain', `no trust bundle for ${id.trustDomain}`);

  const leafTime = timeProblem(leaf, now, 'the leaf');
  if (leafTime) return leafTime;

  // Path building: from the leaf, find an issuer among the sent intermediates and the bundle's roots whose
  // signature checks; stop at a root. Depth-first with backtracking, bounded by MAX_PATH.
  const roots = bundle.roots;
  const roster = certs.slice(1);
  let badSignature: string | undefined;
  const extend = async (path: Certificate[]): Promise<Certificate[] | undefined> => {
    const tip = path[path.length - 1]!;
    if (path.length > MAX_PATH) return undefined;
    const rootCandidates = roots.filter((r) => mayHaveIssued(r, tip));
    for (const r of rootCandidates) {
      if (signedBy(tip, r)) return [...path, r];
      badSignature = `the signature of ${tip.subject} does not verify with root ${r.subject}`;
    }
    for (const c of roster.filter((c) => !path.includes(c) && mayHaveIssued(c, tip))) {
      if (!signedBy(tip, c)) {
        badSignature = `the signature of ${tip.subject} does not verify with ${c.subject}`;
        continue;
      }
      const found = await extend([...path, c]);
      if (found) return found;
    }
    return undefined;
  };
  const path = await extend([leaf]);
  if (!path) {
    if (badSignature) return reject('bad-signature', badSignature);
    return reject('untrusted-chain', `no path from ${leaf.issuer} to a root of ${id.trustDomain}`);
  }

  // The signing certificates: CAs allowed to sign, in their validity, within every path length constraint.
  for (let i = 1; i < path.length; i++) {
    const ca = path[i]!;
    const what = i === path.length - 1 ? `root ${ca.subject}` : `intermediate ${ca.subject}`;
    const cbc = ca.basicConstraints;
    if (!cbc?.ca) return reject('untrusted-chain', `${what} is not a CA (basicConstraints CA=false or absent)`);
    const cku = ca.keyUsage;
    if (cku !== undefined && !(cku & KeyUsageFlags.keyCertSign)) return reject('untrusted-chain', `${what} lacks keyUsage keyCertSign`);
    const t = timeProblem(ca, now, what);
    if (t) return t;
    // Intermediates below this CA, not counting the leaf (RFC 5280 §4.2.1.9).
    const below = i - 1;
    if (cbc.pathLength !== undefined && below > cbc.pathLength) {
      return reject('path-length-exceeded', `${what} allows ${cbc.pathLength} intermediate(s) below it, the path has ${below}`);
    }
  }
  return { ok: true, id, uri, leaf, path };
}

/**
 * validateSvid with a memory of accepted chains: a peer presents the same SVID for hours, and parsing and
 * verifying it costs more than the TLS handshake itself. A verdict is reused only for the same chain (bytes),
 * the same bundles (TrustBundleSet.version) and the same expected trust domain, and only while `now` is inside
 * every validity period of the path it was reached with; rejections are not kept. At most `max` entries (LRU).
 */
export class SvidVerifier {
  readonly #cache = new Map<string, { version: number; from: number; until: number; result: ValidationResult & { ok: true } }>();
  hits = 0;
  misses = 0;
  constructor(readonly bundles: TrustBundleSet, readonly max = 4096) {}

  async verify(chain: readonly Uint8Array[], o: ValidateOptions = {}): Promise<ValidationResult> {
    const now = o.now ?? Date.now();
    const h = createHash('sha256');
    for (const c of chain) h.update(c).update('|');
    const key = `${o.trustDomain ?? ''}|${h.digest('base64')}`;
    const hit = this.#cache.get(key);
    if (hit && hit.version === this.bundles.version && now >= hit.from && now <= hit.until) {
      this.hits++;
      this.#cache.delete(key);
      this.#cache.set(key, hit);
      return hit.result;
    }
    this.misses++;
    const r = await validateSvid(chain, this.bundles, { ...o, now });
    if (r.ok) {
      const from = Math.max(...r.path.map((c) => c.notBefore.getTime()));
      const until = Math.min(...r.path.map((c) => c.notAfter.getTime()));
      this.#cache.delete(key);
      this.#cache.set(key, { version: this.bundles.version, from, until, result: r });
      if (this.#cache.size > this.max) this.#cache.delete(this.#cache.keys().next().value!);
    } else {
      this.#cache.delete(key);
    }
    return r;
  }
}
