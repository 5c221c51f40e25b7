// Certificates on node:crypto alone: OpenSSL (X509Certificate) checks that a certificate parses and verifies
// signatures; a small DER reader gives the fields the X509-SVID rules look at; a DER writer makes the
// certificates the CA issues, signed with crypto.sign (ECDSA P-256, SHA-256). A certificate library with its
// ASN.1 schemas cost the agent ~4 MiB of RSS (bench/README.md, bench:mesh memory).
import { createHash, createPublicKey, KeyObject, randomBytes, sign, webcrypto, X509Certificate, createPrivateKey } from 'node:crypto';

export type CryptoKey = webcrypto.CryptoKey;
export type CryptoKeyPair = webcrypto.CryptoKeyPair;
export const subtle = webcrypto.subtle;

/** ECDSA P-256 with SHA-256: the only key and signature algorithm the mesh issues. */
export const EC_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** keyUsage bits (RFC 5280 §4.2.1.3): bit n of the extension is 1 << n here. */
export const KeyUsageFlags = {
  digitalSignature: 1,
  nonRepudiation: 2,
  keyEncipherment: 4,
  dataEncipherment: 8,
  keyAgreement: 16,
  keyCertSign: 32,
  cRLSign: 64,
  encipherOnly: 128,
  decipherOnly: 256,
} as const;

export const ExtendedKeyUsage = { serverAuth: '1.3.6.1.5.5.7.3.1', clientAuth: '1.3.6.1.5.5.7.3.2' } as const;

const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  subjectKeyId: '2.5.29.14',
  authorityKeyId: '2.5.29.35',
} as const;

/** Name attributes by their short names, as written and read in subject strings ("O=mesh, OU=…, CN=…"). */
const NAME_ATTRIBUTES: Record<string, string> = {
  CN: '2.5.4.3',
  C: '2.5.4.6',
  L: '2.5.4.7',
  ST: '2.5.4.8',
  O: '2.5.4.10',
  OU: '2.5.4.11',
  DC: '0.9.2342.19200300.100.1.25',
  E: '1.2.840.113549.1.9.1',
};
const NAME_BY_OID = Object.fromEntries(Object.entries(NAME_ATTRIBUTES).map(([k, v]) => [v, k]));

// --- DER writing -------------------------------------------------------------------------------------------

function tlv(tag: number, ...parts: Uint8Array[]): Buffer {
  const body = Buffer.concat(parts);
  const n = body.length;
  const len: number[] = [];
  if (n < 0x80) len.push(n);
  else {
    for (let v = n; v > 0; v = Math.floor(v / 256)) len.unshift(v & 0xff);
    len.unshift(0x80 | len.length);
  }
  return Buffer.concat([Buffer.from([tag, ...len]), body]);
}
const seq = (...parts: Uint8Array[]) => tlv(0x30, ...parts);

function oidDer(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number) as [number, number, ...number[]];
  const out = [40 * a + b];
  for (const v of rest) {
    const groups = [v & 0x7f];
    for (let x = Math.floor(v / 128); x > 0; x = Math.floor(x / 128)) groups.unshift(0x80 | (x & 0x7f));
    out.push(...groups);
  }
  return tlv(0x06, Buffer.from(out));
}

/** A non-negative INTEGER from its big-endian magnitude (a 00 in front when the high bit is set). */
function uintDer(magnitude: Buffer): Buffer {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const m = magnitude.subarray(i);
  return tlv(0x02, m[0]! >= 0x80 ? Buffer.concat([Buffer.from([0]), m]) : m);
}
function smallUintDer(n: number): Buffer {
  const b: number[] = [];
  do {
    b.unshift(n & 0xff);
    n = Math.floor(n / 256);
  } while (n > 0);
  return uintDer(Buffer.from(b));
}

function timeDer(d: Date): Buffer {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '') + 'Z';
  const year = d.getUTCFullYear();
  // RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
  return year >= 1950 && year < 2050 ? tlv(0x17, Buffer.from(digits.slice(2), 'latin1')) : tlv(0x18, Buffer.from(digits, 'latin1'));
}

/** A Name from "O=mesh, OU=example.org, CN=…" (one attribute per RDN; the attribute types of NAME_ATTRIBUTES). */
export function nameDer(text: string): Buffer {
  const rdns = text.split(/,\s*/).filter((p) => p !== '').map((part) => {
    const eq = part.indexOf('=');
    const type = part.slice(0, eq).trim();
    const oid = NAME_ATTRIBUTES[type.toUpperCase()];
    if (eq <= 0 || oid === undefined) throw new RangeError(`name ${JSON.stringify(text)}: ${JSON.stringify(part)} is not TYPE=value with TYPE one of ${Object.keys(NAME_ATTRIBUTES).join(', ')}`);
    const value = Buffer.from(part.slice(eq + 1), 'utf8');
    // Country and e-mail have fixed string types (RFC 5280 appendix A); the rest are UTF8String.
    const tag = oid === NAME_ATTRIBUTES.C ? 0x13 : oid === NAME_ATTRIBUTES.E ? 0x16 : 0x0c;
    return tlv(0x31, seq(oidDer(oid), tlv(tag, value)));
  });
  return seq(...rdns);
}

/** One extension, DER-encoded; made by the functions of `extension`. */
export type ExtensionDer = Buffer & { readonly __extension: true };
function extensionDer(oid: string, critical: boolean, value: Buffer): ExtensionDer {
  return seq(oidDer(oid), ...(critical ? [Buffer.from([0x01, 0x01, 0xff])] : []), tlv(0x04, value)) as ExtensionDer;
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
export function keyIdentifier(spki: Buffer): Buffer {
  const outer = children(spki, readTlv(spki, 0, spki.length));
  const bits = outer[1];
  if (!bits || bits.tag !== 0x03) throw new RangeError('not a SubjectPublicKeyInfo');
  return createHash('sha1').update(spki.subarray(bits.start + 1, bits.end)).digest();
}

export const extension = {
  basicConstraints(ca: boolean, pathLength: number | undefined, critical = true): ExtensionDer {
    const parts = ca ? [Buffer.from([0x01, 0x01, 0xff]), ...(pathLength !== undefined ? [smallUintDer(pathLength)] : [])] : [];
    return extensionDer(OID.basicConstraints, critical, seq(...parts));
  },
  keyUsage(flags: number, critical = true): ExtensionDer {
    // Named bits, the trailing zero bits left out (X.690 §11.2.2).
    let bits = 0;
    for (let b = 0; b < 9; b++) if (flags & (1 << b)) bits = b + 1;
    const bytes = Buffer.alloc(Math.max(1, Math.ceil(bits / 8)));
    for (let b = 0; b < bits; b++) if (flags & (1 << b)) bytes[b >> 3]! |= 0x80 >> (b & 7);
    const unused = bits === 0 ? 0 : bytes.length * 8 - bits;
    return extensionDer(OID.keyUsage, critical, tlv(0x03, Buffer.from([unused]), bits === 0 ? Buffer.alloc(0) : bytes));
  },
  extendedKeyUsage(oids: readonly string[], critical = false): ExtensionDer {
    return extensionDer(OID.extKeyUsage, critical, seq(...oids.map(oidDer)));
  },
  subjectAltName(names: { uris?: readonly string[]; dns?: readonly string[] }, critical: boolean): ExtensionDer {
    const general = [...(names.uris ?? []).map((u) => tlv(0x86, Buffer.from(u, 'latin1'))), ...(names.dns ?? []).map((d) => tlv(0x82, Buffer.from(d, 'latin1')))];
    return extensionDer(OID.subjectAltName, critical, seq(...general));
  },
  subjectKeyIdentifier(keyId: Buffer): ExtensionDer {
    return extensionDer(OID.subjectKeyId, false, tlv(0x04, keyId));
  },
  authorityKeyIdentifier(keyId: Buffer): ExtensionDer {
    return extensionDer(OID.authorityKeyId, false, seq(tlv(0x80, keyId)));
  },
};

export interface CertificateTemplate {
  /** Hex of the serial's INTEGER content (randomSerial()). */
  serialNumber: string;
  /** The subject as text, or a Name's DER. */
  subject: string | Buffer;
  /** The issuer's subject Name as DER (its `subjectDer`), or the same text as `subject` for a self-signed one. */
  issuer: string | Buffer;
  notBefore: Date;
  notAfter: Date;
  publicKey: CryptoKey | KeyObject;
  signingKey: CryptoKey | KeyObject;
  extensions: readonly ExtensionDer[];
}

const keyObject = (k: CryptoKey | KeyObject): KeyObject => (k instanceof KeyObject ? k : KeyObject.from(k));
const ECDSA_SHA256 = seq(oidDer(OID.ecdsaWithSha256));

/** Builds and signs a version 3 certificate (ECDSA with SHA-256). Nothing is checked: tests make broken ones. */
export function createCertificate(t: CertificateTemplate): Certificate {
  const spki = keyObject(t.publicKey).export({ type: 'spki', format: 'der' });
  const name = (n: string | Buffer) => (typeof n === 'string' ? nameDer(n) : n);
  const tbs = seq(
    tlv(0xa0, smallUintDer(2)),
    uintDer(Buffer.from(t.serialNumber, 'hex')),
    ECDSA_SHA256,
    name(t.issuer),
    seq(timeDer(t.notBefore), timeDer(t.notAfter)),
    name(t.subject),
    spki,
    ...(t.extensions.length ? [tlv(0xa3, seq(...t.extensions))] : []),
  );
  const signature = sign('sha256', tbs, { key: keyObject(t.signingKey), dsaEncoding: 'der' });
  return new Certificate(seq(tbs, ECDSA_SHA256, tlv(0x03, Buffer.from([0]), signature)));
}

// --- DER reading -------------------------------------------------------------------------------------------

interface Tlv {
  tag: number;
  /** Where the content starts and ends. */
  start: number;
  end: number;
  /** Where the whole element starts. */
  at: number;
}

class DerError extends Error {}

function readTlv(buf: Buffer, pos: number, limit: number): Tlv {
  if (pos + 2 > limit) throw new DerError(`truncated DER at byte ${pos}`);
  const tag = buf[pos]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError(`unsupported DER tag at byte ${pos}`);
  let len = buf[pos + 1]!;
  let start = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new DerError(`bad DER length at byte ${pos}`);
    if (start + n > limit) throw new DerError(`truncated DER at byte ${pos}`);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[start + i]!;
    start += n;
  }
  if (start + len > limit) throw new DerError(`DER element at byte ${pos} runs past its end`);
  return { tag, start, end: start + len, at: pos };
}

function children(buf: Buffer, t: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let p = t.start; p < t.end; ) {
    const c = readTlv(buf, p, t.end);
    out.push(c);
    p = c.end;
  }
  return out;
}

function oidText(buf: Buffer, t: Tlv): string {
  const b = buf.subarray(t.start, t.end);
  if (b.length === 0) throw new DerError('empty OID');
  const parts = [Math.min(2, Math.floor(b[0]! / 40)), b[0]! - 40 * Math.min(2, Math.floor(b[0]! / 40))];
  let v = 0;
  for (let i = 1; i < b.length; i++) {
    v = v * 128 + (b[i]! & 0x7f);
    if (!(b[i]! & 0x80)) {
      parts.push(v);
      v = 0;
    }
  }
  return parts.join('.');
}

function stringValue(buf: Buffer, t: Tlv): string {
  const b = buf.subarray(t.start, t.end);
  if (t.tag === 0x1e) return Buffer.from(b).swap16().toString('utf16le'); // BMPString
  return b.toString(t.tag === 0x0c ? 'utf8' : 'latin1');
}

function nameText(buf: Buffer, t: Tlv): string {
  return children(buf, t)
    .map((rdn) =>
      children(buf, rdn)
        .map((atv) => {
          const [type, value] = children(buf, atv) as [Tlv, Tlv];
          const oid = oidText(buf, type);
          return `${NAME_BY_OID[oid] ?? oid}=${stringValue(buf, value)}`;
        })
        .join('+'),
    )
    .join(', ');
}

function timeValue(buf: Buffer, t: Tlv): Date {
  const s = buf.toString('latin1', t.start, t.end);
  const m = t.tag === 0x17 ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s) : t.tag === 0x18 ? /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s) : null;
  if (!m) throw new DerError(`bad certificate time ${JSON.stringify(s)}`);
  let year = Number(m[1]);
  if (t.tag === 0x17) year += year >= 50 ? 1900 : 2000;
  return new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

export interface BasicConstraints {
  ca: boolean;
  pathLength?: number;
}

const PUBLIC_KEY_ALGORITHMS: Record<string, string> = { ec: 'ECDSA', rsa: 'RSASSA-PKCS1-v1_5', 'rsa-pss': 'RSA-PSS', ed25519: 'Ed25519' };

function derOf(input: Uint8Array | ArrayBuffer | string): Buffer {
  if (typeof input !== 'string') return Buffer.from(input instanceof ArrayBuffer ? new Uint8Array(input) : input);
  const pem = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/.exec(input);
  return Buffer.from((pem ? pem[1]! : input).replace(/\s+/g, ''), 'base64');
}

/** A parsed X.509 certificate: the fields the mesh reads, its DER, and OpenSSL's view of it for signatures. */
export class Certificate {
  readonly raw: Buffer;
  readonly serialNumber: string;
  readonly subject: string;
  readonly issuer: string;
  /** The subject Name's DER: what a certificate this one signs carries as its issuer. */
  readonly subjectDer: Buffer;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** SubjectPublicKeyInfo, DER. */
  readonly spki: Buffer;
  readonly basicConstraints: BasicConstraints | undefined;
  /** keyUsage flags (KeyUsageFlags), undefined without the extension. */
  readonly keyUsage: number | undefined;
  readonly extendedKeyUsage: readonly string[] | undefined;
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
  /** Key identifiers as hex. */
  readonly subjectKeyId: string | undefined;
  readonly authorityKeyId: string | undefined;
  readonly #x509: X509Certificate;
  #publicKey: KeyObject | undefined;

  /** DER bytes, a PEM CERTIFICATE block or base64 DER. Throws when it does not parse. */
  constructor(input: Uint8Array | ArrayBuffer | string) {
    const der = derOf(input);
    this.raw = der;
    // OpenSSL first: it says what is wrong with a malformed certificate; the reader below then only meets good DER.
    this.#x509 = new X509Certificate(der);
    try {
      const cert = readTlv(der, 0, der.length);
      if (cert.tag !== 0x30 || cert.end !== der.length) throw new DerError('not one DER SEQUENCE');
      const tbsFields = children(der, children(der, cert)[0]!);
      let i = tbsFields[0]?.tag === 0xa0 ? 1 : 0;
      const serial = tbsFields[i++]!;
      i++; // signature algorithm
      const issuer = tbsFields[i++]!;
      const validity = children(der, tbsFields[i++]!) as [Tlv, Tlv];
      const subject = tbsFields[i++]!;
      const spki = tbsFields[i++]!;
      // As OpenSSL prints it: without the 00 byte that keeps a DER INTEGER positive.
      const serialStart = serial.end - serial.start > 1 && der[serial.start] === 0 ? serial.start + 1 : serial.start;
      this.serialNumber = der.toString('hex', serialStart, serial.end);
      this.issuer = nameText(der, issuer);
      this.subject = nameText(der, subject);
      this.subjectDer = der.subarray(subject.at, subject.end);
      this.notBefore = timeValue(der, validity[0]);
      this.notAfter = timeValue(der, validity[1]);
      this.spki = der.subarray(spki.at, spki.end);
      const exts = tbsFields.slice(i).find((t) => t.tag === 0xa3);
      let bc: BasicConstraints | undefined;
      let ku: number | undefined;
      let eku: string[] | undefined;
      const uris: string[] = [];
      const dns: string[] = [];
      let skid: string | undefined;
      let akid: string | undefined;
      for (const e of exts ? children(der, children(der, exts)[0]!) : []) {
        const parts = children(der, e);
        const oid = oidText(der, parts[0]!);
        const octets = parts[parts.length - 1]!;
        const value = readTlv(der, octets.start, octets.end);
        switch (oid) {
          case OID.basicConstraints: {
            const f = children(der, value);
            const ca = f[0]?.tag === 0x01 && der[f[0].start] !== 0;
            const len = f.find((x) => x.tag === 0x02);
            bc = { ca, ...(len ? { pathLength: der.readUIntBE(len.start, Math.min(6, len.end - len.start)) } : {}) };
            break;
          }
          case OID.keyUsage: {
            ku = 0;
            for (let b = 0; b < (value.end - value.start - 1) * 8 && b < 16; b++) if (der[value.start + 1 + (b >> 3)]! & (0x80 >> (b & 7))) ku |= 1 << b;
            break;
          }
          case OID.extKeyUsage:
            eku = children(der, value).map((o) => oidText(der, o));
            break;
          case OID.subjectAltName:
            for (const n of children(der, value)) {
              if (n.tag === 0x86) uris.push(der.toString('latin1', n.start, n.end));
              else if (n.tag === 0x82) dns.push(der.toString('latin1', n.start, n.end));
            }
            break;
          case OID.subjectKeyId:
            skid = der.toString('hex', value.start, value.end);
            break;
          case OID.authorityKeyId: {
            const k = children(der, value).find((x) => x.tag === 0x80);
            if (k) akid = der.toString('hex', k.start, k.end);
            break;
          }
        }
      }
      this.basicConstraints = bc;
      this.keyUsage = ku;
      this.extendedKeyUsage = eku;
      this.uris = uris;
      this.dnsNames = dns;
      this.subjectKeyId = skid;
      this.authorityKeyId = akid;
    } catch (e) {
      if (e instanceof DerError || e instanceof TypeError || e instanceof RangeError) throw new Error(`malformed certificate: ${e.message}`);
      throw e;
    }
  }

  /** The DER as an ArrayBuffer of its own. */
  get rawData(): ArrayBuffer {
    return new Uint8Array(this.raw).buffer;
  }

  get publicKey(): KeyObject {
    return (this.#publicKey ??= createPublicKey({ key: this.spki, format: 'der', type: 'spki' }));
  }

  /** 'ECDSA', 'RSASSA-PKCS1-v1_5', … (WebCrypto's names, as JWKs' kty are matched against). */
  get publicKeyAlgorithm(): string {
    const t = this.publicKey.asymmetricKeyType ?? 'unknown';
    return PUBLIC_KEY_ALGORITHMS[t] ?? t;
  }

  /** Does `issuer`'s key verify this certificate's signature? */
  signedBy(issuer: Certificate): boolean {
    try {
      return this.#x509.verify(issuer.publicKey);
    } catch {
      return false;
    }
  }

  toString(format: 'pem' | 'base64' = 'pem'): string {
    const b64 = this.raw.toString('base64');
    if (format === 'base64') return b64;
    return `-----BEGIN CERTIFICATE-----\n${b64.replace(/.{64}/g, '$&\n').replace(/\n$/, '')}\n-----END CERTIFICATE-----`;
  }
}

export function generateKeyPair(): Promise<CryptoKeyPair> {
  return subtle.generateKey(EC_ALGORITHM, true, ['sign', 'verify']) as Promise<CryptoKeyPair>;
}

/** A private key as PKCS#8 PEM (what node:tls and OpenSSL read). */
export async function exportKeyPem(key: CryptoKey): Promise<string> {
  return KeyObject.from(key).export({ type: 'pkcs8', format: 'pem' }) as string;
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
export function parseCertificatesPem(pem: string, what: string): Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error(`${what}: no PEM CERTIFICATE block`);
  return blocks.map((b, i) => {
    try {
      return new Certificate(b);
    } catch (e) {
      throw new Error(`${what}: certificate ${i + 1} does not parse (${(e as Error).message})`);
    }
  });
}

export function toPem(certs: readonly Certificate[]): string {
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
