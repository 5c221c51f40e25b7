// The built-in CA: root created on first start, key 0600 under the state directory, reused after a restart.
import { afterEach, describe, expect, it } from 'vitest';
import { readFileSync, statSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BuiltinCa, CaError, workloadSpiffeId, validateSvid, TrustBundleSet } from '../../src/index.js';
import { tempDir, TD } from '../support.js';

const cleanups: (() => void)[] = [];
afterEach(() => cleanups.splice(0).forEach((f) => f()));
function stateDir(): string {
  const t = tempDir('state');
  cleanups.push(t.remove);
  return t.dir;
}

describe('BuiltinCa', () => {
  it('creates its root once, with 0600 files in a 0700 directory, and reuses it after a restart', async () => {
    const dir = stateDir();
    const first = await BuiltinCa.open({ stateDir: dir, trustDomain: TD });
    for (const f of ['root.crt', 'root.key']) expect((statSync(join(dir, 'ca', f)).mode & 0o777).toString(8)).toBe('600');
    expect((statSync(join(dir, 'ca')).mode & 0o777).toString(8)).toBe('700');
    const svid = await first.issue(workloadSpiffeId(TD, 'default', 'web'), { ttlMs: 60_000 });
    const again = await BuiltinCa.open({ stateDir: dir, trustDomain: TD });
    expect(again.root.serialNumber).toBe(first.root.serialNumber);
    // An SVID from before the restart still validates against the reopened CA's bundle.
    expect((await validateSvid([svid.certificate], new TrustBundleSet([await again.bundle()]))).ok).toBe(true);
    expect(readFileSync(join(dir, 'ca', 'root.key'), 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
  });

  it('agrees on one root when several start at once on an empty state directory', async () => {
    const dir = stateDir();
    const cas = await Promise.all(Array.from({ length: 4 }, () => BuiltinCa.open({ stateDir: dir, trustDomain: TD })));
    expect(new Set(cas.map((c) => c.root.serialNumber)).size).toBe(1);
    const again = await BuiltinCa.open({ stateDir: dir, trustDomain: TD });
    expect(again.root.serialNumber).toBe(cas[0]!.root.serialNumber);
  });

  it('refuses a state directory with half a root, another trust domain, or a key that does not match', async () => {
    const dir = stateDir();
    await BuiltinCa.open({ stateDir: dir, trustDomain: TD });
    await expect(BuiltinCa.open({ stateDir: dir, trustDomain: 'other.org' })).rejects.toThrow(/root is for trust domain example\.org, the agent is configured for other\.org/);
    const key = readFileSync(join(dir, 'ca', 'root.key'), 'utf8');
    rmSync(join(dir, 'ca', 'root.key'));
    await expect(BuiltinCa.open({ stateDir: dir, trustDomain: TD })).rejects.toThrow(CaError);
    await expect(BuiltinCa.open({ stateDir: dir, trustDomain: TD })).rejects.toThrow(/root\.key is missing/);
    const other = stateDir();
    await BuiltinCa.open({ stateDir: other, trustDomain: TD });
    writeFileSync(join(dir, 'ca', 'root.key'), readFileSync(join(other, 'ca', 'root.key')), { mode: 0o600 });
    await expect(BuiltinCa.open({ stateDir: dir, trustDomain: TD })).rejects.toThrow(/root\.key: does not match the public key/);
    writeFileSync(join(dir, 'ca', 'root.key'), key, { mode: 0o600 });
    await expect(BuiltinCa.open({ stateDir: dir, trustDomain: TD })).resolves.toBeInstanceOf(BuiltinCa);
  });

  it('issues only in its trust domain and never a leaf outliving the root', async () => {
    const ca = await BuiltinCa.open({ stateDir: stateDir(), trustDomain: TD, rootTtlMs: 120_000 });
    await expect(ca.issue(workloadSpiffeId('other.org', 'a', 'b'))).rejects.toThrow(/signs for example\.org, not other\.org/);
    const svid = await ca.issue(workloadSpiffeId(TD, 'a', 'b'));
    expect(svid.notAfter.getTime()).toBe(ca.root.notAfter.getTime());
  });
});
