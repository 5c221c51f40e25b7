// The external issuer: an intermediate and key from files in cert-manager's Secret layout, re-read when they change.
import { afterEach, describe, expect, it } from 'vitest';
import { writeFileSync, renameSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createRoot, createIntermediate, ExternalCa, CaError, exportKeyPem, toPem, validateSvid, TrustBundleSet, workloadSpiffeId, type SigningAuthority } from '../../src/index.js';
import { buildCert, tempDir, TD } from '../support.js';
import { createPrivateKey } from 'node:crypto';

const cleanups: (() => void)[] = [];
afterEach(() => cleanups.splice(0).forEach((f) => f()));

/** Writes a Secret the way cert-manager mounts it: tls.crt (issuer + chain), tls.key, ca.crt. */
async function writeSecret(dir: string, issuer: SigningAuthority, roots: SigningAuthority[], keyFormat: 'pkcs8' | 'sec1' = 'pkcs8'): Promise<void> {
  mkdirSync(dir, { recursive: true });
  let key = await exportKeyPem(issuer.privateKey);
  if (keyFormat === 'sec1') key = createPrivateKey(key).export({ type: 'sec1', format: 'pem' }).toString();
  // Write then rename, as the kubelet's atomic writer does.
  for (const [name, data] of [['tls.crt', toPem([issuer.certificate, ...issuer.chain])], ['tls.key', key], ['ca.crt', toPem(roots.map((r) => r.certificate))]] as const) {
    writeFileSync(join(dir, `.${name}.tmp`), data, { mode: 0o600 });
    renameSync(join(dir, `.${name}.tmp`), join(dir, name));
  }
}

function scratch(): string {
  const t = tempDir('extca');
  cleanups.push(t.remove);
  return t.dir;
}

describe('ExternalCa (cert-manager layout)', () => {
  it('issues SVIDs from the intermediate in tls.crt (SEC1 key, as cert-manager writes ECDSA keys), valid against ca.crt', async () => {
    const dir = scratch();
    const root = await createRoot({ trustDomain: TD });
    const mid = await createIntermediate(root, { trustDomain: TD });
    await writeSecret(dir, mid, [root], 'sec1');
    const ca = new ExternalCa({ dir, trustDomain: TD });
    const svid = await ca.issue(workloadSpiffeId(TD, 'default', 'web'), { ttlMs: 60_000 });
    expect(svid.issuer).toBe(mid.certificate.subject);
    expect(svid.intermediates.map((c) => c.serialNumber)).toEqual([mid.certificate.serialNumber]);
    const r = await validateSvid([svid.certificate, ...svid.intermediates], new TrustBundleSet([await ca.bundle()]));
    expect(r.ok).toBe(true);
  });

  it('re-reads the files when the issuer is rotated upstream', async () => {
    const dir = scratch();
    const root = await createRoot({ trustDomain: TD });
    const [a, b] = [await createIntermediate(root, { trustDomain: TD }), await createIntermediate(root, { trustDomain: TD })];
    await writeSecret(dir, a, [root]);
    const ca = new ExternalCa({ dir, trustDomain: TD });
    const id = workloadSpiffeId(TD, 'default', 'web');
    expect((await ca.issue(id)).issuer).toBe(a.certificate.subject);
    await writeSecret(dir, b, [root]);
    expect((await ca.issue(id)).issuer).toBe(b.certificate.subject);
  });

  it('fails while the files are gone and recovers when they return', async () => {
    const dir = scratch();
    const root = await createRoot({ trustDomain: TD });
    const mid = await createIntermediate(root, { trustDomain: TD });
    await writeSecret(dir, mid, [root]);
    const ca = new ExternalCa({ dir, trustDomain: TD });
    const id = workloadSpiffeId(TD, 'default', 'web');
    await ca.issue(id);
    rmSync(join(dir, 'tls.key'));
    await expect(ca.issue(id)).rejects.toThrow(`external CA ${dir}: tls.key: cannot read (ENOENT)`);
    await writeSecret(dir, mid, [root]);
    expect((await ca.issue(id)).issuer).toBe(mid.certificate.subject);
  });

  it.each([
    ['tls.crt is not PEM', async (d: string) => writeFileSync(join(d, 'tls.crt'), 'garbage'), /tls\.crt: no PEM CERTIFICATE block/],
    ['ca.crt is not PEM', async (d: string) => writeFileSync(join(d, 'ca.crt'), ''), /ca\.crt: no PEM CERTIFICATE block/],
    ['tls.key is not a key', async (d: string) => writeFileSync(join(d, 'tls.key'), 'nope'), /tls\.key: not a usable private key/],
    ['tls.key belongs to another certificate', async (d: string) => writeFileSync(join(d, 'tls.key'), await exportKeyPem((await createRoot({ trustDomain: TD })).privateKey)), /tls\.key: does not match the public key of tls\.crt/],
    ['tls.crt is a leaf, not a CA', async (d: string, root: SigningAuthority) => {
      const leaf = await buildCert({ issuer: root, uris: [`spiffe://${TD}/x`] });
      await writeSecret(d, leaf, [root]);
    }, /tls\.crt: not a CA certificate/],
    ['tls.crt does not chain to ca.crt', async (d: string) => writeFileSync(join(d, 'ca.crt'), toPem([(await createRoot({ trustDomain: TD })).certificate])), /tls\.crt: does not chain to a root in ca\.crt/],
    ['tls.crt is for another trust domain', async (d: string) => {
      const other = await createRoot({ trustDomain: 'other.org' });
      await writeSecret(d, await createIntermediate(other, { trustDomain: 'other.org' }), [other]);
    }, /tls\.crt: the issuer is for trust domain other\.org, the agent is configured for example\.org/],
  ])('rejects a directory where %s, naming the file', async (_name, breakIt, message) => {
    const dir = scratch();
    const root = await createRoot({ trustDomain: TD });
    await writeSecret(dir, await createIntermediate(root, { trustDomain: TD }), [root]);
    await breakIt(dir, root);
    const ca = new ExternalCa({ dir, trustDomain: TD });
    await expect(ca.load()).rejects.toThrow(CaError);
    await expect(ca.load()).rejects.toThrow(message);
  });
});
