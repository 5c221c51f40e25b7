// Certificates are made and read with node:crypto and a small DER reader and writer (src/x509.ts): a certificate
// library (@peculiar/x509 and its ASN.1, reflect-metadata, tslib…) cost the agent ~4 MiB of RSS for the same work.
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';

import { describe, expect, it } from 'vitest';

const DIST = resolve(import.meta.dirname, '../../dist/index.js');

/** Runs `body` in a fresh node (--expose-gc) after `setup`; prints V8's heap in use after a full collection. */
function heapAfter(setup: string): { heapMiB: number; metadata: string; ok: boolean } {
  const script = `
    ${setup}
    for (let i = 0; i < 3; i++) { gc(); await new Promise((r) => setImmediate(r)); }
    console.log(JSON.stringify({ heapMiB: process.memoryUsage().heapUsed / 2 ** 20, metadata: typeof Reflect.getMetadata, ok: globalThis.__ok ?? true }));`;
  return JSON.parse(execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 }));
}

describe('loading @mesh/mtls', () => {
  it('issuing and validating an SVID loads no certificate library: no reflect-metadata, V8 heap within 2 MiB of plain node:crypto', () => {
    // The same work by hand: a P-256 key made and a signature computed through WebCrypto and node:crypto.
    const bare = heapAfter(`
      const { webcrypto, KeyObject, sign } = await import('node:crypto');
      const k = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
      sign('sha256', Buffer.alloc(300), KeyObject.from(k.privateKey));`);
    const mtls = heapAfter(`
      const m = await import(${JSON.stringify(DIST)});
      const root = await m.createRoot({ trustDomain: 'example.org' });
      const svid = await m.issueSvid(root, { trustDomain: 'example.org', path: '/ns/a/sa/b' });
      const check = await m.validateSvid([svid.certificate.rawData], new m.TrustBundleSet([new m.TrustBundle('example.org', [root.certificate])]));
      globalThis.__ok = check.ok && check.uri === 'spiffe://example.org/ns/a/sa/b';`);
    expect(mtls.ok).toBe(true);
    // reflect-metadata (which the certificate library needed) defines Reflect.getMetadata for the whole process.
    expect(mtls.metadata).toBe('undefined');
    // The library's code and schemas held ~4 MiB of heap on top of the same crypto; the package's own modules
    // (policy, rotation, prom-client for its metrics) stay well under 2 MiB more.
    expect(mtls.heapMiB - bare.heapMiB).toBeLessThan(2);
  });
});
