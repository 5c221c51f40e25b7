// Root rotation by the procedure in docs/mtls.md: add the new root to the bundle → issue from the new root →
// remove the old root only after the last leaf it signed has expired. Throughout, workloads holding old-root
// and new-root SVIDs complete mutual TLS; after the removal an old-root SVID is rejected.
import { afterAll, describe, expect, it } from 'vitest';
import { createSecureContext } from 'node:tls';
import { BuiltinCa, CaError, TrustBundleSet, tlsClientOptions, tlsServerOptions, verifyPeer, validateSvid, workloadSpiffeId, type Svid, type TrustBundle } from '../../src/index.js';
import { tempDir, tlsDial, tlsServer, TD } from '../support.js';

const state = tempDir('rot');
afterAll(() => state.remove());

interface Holder {
  svid: Svid;
  bundles: TrustBundleSet;
}
const holder = (svid: Svid, bundle: TrustBundle): Holder => ({ svid, bundles: new TrustBundleSet([bundle]) });

/**
 * `n` sequential mutual handshakes from `client` to `server`; a success is one where each side validated the
 * other's SVID (chain to its bundle, X509-SVID rules) and read the expected SPIFFE ID.
 */
async function handshakes(n: number, server: Holder, client: Holder): Promise<{ ok: number; failed: number; errors: string[] }> {
  const srv = await tlsServer(await tlsServerOptions(server.svid, server.bundles), (s) => {
    void verifyPeer(s, server.bundles).then((r) => s.end(`${r.ok ? r.uri : `rejected ${r.reason}`}\n`));
  });
  // One secure context for all connections: parsing the PEMs per connection would dominate the cost.
  const base = await tlsClientOptions(client.svid, client.bundles);
  const opts = { secureContext: createSecureContext(base), checkServerIdentity: base.checkServerIdentity, minVersion: base.minVersion };
  let ok = 0;
  const errors: string[] = [];
  try {
    for (let i = 0; i < n; i++) {
      try {
        const { socket, line } = await tlsDial(srv.port, opts);
        const seen = await verifyPeer(socket, client.bundles);
        socket.destroy();
        if (line === client.svid.uri && seen.ok && seen.uri === server.svid.uri) ok++;
        else errors.push(`server saw ${line}; client saw ${seen.ok ? seen.uri : seen.reason}`);
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
  } finally {
    await srv.close();
  }
  return { ok, failed: n - ok, errors: [...new Set(errors)].slice(0, 5) };
}

describe('root rotation', () => {
  it('keeps 1,000 old-root ↔ new-root handshakes working and rejects old-root SVIDs once the old root is gone', async () => {
    let skew = 0; // the CA's clock; moved forward to reach the old leaves' expiry without waiting for it
    const ca = await BuiltinCa.open({ stateDir: state.dir, trustDomain: TD, now: () => Date.now() + skew });
    const oldRoot = ca.root;
    const ttlMs = 600_000;
    const web = workloadSpiffeId(TD, 'default', 'web');
    const api = workloadSpiffeId(TD, 'default', 'api');
    const webOld = await ca.issue(web, { ttlMs });
    const apiOld = await ca.issue(api, { ttlMs });
    const bundle0 = await ca.bundle();
    expect(bundle0.roots).toHaveLength(1);
    await expect(ca.switchToNewRoot()).rejects.toThrow('no new root in the bundle; add one first');

    // Step 1: the new root joins the bundle; the CA still signs with the old one.
    const newRoot = await ca.addNewRoot();
    expect(ca.rotationPhase).toBe('new-root-in-bundle');
    const bundle1 = await ca.bundle();
    expect(bundle1.roots.map((r) => r.serialNumber).sort()).toEqual([oldRoot.serialNumber, newRoot.serialNumber].sort());
    expect((await ca.issue(api, { ttlMs })).issuer).toBe(oldRoot.subject);
    const step1 = await handshakes(100, holder(webOld, bundle1), holder(apiOld, bundle1));
    expect(step1).toEqual({ ok: 100, failed: 0, errors: [] });

    // Step 2: sign with the new root; the old root stays in the bundle.
    await ca.switchToNewRoot();
    expect(ca.rotationPhase).toBe('issuing-from-new-root');
    expect(ca.root.serialNumber).toBe(newRoot.serialNumber);
    const apiNew = await ca.issue(api, { ttlMs });
    expect(apiNew.issuer).toBe(newRoot.subject);
    const bundle2 = await ca.bundle();
    expect(bundle2.roots).toHaveLength(2);
    // Half each way: the old-root holder as server, then as client.
    const a = await handshakes(500, holder(webOld, bundle2), holder(apiNew, bundle2));
    const b = await handshakes(500, holder(apiNew, bundle2), holder(webOld, bundle2));
    expect({ ok: a.ok + b.ok, failed: a.failed + b.failed, errors: [...a.errors, ...b.errors] }).toEqual({ ok: 1000, failed: 0, errors: [] });
    // Why step 1 comes first: a peer whose bundle lacks the new root refuses a new-root SVID.
    const stale = await handshakes(1, holder(webOld, bundle0), holder(apiNew, bundle2));
    expect(stale.failed).toBe(1);

    // The old root signed leaves that are still valid: removing it now is refused, naming when it may go.
    expect(() => ca.removeOldRoot()).toThrow(CaError);
    expect(() => ca.removeOldRoot()).toThrow(/old root signed leaves valid until .*; remove it after that/);
    // The state directory remembers the rotation across a restart.
    const reopened = await BuiltinCa.open({ stateDir: state.dir, trustDomain: TD, now: () => Date.now() + skew });
    expect(reopened.rotationPhase).toBe('issuing-from-new-root');
    expect(reopened.retiredRootRemovableAt).toBe(ca.retiredRootRemovableAt);

    // Step 3: once the last old-root leaf has expired, the old root goes.
    skew = ca.retiredRootRemovableAt! - Date.now() + 1000;
    expect(ca.removeOldRoot().serialNumber).toBe(oldRoot.serialNumber);
    expect(ca.rotationPhase).toBe('none');
    const bundle3 = await ca.bundle();
    expect(bundle3.roots.map((r) => r.serialNumber)).toEqual([newRoot.serialNumber]);
    // An old-root SVID (here one still inside its validity, to isolate the trust check) is now rejected.
    const v = await validateSvid([webOld.certificate], new TrustBundleSet([bundle3]));
    expect(v.ok ? 'ok' : v.reason).toBe('untrusted-chain');
    const after = await handshakes(3, holder(apiNew, bundle3), holder(webOld, bundle3));
    expect(after.ok).toBe(0);
    skew = 0;
    const webNew = await ca.issue(web, { ttlMs });
    expect(await handshakes(3, holder(apiNew, bundle3), holder(webNew, bundle3))).toEqual({ ok: 3, failed: 0, errors: [] });
  }, 110_000);
});
