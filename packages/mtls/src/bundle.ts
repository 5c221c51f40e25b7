// Trust bundles: the roots a trust domain's SVIDs chain to. Read from PEM files or SPIFFE bundle documents
// (spiffe/standards SPIFFE_Trust_Domain_and_Bundle.md §4: a JWKS whose `x509-svid` keys carry a root in `x5c`).
import { Certificate, parseCertificatesPem, toPem } from './x509.js';
import { checkTrustDomain } from './spiffe-id.js';

/** A bundle document or file that does not parse; the message names the field. */
export class BundleError extends Error {
  constructor(readonly source: string, readonly field: string, problem: string) {
    super(`${source}: ${field}: ${problem}`);
    this.name = 'BundleError';
  }
}

/** The roots of one trust domain. Several roots at once during a rotation. */
export class TrustBundle {
  readonly roots: readonly Certificate[];
  constructor(readonly trustDomain: string, roots: readonly Certificate[], readonly sequence?: number, readonly refreshHintSeconds?: number) {
    checkTrustDomain(trustDomain);
    // The same root twice (one file read twice) counts once.
    const seen = new Set<string>();
    this.roots = roots.filter((r) => {
      const k = r.toString('base64');
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
  }

  pem(): string {
    return this.roots.length ? toPem(this.roots) : '';
  }

  with(roots: readonly Certificate[]): TrustBundle {
    return new TrustBundle(this.trustDomain, [...this.roots, ...roots], this.sequence, this.refreshHintSeconds);
  }

  without(root: Certificate): TrustBundle {
    const k = root.toString('base64');
    return new TrustBundle(this.trustDomain, this.roots.filter((r) => r.toString('base64') !== k), this.sequence, this.refreshHintSeconds);
  }

  /** The SPIFFE bundle document for this trust domain. */
  toSpiffeDocument(): SpiffeBundleDocument {
    return {
      keys: this.roots.map((r) => ({ use: 'x509-svid', kty: 'EC', crv: 'P-256', x5c: [r.toString('base64')] })),
      ...(this.sequence !== undefined ? { spiffe_sequence: this.sequence } : {}),
      ...(this.refreshHintSeconds !== undefined ? { spiffe_refresh_hint: this.refreshHintSeconds } : {}),
    };
  }
}

/** Bundles kept per trust domain: our own and those of federated trust domains. */
export class TrustBundleSet {
  readonly #bundles = new Map<string, TrustBundle>();
  #version = 0;

  constructor(bundles: Iterable<TrustBundle> = []) {
    for (const b of bundles) this.set(b);
  }

  /** Changes with every set() and delete(): what a cached verdict was reached against. */
  get version(): number {
    return this.#version;
  }

  set(bundle: TrustBundle): void {
    this.#version++;
    this.#bundles.set(bundle.trustDomain, bundle);
  }

  get(trustDomain: string): TrustBundle | undefined {
    return this.#bundles.get(trustDomain);
  }

  delete(trustDomain: string): boolean {
    this.#version++;
    return this.#bundles.delete(trustDomain);
  }

  get trustDomains(): string[] {
    return [...this.#bundles.keys()].sort();
  }

  /** Every root of every trust domain (what node:tls's `ca` gets; the SPIFFE checks then pick by trust domain). */
  allRoots(): Certificate[] {
    return [...this.#bundles.values()].flatMap((b) => b.roots);
  }

  rootCount(): number {
    let n = 0;
    for (const b of this.#bundles.values()) n += b.roots.length;
    return n;
  }
}

export function bundleFromPem(trustDomain: string, pem: string, source = 'PEM bundle'): TrustBundle {
  let roots: Certificate[];
  try {
    roots = parseCertificatesPem(pem, source);
  } catch (e) {
    throw new BundleError(source, 'certificates', (e as Error).message.replace(`${source}: `, ''));
  }
  return new TrustBundle(trustDomain, roots);
}

export interface SpiffeBundleKey {
  use: string;
  kty: string;
  crv?: string;
  x5c?: string[];
  [k: string]: unknown;
}
export interface SpiffeBundleDocument {
  keys: SpiffeBundleKey[];
  spiffe_sequence?: number;
  spiffe_refresh_hint?: number;
}

const KEY_ALGORITHMS: Record<string, string> = { EC: 'ECDSA', RSA: 'RSASSA-PKCS1-v1_5' };

/**
 * Parses a SPIFFE bundle document for `trustDomain`. Only `x509-svid` keys become roots; keys of other uses
 * (`jwt-svid`) are checked for shape and skipped. Throws BundleError naming the field.
 */
export function bundleFromSpiffeDocument(trustDomain: string, text: string, source = 'SPIFFE bundle'): TrustBundle {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new BundleError(source, '(document)', `not JSON (${(e as Error).message})`);
  }
  const fail = (field: string, problem: string): never => {
    throw new BundleError(source, field, problem);
  };
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) fail('(document)', 'expected a JSON object');
  const d = doc as Record<string, unknown>;
  if (!Array.isArray(d.keys)) fail('keys', 'expected an array of JWKs');
  for (const f of ['spiffe_sequence', 'spiffe_refresh_hint'] as const) {
    if (d[f] !== undefined && !(Number.isInteger(d[f]) && (d[f] as number) >= 0)) fail(f, 'expected a non-negative integer');
  }
  const roots: Certificate[] = [];
  (d.keys as unknown[]).forEach((k, i) => {
    const at = `keys[${i}]`;
    if (typeof k !== 'object' || k === null || Array.isArray(k)) fail(at, 'expected a JWK object');
    const key = k as Record<string, unknown>;
    if (typeof key.use !== 'string') fail(`${at}.use`, 'required ("x509-svid" or "jwt-svid")');
    if (typeof key.kty !== 'string') fail(`${at}.kty`, 'required');
    if (key.use !== 'x509-svid') return;
    if (!Array.isArray(key.x5c) || key.x5c.length !== 1) fail(`${at}.x5c`, 'an x509-svid key needs exactly one certificate');
    const b64 = (key.x5c as unknown[])[0];
    if (typeof b64 !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) fail(`${at}.x5c[0]`, 'expected base64 DER');
    let cert: Certificate;
    try {
      cert = new Certificate(Buffer.from(b64 as string, 'base64'));
    } catch (e) {
      return fail(`${at}.x5c[0]`, `not a DER certificate (${(e as Error).message})`);
    }
    const alg = KEY_ALGORITHMS[key.kty as string];
    if (alg === undefined) fail(`${at}.kty`, `unsupported key type ${JSON.stringify(key.kty)} (EC or RSA)`);
    if (cert.publicKeyAlgorithm !== alg) fail(`${at}.kty`, `${key.kty} does not match the certificate's ${cert.publicKeyAlgorithm} key`);
    roots.push(cert);
  });
  return new TrustBundle(trustDomain, roots, d.spiffe_sequence as number | undefined, d.spiffe_refresh_hint as number | undefined);
}
