// SPIFFE bundle documents and PEM bundles: read, several roots, per trust domain; malformed ones name the field.
import { describe, expect, it } from 'vitest';
import { createRoot, bundleFromSpiffeDocument, bundleFromPem, BundleError, TrustBundle, TrustBundleSet, toPem } from '../../src/index.js';
import { TD } from '../support.js';

describe('trust bundles', () => {
  it('reads a SPIFFE bundle document with two roots and a jwt-svid key, and writes it back', async () => {
    const [a, b] = [await createRoot({ trustDomain: TD }), await createRoot({ trustDomain: TD })];
    const doc = {
      spiffe_sequence: 7,
      spiffe_refresh_hint: 300,
      keys: [
        { use: 'x509-svid', kty: 'EC', crv: 'P-256', x5c: [a.certificate.toString('base64')] },
        { use: 'jwt-svid', kty: 'EC', kid: 'k1', crv: 'P-256', x: 'AA', y: 'AA' },
        { use: 'x509-svid', kty: 'EC', crv: 'P-256', x5c: [b.certificate.toString('base64')] },
      ],
    };
    const bundle = bundleFromSpiffeDocument(TD, JSON.stringify(doc));
    expect(bundle.roots.map((r) => r.serialNumber)).toEqual([a.certificate.serialNumber, b.certificate.serialNumber]);
    expect(bundle.sequence).toBe(7);
    expect(bundle.refreshHintSeconds).toBe(300);
    const again = bundleFromSpiffeDocument(TD, JSON.stringify(bundle.toSpiffeDocument()));
    expect(again.roots.map((r) => r.serialNumber)).toEqual(bundle.roots.map((r) => r.serialNumber));
  });

  it('reads PEM bundles and keeps them per trust domain (federation)', async () => {
    const [a, b, c] = await Promise.all([createRoot({ trustDomain: TD }), createRoot({ trustDomain: TD }), createRoot({ trustDomain: 'partner.example' })]);
    const set = new TrustBundleSet([bundleFromPem(TD, toPem([a.certificate, b.certificate, a.certificate])), bundleFromPem('partner.example', toPem([c.certificate]))]);
    expect(set.trustDomains).toEqual([TD, 'partner.example']);
    expect(set.get(TD)!.roots).toHaveLength(2); // the repeated root counts once
    expect(set.rootCount()).toBe(3);
    expect(set.get(TD)!.without(a.certificate).roots.map((r) => r.serialNumber)).toEqual([b.certificate.serialNumber]);
    expect(() => bundleFromPem(TD, 'hello', 'roots.pem')).toThrow('roots.pem: certificates: no PEM CERTIFICATE block');
    expect(() => new TrustBundle('Bad.Domain', [])).toThrow(/lowercase/);
  });

  it.each([
    ['not JSON', '{', '(document): not JSON'],
    ['an array', '[]', '(document): expected a JSON object'],
    ['no keys', '{}', 'keys: expected an array of JWKs'],
    ['keys not objects', '{"keys":[1]}', 'keys[0]: expected a JWK object'],
    ['a key without use', '{"keys":[{"kty":"EC"}]}', 'keys[0].use: required'],
    ['a key without kty', '{"keys":[{"use":"x509-svid"}]}', 'keys[0].kty: required'],
    ['an x509-svid key without x5c', '{"keys":[{"use":"x509-svid","kty":"EC"}]}', 'keys[0].x5c: an x509-svid key needs exactly one certificate'],
    ['two certificates in x5c', '{"keys":[{"use":"x509-svid","kty":"EC","x5c":["AA","AA"]}]}', 'keys[0].x5c: an x509-svid key needs exactly one certificate'],
    ['x5c not base64', '{"keys":[{"use":"x509-svid","kty":"EC","x5c":["!!"]}]}', 'keys[0].x5c[0]: expected base64 DER'],
    ['x5c not a certificate', '{"keys":[{"use":"x509-svid","kty":"EC","x5c":["AAAA"]}]}', 'keys[0].x5c[0]: not a DER certificate'],
    ['a negative sequence', '{"keys":[],"spiffe_sequence":-1}', 'spiffe_sequence: expected a non-negative integer'],
  ])('rejects a document with %s, naming the field', (_name, text, message) => {
    expect(() => bundleFromSpiffeDocument(TD, text, 'bundle.json')).toThrow(BundleError);
    expect(() => bundleFromSpiffeDocument(TD, text, 'bundle.json')).toThrow(`bundle.json: ${message}`);
  });

  it('rejects a kty that does not match the certificate', async () => {
    const a = await createRoot({ trustDomain: TD });
    const text = JSON.stringify({ keys: [{ use: 'x509-svid', kty: 'RSA', x5c: [a.certificate.toString('base64')] }] });
    expect(() => bundleFromSpiffeDocument(TD, text, 'b.json')).toThrow("b.json: keys[0].kty: RSA does not match the certificate's ECDSA key");
  });
});
