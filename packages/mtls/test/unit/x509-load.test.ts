// The certificate library is loaded from its single-file build: its CommonJS entry loads ~210 modules (the
// ASN.1 schemas, tsyringe, tslib…), which cost the agent ~4 MiB of RSS for the same code.
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';

import { describe, expect, it } from 'vitest';

const DIST = resolve(import.meta.dirname, '../../dist/index.js');

describe('loading @mesh/mtls', () => {
  it('loads @peculiar/x509 as one script: no module of it or its dependencies, nothing left in the global scope', () => {
    const script = `
      const m = await import(${JSON.stringify(DIST)});
      const { createRequire } = await import('node:module');
      const cache = Object.keys(createRequire(import.meta.url).cache);
      const root = await m.createRoot({ trustDomain: 'example.org' });
      const svid = await m.issueSvid(root, { trustDomain: 'example.org', path: '/ns/a/sa/b' });
      const check = await m.validateSvid([svid.certificate.rawData], new m.TrustBundleSet([new m.TrustBundle('example.org', [root.certificate])]));
      console.log(JSON.stringify({ modules: cache.filter((p) => /@peculiar|asn1js|tsyringe|pvtsutils|tslib/.test(p)).length, global: typeof globalThis.x509, ok: check.ok, uri: check.uri }));`;
    const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 }));
    expect(out).toEqual({ modules: 0, global: 'undefined', ok: true, uri: 'spiffe://example.org/ns/a/sa/b' });
  });
});
