// The agent's tunnel refuses a client presenting another trust domain's certificate (its own root, a SPIFFE ID of
// spiffe://elsewhere.test) before one byte reaches the workload, counted by reason: unknown_trust_domain (the
// trust domain is checked before the chain). The expired SVID and the other-root cases within the mesh's trust
// domain are in native/dataplane/test/identity.test.ts.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { expect, it } from 'vitest';
import { describePrivileged } from '@mesh/testkit';

import { sample, sum } from './harness.js';
import { MtlsNode, until } from './mtls-node.js';

describePrivileged('the mTLS tunnel and a foreign client', () => {
  it("refuses another trust domain's certificate, counted unknown_trust_domain", async () => {
    const n = await MtlsNode.start();
    try {
      const dir = n.env.tempDir('foreign');
      const f = (x: string) => join(dir, x);
      const openssl = async (args: string[]) => {
        const r = await n.env.procs.run('openssl', args, { timeoutMs: 30_000 });
        expect(r.code, r.stderr).toBe(0);
      };
      await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '1', '-subj', '/O=elsewhere/CN=elsewhere root', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
      await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('leaf.key'), '-out', f('leaf.csr'), '-subj', '/O=elsewhere']);
      const ext = f('leaf.ext');
      writeFileSync(ext, 'subjectAltName=URI:spiffe://elsewhere.test/ns/default/sa/client\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth,serverAuth\n');
      await openssl(['x509', '-req', '-in', f('leaf.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('leaf.pem'), '-days', '1', '-extfile', ext]);

      const failures = async (reason: string) => sum(sample(await n.dpStats(), 'mesh_dataplane_handshake_failures_total', { role: 'inbound', reason }));
      const before = await failures('unknown_trust_domain');
      const authorized = async () => sum(sample(await n.dpStats(), 'mesh_dataplane_inbound_authorized_total'));
      const a0 = await authorized();
      // The SNI the data plane's own clients send: the destination workload's address in hex.
      const sni = `${n.server.split('.').map((b) => Number(b).toString(16).padStart(2, '0')).join('')}.dst.mesh`;
      const r = await n.env.procs.run('sh', ['-c', `printf 'GET / HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n' | openssl s_client -quiet -tls1_3 -connect ${n.dataplane}:15008 -servername ${sni} -cert ${f('leaf.pem')} -key ${f('leaf.key')} -verify_quiet`], { timeoutMs: 30_000 });
      expect(r.stdout).toBe('');
      await until('the refusal counted', async () => (await failures('unknown_trust_domain')) === before + 1, 10_000);
      expect(await authorized()).toBe(a0);
    } finally {
      await n.close();
    }
  }, 120_000);
}, { tools: ['openssl'] });
