// The one place that loads @peculiar/x509: it needs reflect-metadata loaded first and a WebCrypto provider.
import 'reflect-metadata';
import { webcrypto, createPrivateKey, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { runInThisContext } from 'node:vm';

export type CryptoKey = webcrypto.CryptoKey;
export type CryptoKeyPair = webcrypto.CryptoKeyPair;
type X509 = typeof import('@peculiar/x509');

/**
 * The package's single-file build (build/x509.js: it and its ASN.1 dependencies in one script that defines `x509`)
 * rather than its CommonJS entry, which loads ~210 modules: in the agent that is ~4 MiB less RSS for the same code.
 */
function loadX509(): X509 {
  const entry = createRequire(import.meta.url).resolve('@peculiar/x509');
  const file = entry.replace(/x509\.cjs\.js$/, 'x509.js');
  if (file === entry) throw new Error(`@peculiar/x509: unexpected entry ${entry} (expected build/x509.cjs.js beside build/x509.js)`);
  // In a function: the script's `var x509` stays out of the global scope.
  return runInThisContext(`(function () {${readFileSync(file, 'utf8')}\n;return x509;})()`, { filename: file }) as X509;
}
const x509 = loadX509();
// Its types, for `x509.X509Certificate` and the like in signatures.
declare namespace x509 {
  export type X509Certificate = import('@peculiar/x509').X509Certificate;
  export type Extension = import('@peculiar/x509').Extension;
  export type JsonGeneralNames = import('@peculiar/x509').JsonGeneralNames;
}

x509.cryptoProvider.set(webcrypto as never);

export { x509 };
export const subtle = webcrypto.subtle;

/** ECDSA P-256 with SHA-256: the only key and signature algorithm the mesh issues. */
export const EC_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export function generateKeyPair(): Promise<CryptoKeyPair> {
  return subtle.generateKey(EC_ALGORITHM, true, ['sign', 'verify']) as Promise<CryptoKeyPair>;
}

/** A private key as PKCS#8 PEM (what node:tls and OpenSSL read). */
export async function exportKeyPem(key: CryptoKey): Promise<string> {
  const der = await subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

/**
 * Reads an EC private key from PEM, PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`, cert-manager's default for
 * ECDSA). Throws with `what` in the message; never includes the key material.
 */
export async function importKeyPem(pem: string, what: string): Promise<CryptoKey> {
  let der: Buffer;
  try {
    der = createPrivateKey({ key: pem, format: 'pem' }).export({ format: 'der', type: 'pkcs8' });
  } catch (e) {
    throw new Error(`${what}: not a PEM private key (${(e as Error).message.split('\n')[0]})`);
  }
  try {
    return (await subtle.importKey('pkcs8', der, EC_ALGORITHM, true, ['sign'])) as CryptoKey;
  } catch {
    throw new Error(`${what}: not an ECDSA P-256 private key`);
  }
}

/** Every certificate in a PEM text, in order. Throws naming `what` when there is none or one does not parse. */
export function parseCertificatesPem(pem: string, what: string): x509.X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error(`${what}: no PEM CERTIFICATE block`);
  return blocks.map((b, i) => {
    try {
      return new x509.X509Certificate(b);
    } catch (e) {
      throw new Error(`${what}: certificate ${i + 1} does not parse (${(e as Error).message})`);
    }
  });
}

export function toPem(certs: readonly x509.X509Certificate[]): string {
  return certs.map((c) => c.toString('pem')).join('\n') + '\n';
}

/**
 * A random positive 128-bit serial number as hex. A leading byte with the high bit set gets a 00 in front (DER
 * INTEGERs are signed); a zero first byte would make the encoding non-minimal, so it is never zero.
 */
export function randomSerial(): string {
  const b = randomBytes(16);
  if (b[0] === 0) b[0] = 1;
  const hex = b.toString('hex');
  return b[0]! >= 0x80 ? `00${hex}` : hex;
}

/** X.509 times have whole seconds: the time a certificate will actually carry. */
export function wholeSeconds(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}
