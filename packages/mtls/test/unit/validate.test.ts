// One real certificate per rejection reason (X509-SVID spec §4/§5), and the valid shapes; where OpenSSL judges
// the same property, `openssl verify -x509_strict` must reach the same verdict.
import { beforeAll, describe, expect, it } from 'vitest';
import { KeyUsageFlags, createRoot, createIntermediate, issueSvid, workloadSpiffeId, TrustBundle, TrustBundleSet, validateSvid, REJECTION_REASONS, generateKeyPair, type RejectionReason, type SigningAuthority, type Certificate } from '../../src/index.js';
import { buildCert, opensslVerify, TD } from '../support.js';

const KU = KeyUsageFlags;
const ID = `spiffe://${TD}/ns/default/sa/web`;

interface Row {
  name: string;
  /** Builds the chain the peer would send (leaf first) and the bundles the validator trusts. */
  build(): Promise<{ chain: SigningAuthority[] | Certificate[]; bundles?: TrustBundleSet; trustDomain?: string }>;
  want: RejectionReason | 'ok';
  /** Whether OpenSSL checks this property too (then its verdict must match ours; else it accepts the chain). */
  openssl: boolean;
}

let root: SigningAuthority;
let bundles: TrustBundleSet;
beforeAll(async () => {
  root = await createRoot({ trustDomain: TD });
  bundles = new TrustBundleSet([new TrustBundle(TD, [root.certificate])]);
});
const leaf = (spec: Parameters<typeof buildCert>[0] = {}) => buildCert({ issuer: root, uris: [ID], ...spec });
const hour = 3600_000;

const rows: Row[] = [
  { name: 'an SVID we issued, signed by the root', want: 'ok', openssl: true, build: async () => ({ chain: [(await issueSvid(root, workloadSpiffeId(TD, 'default', 'web'))).certificate] }) },
  {
    name: 'an SVID we issued through an intermediate',
    want: 'ok',
    openssl: true,
    build: async () => {
      const mid = await createIntermediate(root, { trustDomain: TD });
      const s = await issueSvid(mid, workloadSpiffeId(TD, 'default', 'web'));
      return { chain: [s.certificate, ...s.intermediates] };
    },
  },
  { name: 'expired', want: 'expired', openssl: true, build: async () => ({ chain: [await leaf({ notBefore: Date.now() - 2 * hour, notAfter: Date.now() - hour })] }) },
  { name: 'not yet valid', want: 'not-yet-valid', openssl: true, build: async () => ({ chain: [await leaf({ notBefore: Date.now() + hour, notAfter: Date.now() + 2 * hour })] }) },
  {
    name: 'an intermediate that expired',
    want: 'expired',
    openssl: true,
    build: async () => {
      const mid = await buildCert({ issuer: root, ca: true, uris: [`spiffe://${TD}`], notBefore: Date.now() - 2 * hour, notAfter: Date.now() - 60_000 });
      return { chain: [await buildCert({ issuer: mid, uris: [ID], notBefore: Date.now() - 2 * hour }), mid] };
    },
  },
  { name: 'ID of a trust domain with no bundle', want: 'wrong-trust-domain', openssl: false, build: async () => ({ chain: [await leaf({ uris: ['spiffe://other.org/ns/default/sa/web'] })] }) },
  {
    name: 'ID of another trust domain than the one expected',
    want: 'wrong-trust-domain',
    openssl: false,
    build: async () => {
      const other = await createRoot({ trustDomain: 'other.org' });
      const set = new TrustBundleSet([new TrustBundle(TD, [root.certificate]), new TrustBundle('other.org', [other.certificate])]);
      return { chain: [await buildCert({ issuer: other, uris: ['spiffe://other.org/ns/default/sa/web'] })], bundles: set, trustDomain: TD };
    },
  },
  {
    name: 'signed by the root of another trust domain',
    want: 'untrusted-chain',
    openssl: false,
    build: async () => {
      const other = await createRoot({ trustDomain: 'other.org' });
      const set = new TrustBundleSet([new TrustBundle(TD, [root.certificate]), new TrustBundle('other.org', [other.certificate])]);
      return { chain: [await buildCert({ issuer: other, uris: [ID] })], bundles: set };
    },
  },
  { name: 'no URI SAN (a DNS name only)', want: 'no-uri-san', openssl: false, build: async () => ({ chain: [await leaf({ uris: [], dns: ['web.example.org'] })] }) },
  { name: 'two URI SANs', want: 'several-uri-sans', openssl: false, build: async () => ({ chain: [await leaf({ uris: [ID, `spiffe://${TD}/ns/default/sa/api`] })] }) },
  { name: 'a URI SAN that is not a SPIFFE ID', want: 'malformed-id', openssl: false, build: async () => ({ chain: [await leaf({ uris: [`https://${TD}/ns/default/sa/web`] })] }) },
  { name: 'a SPIFFE ID with a port', want: 'malformed-id', openssl: false, build: async () => ({ chain: [await leaf({ uris: [`spiffe://${TD}:8443/ns/default/sa/web`] })] }) },
  { name: 'a SPIFFE ID with a dot-dot segment', want: 'malformed-id', openssl: false, build: async () => ({ chain: [await leaf({ uris: [`spiffe://${TD}/ns/../sa/web`] })] }) },
  { name: 'a leaf naming only the trust domain', want: 'malformed-id', openssl: false, build: async () => ({ chain: [await leaf({ uris: [`spiffe://${TD}`] })] }) },
  { name: 'leaf with CA=true', want: 'leaf-is-ca', openssl: false, build: async () => ({ chain: [await leaf({ ca: true, keyUsage: KU.digitalSignature | KU.keyCertSign })] }) },
  { name: 'leaf with keyCertSign', want: 'leaf-can-sign', openssl: true, build: async () => ({ chain: [await leaf({ keyUsage: KU.digitalSignature | KU.keyCertSign })] }) },
  { name: 'leaf with cRLSign', want: 'leaf-can-sign', openssl: false, build: async () => ({ chain: [await leaf({ keyUsage: KU.digitalSignature | KU.cRLSign })] }) },
  { name: 'leaf without digitalSignature', want: 'no-digital-signature', openssl: false, build: async () => ({ chain: [await leaf({ keyUsage: KU.keyAgreement })] }) },
  { name: 'signed by a root not in the bundle', want: 'untrusted-chain', openssl: true, build: async () => ({ chain: [await buildCert({ issuer: await createRoot({ trustDomain: TD }), uris: [ID] })] }) },
  {
    name: 'intermediate missing from the chain',
    want: 'untrusted-chain',
    openssl: true,
    build: async () => ({ chain: [await buildCert({ issuer: await createIntermediate(root, { trustDomain: TD }), uris: [ID] })] }),
  },
  {
    name: 'an intermediate with CA=false',
    want: 'untrusted-chain',
    openssl: true,
    build: async () => {
      const mid = await buildCert({ issuer: root, ca: false, keyUsage: KU.digitalSignature, uris: [`spiffe://${TD}/not-a-ca`] });
      return { chain: [await buildCert({ issuer: mid, uris: [ID] }), mid] };
    },
  },
  {
    name: 'one intermediate under a root with pathLen 0',
    want: 'path-length-exceeded',
    openssl: true,
    build: async () => {
      const r0 = await createRoot({ trustDomain: TD, pathLength: 0 });
      const mid = await createIntermediate(r0, { trustDomain: TD });
      const s = await issueSvid(mid, workloadSpiffeId(TD, 'default', 'web'));
      return { chain: [s.certificate, mid.certificate], bundles: new TrustBundleSet([new TrustBundle(TD, [r0.certificate])]) };
    },
  },
  {
    name: 'signed by another key under the root\'s name and key ID',
    want: 'bad-signature',
    openssl: true,
    build: async () => ({ chain: [await leaf({ signWith: (await generateKeyPair()).privateKey })] }),
  },
];

describe('validateSvid: one real certificate per verdict', () => {
  it('covers every rejection reason', () => {
    expect(new Set(rows.map((r) => r.want))).toEqual(new Set(['ok', ...REJECTION_REASONS]));
  });

  for (const row of rows) {
    it(`${row.name} → ${row.want}`, async () => {
      const built = await row.build();
      const chain = built.chain.map((c) => ('certificate' in c ? c.certificate : c));
      const trusted = built.bundles ?? bundles;
      const r = await validateSvid(chain, trusted, built.trustDomain ? { trustDomain: built.trustDomain } : {});
      expect(r.ok ? 'ok' : `${r.reason}: ${r.detail}`).toMatch(new RegExp(`^${row.want}`));
      // Rows OpenSSL does not judge are the SPIFFE-only rules: OpenSSL accepts those certificates.
      const o = opensslVerify(trusted.allRoots(), chain.slice(1), chain[0]!);
      expect({ openssl: o.ok, output: o.output }).toMatchObject({ openssl: row.openssl ? row.want === 'ok' : true });
    }, 30_000);
  }
});
