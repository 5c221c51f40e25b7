// A throwaway PKI for the test API server, made with the openssl CLI: a CA, a server certificate for
// 127.0.0.1/localhost, and a client certificate whose CN and O are the user and groups the apiserver sees.
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runChecked } from '../proc.js';
import { ensureTool } from '../tools.js';

export interface CertPair {
  /** PEM */
  cert: string;
  /** PEM (PKCS#8) */
  key: string;
}

export interface TestPki {
  ca: CertPair;
  server: CertPair;
  client: CertPair;
}

export interface PkiOptions {
  /** Client certificate CN: the user name. Default 'mesh-test'. */
  user?: string;
  /** Client certificate O entries: the groups. Default ['system:masters']. */
  groups?: string[];
  days?: number;
}

const SUBJECT_VALUE = /^[A-Za-z0-9:._@-]+$/;
const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** Write ca.*, server.* and client.* (.crt/.key PEM) into `dir` and return their contents. */
export async function makePki(dir: string, opts: PkiOptions = {}): Promise<TestPki> {
  const openssl = ensureTool('openssl');
  const user = opts.user ?? 'mesh-test';
  const groups = opts.groups ?? ['system:masters'];
  for (const v of [user, ...groups]) {
    if (!SUBJECT_VALUE.test(v)) throw new TypeError(`certificate user and groups may use letters, digits and : . _ @ -; got ${JSON.stringify(v)}`);
  }
  const days = String(opts.days ?? 7);
  const f = (name: string): string => join(dir, name);
  await runChecked(openssl, [
    'req', '-x509', ...EC, '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', days, '-subj', '/CN=mesh-test-ca',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  const leaf = async (name: string, subject: string, ext: string): Promise<void> => {
    writeFileSync(f(`${name}.ext`), `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n${ext}\n`);
    await runChecked(openssl, ['req', '-new', ...EC, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', subject]);
    await runChecked(openssl, [
      'x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-set_serial', `0x${randomBytes(8).toString('hex')}`,
      '-days', days, '-extfile', f(`${name}.ext`), '-out', f(`${name}.crt`),
    ]);
  };
  await leaf('server', '/CN=kube-apiserver', 'extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost');
  await leaf('client', `${groups.map((g) => `/O=${g}`).join('')}/CN=${user}`, 'extendedKeyUsage=clientAuth');
  const pair = (name: string): CertPair => ({ cert: readFileSync(f(`${name}.crt`), 'utf8'), key: readFileSync(f(`${name}.key`), 'utf8') });
  return { ca: pair('ca'), server: pair('server'), client: pair('client') };
}
