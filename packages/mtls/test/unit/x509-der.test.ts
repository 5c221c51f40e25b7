// The certificates the CA writes (src/x509.ts's DER writer) as OpenSSL reads them, and the DER reader against
// certificates OpenSSL made: every field the X509-SVID rules look at, and broken input named.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { ensureTool } from '@mesh/testkit';
import { BuiltinCa, CaError, Certificate, createIntermediate, createRoot, issueSvid, KeyUsageFlags, parseCertificatesPem, workloadSpiffeId, type SigningAuthority, type Svid } from '../../src/index.js';
import { opensslVerify, tempDir, TD } from '../support.js';

let tmp: { dir: string; remove(): void };
let root: SigningAuthority;
let mid: SigningAuthority;
let leaf: Svid;
let openssl: string;

const ossl = (args: string[], input?: string) => {
  const r = spawnSync(openssl, args, { encoding: 'utf8', input, timeout: 20_000 });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};
const text = (c: Certificate) => ossl(['x509', '-noout', '-text'], c.toString('pem'));
/** The value lines of one X509v3 extension in `openssl x509 -text`, with "critical" when marked so. */
function ext(t: string, name: string): string {
  const m = new RegExp(`X509v3 ${name}:( critical)? *\\n((?:\\s{16}.*\\n?)+)`).exec(t);
  if (!m) throw new Error(`no ${name} in:\n${t}`);
  return `${m[1] ? 'critical ' : ''}${m[2]!.trim()}`;
}

beforeAll(async () => {
  openssl = ensureTool('openssl');
  tmp = tempDir('der');
  root = await createRoot({ trustDomain: TD, pathLength: 1 });
  mid = await createIntermediate(root, { trustDomain: TD });
  leaf = await issueSvid(mid, workloadSpiffeId(TD, 'default', 'web'), { ttlMs: 600_000 });
});
afterAll(() => tmp?.remove());

describe('certificates the CA writes, read by OpenSSL', () => {
  it('openssl verify -x509_strict accepts the leaf through the intermediate to the root', () => {
    const r = opensslVerify([root.certificate], [mid.certificate], leaf.certificate);
    expect(r.output).toMatch(/: OK$/);
    expect(r.ok).toBe(true);
  });

  it('the root: v3, ecdsa-with-SHA256 P-256, self-issued, CA with its path length, keyCertSign and cRLSign, SKID = AKID, the trust domain URI', () => {
    const t = text(root.certificate);
    expect(t).toContain('Version: 3 (0x2)');
    expect(t).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
    expect(t).toContain('NIST CURVE: P-256');
    expect(t).toMatch(new RegExp(`Subject: O = mesh, OU = ${TD}, CN = mesh root [0-9a-f]{8}`));
    expect(t).toMatch(new RegExp(`Issuer: O = mesh, OU = ${TD}, CN = mesh root [0-9a-f]{8}`));
    expect(ext(t, 'Basic Constraints')).toBe('critical CA:TRUE, pathlen:1');
    expect(ext(t, 'Key Usage')).toBe('critical Certificate Sign, CRL Sign');
    expect(ext(t, 'Subject Alternative Name')).toBe(`URI:spiffe://${TD}`);
    const skid = ext(t, 'Subject Key Identifier');
    expect(ext(t, 'Authority Key Identifier')).toContain(skid);
  });

  it('the leaf: its SPIFFE ID as the one critical URI SAN, not a CA, digitalSignature, serverAuth and clientAuth, AKID = the intermediate SKID', () => {
    const t = text(leaf.certificate);
    const midSkid = ext(text(mid.certificate), 'Subject Key Identifier');
    expect(t).toContain(`Subject: O = mesh, OU = ${TD}\n`);
    expect(t).toContain(`Issuer: ${mid.certificate.subject.replace(/=/g, ' = ')}\n`);
    expect(ext(t, 'Basic Constraints')).toBe('critical CA:FALSE');
    expect(ext(t, 'Key Usage')).toBe('critical Digital Signature');
    expect(ext(t, 'Extended Key Usage')).toBe('TLS Web Server Authentication, TLS Web Client Authentication');
    expect(ext(t, 'Subject Alternative Name')).toBe(`critical URI:spiffe://${TD}/ns/default/sa/web`);
    expect(ext(t, 'Authority Key Identifier')).toContain(midSkid);
    // The dates OpenSSL reads are the ones the Svid reports.
    const x = new X509Certificate(leaf.certificate.raw);
    expect(new Date(x.validFrom).getTime()).toBe(leaf.notBefore.getTime());
    expect(new Date(x.validTo).getTime()).toBe(leaf.notAfter.getTime());
    expect(leaf.serial).toBe(x.serialNumber.toLowerCase());
  });

  it('a certificate valid past 2049 carries a GeneralizedTime that OpenSSL reads', async () => {
    const r = await createRoot({ trustDomain: TD, now: Date.UTC(2049, 11, 31), ttlMs: 2 * 24 * 3600_000 });
    expect(new Date(new X509Certificate(r.certificate.raw).validTo).toISOString()).toBe('2050-01-02T00:00:00.000Z');
    expect(new Certificate(r.certificate.raw).notAfter.toISOString()).toBe('2050-01-02T00:00:00.000Z');
  });
});

describe('the DER reader on certificates OpenSSL made', () => {
  it('reads names, dates, serial, basic constraints, key usage, SANs and key identifiers as OpenSSL does', () => {
    const d = tmp.dir;
    writeFileSync(
      join(d, 'ext.cnf'),
      '[v3]\nbasicConstraints=critical,CA:TRUE,pathlen:3\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature,decipherOnly\n' +
        'subjectAltName=URI:spiffe://other.org,DNS:ca.other.org\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n',
    );
    ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(d, 'o.key'), '-out', join(d, 'o.crt'), '-days', '3', '-subj', '/C=DE/O=Other Org/CN=other root', '-config', join(d, 'ext.cnf'), '-extensions', 'v3', '-set_serial', '0x0123456789abcdef']);
    const pem = readFileSync(join(d, 'o.crt'), 'utf8');
    const c = parseCertificatesPem(pem, 'o.crt')[0]!;
    const x = new X509Certificate(pem);
    expect(c.subject).toBe('C=DE, O=Other Org, CN=other root');
    expect(c.issuer).toBe(c.subject);
    expect(c.serialNumber).toBe('0123456789abcdef');
    expect(c.notBefore.getTime()).toBe(new Date(x.validFrom).getTime());
    expect(c.notAfter.getTime()).toBe(new Date(x.validTo).getTime());
    expect(c.basicConstraints).toEqual({ ca: true, pathLength: 3 });
    expect(c.keyUsage).toBe(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign | KeyUsageFlags.digitalSignature | KeyUsageFlags.decipherOnly);
    expect(c.uris).toEqual(['spiffe://other.org']);
    expect(c.dnsNames).toEqual(['ca.other.org']);
    const t = ossl(['x509', '-noout', '-text'], pem);
    const hex = (s: string) => s.replace(/^keyid:/, '').replace(/:/g, '').toLowerCase();
    expect(c.subjectKeyId).toBe(hex(ext(t, 'Subject Key Identifier')));
    expect(c.authorityKeyId).toBe(c.subjectKeyId);
    expect(c.publicKeyAlgorithm).toBe('ECDSA');
    expect(c.signedBy(c)).toBe(true);
    expect(c.signedBy(root.certificate)).toBe(false);
    expect(c.toString('pem')).toBe(pem.trim());
  });
});

describe('broken certificate files', () => {
  const truncated = () => {
    const b64 = root.certificate.toString('base64');
    return `-----BEGIN CERTIFICATE-----\n${b64.slice(0, b64.length - 40)}\n-----END CERTIFICATE-----\n`;
  };

  it('a truncated certificate in a PEM file: the file and the certificate named', () => {
    expect(() => parseCertificatesPem(truncated(), '/etc/x/ca.crt')).toThrow(/^\/etc\/x\/ca\.crt: certificate 1 does not parse \(.+\)$/);
    expect(() => new Certificate(Buffer.from([0x30, 0x03, 0x02, 0x01]))).toThrow();
  });

  it("the built-in CA's root.crt truncated, then root.key not a key: opening the CA names the file", async () => {
    const state = join(tmp.dir, 'state');
    await BuiltinCa.open({ stateDir: state, trustDomain: TD });
    writeFileSync(join(state, 'ca', 'root.crt'), truncated());
    await expect(BuiltinCa.open({ stateDir: state, trustDomain: TD })).rejects.toThrow(`${join(state, 'ca', 'root.crt')}: certificate 1 does not parse`);
    writeFileSync(join(state, 'ca', 'root.key'), 'not a key');
    writeFileSync(join(state, 'ca', 'root.crt'), root.certificate.toString('pem'));
    const open = BuiltinCa.open({ stateDir: state, trustDomain: TD });
    await expect(open).rejects.toThrow(CaError);
    await expect(open).rejects.toThrow(`${join(state, 'ca', 'root.key')}: not a PEM private key`);
  });
});
