// SvidVerifier: an accepted chain's verdict is reused, but never across a bundle change, outside the path's
// validity, for another expected trust domain, or for a rejection.
import { describe, expect, it } from 'vitest';
import { createRoot, issueSvid, workloadSpiffeId, SvidVerifier, TrustBundle, TrustBundleSet } from '../../src/index.js';
import { TD } from '../support.js';

const der = (c: { rawData: ArrayBuffer }) => new Uint8Array(c.rawData);

describe('SvidVerifier', () => {
  it('reuses an accepted verdict only while nothing it depends on changed', async () => {
    const root = await createRoot({ trustDomain: TD });
    const bundles = new TrustBundleSet([new TrustBundle(TD, [root.certificate])]);
    const v = new SvidVerifier(bundles, 2);
    const svid = await issueSvid(root, workloadSpiffeId(TD, 'default', 'web'), { ttlMs: 60_000 });
    const chain = [der(svid.certificate)];
    const now = svid.notBefore.getTime() + 1000;

    expect((await v.verify(chain, { now })).ok).toBe(true);
    const again = await v.verify(chain, { now: now + 1000 });
    expect(again.ok && again.uri).toBe(svid.uri);
    expect([v.hits, v.misses]).toEqual([1, 1]);

    // Past notAfter: checked again, and expired.
    const late = await v.verify(chain, { now: svid.notAfter.getTime() + 1 });
    expect(late.ok ? 'ok' : late.reason).toBe('expired');
    expect(v.misses).toBe(2);
    // Another expected trust domain is another question.
    const other = await v.verify(chain, { now, trustDomain: 'other.org' });
    expect(other.ok ? 'ok' : other.reason).toBe('wrong-trust-domain');
    expect(v.misses).toBe(3);
    // Rejections are not kept.
    await v.verify(chain, { now, trustDomain: 'other.org' });
    expect(v.misses).toBe(4);

    // A bundle change (the root replaced) invalidates every verdict.
    expect((await v.verify(chain, { now })).ok).toBe(true);
    bundles.set(new TrustBundle(TD, [(await createRoot({ trustDomain: TD })).certificate]));
    const after = await v.verify(chain, { now });
    expect(after.ok ? 'ok' : after.reason).toBe('untrusted-chain');
  });

  it('keeps at most `max` verdicts, the least recently used going first', async () => {
    const root = await createRoot({ trustDomain: TD });
    const v = new SvidVerifier(new TrustBundleSet([new TrustBundle(TD, [root.certificate])]), 2);
    const chains = await Promise.all(['a', 'b', 'c'].map(async (sa) => [der((await issueSvid(root, workloadSpiffeId(TD, 'ns', sa))).certificate)]));
    for (const c of chains) await v.verify(c);
    expect(v.misses).toBe(3);
    await v.verify(chains[2]!); // kept
    await v.verify(chains[1]!); // kept
    await v.verify(chains[0]!); // evicted by c
    expect([v.hits, v.misses]).toEqual([2, 4]);
  });
});
