// The agent's own Kubernetes client configuration (kubeconfig files and in-cluster), and the rule that keeps
// @kubernetes/client-node out of the agent at run time: importing it costs ~67 MiB of RSS (docs/kubernetes.md).
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { inClusterConfig, kubeconfigFile } from '../../src/config/kubernetes/client.js';

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

function write(doc: unknown, files: Record<string, string> = {}): string {
  dir = mkdtempSync(join(tmpdir(), 'kube-client-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  const path = join(dir, 'config');
  writeFileSync(path, typeof doc === 'string' ? doc : JSON.stringify(doc));
  return path;
}

const config = (cluster: object, user: object = {}) => ({
  'current-context': 'c',
  contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }, { name: 'other', context: { cluster: 'nope' } }],
  clusters: [{ name: 'k', cluster }],
  users: [{ name: 'u', user }],
});

describe('kubeconfig files', () => {
  it('the current context: server, CA and client certificate as data or files (relative to the file), tokens', () => {
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    const path = write(config({ server: 'https://10.0.0.1:6443', 'certificate-authority': 'ca.pem', 'tls-server-name': 'api' }, { 'client-certificate-data': b64('CERT'), 'client-key': 'key.pem' }), { 'ca.pem': 'CA', 'key.pem': 'KEY' });
    const c = kubeconfigFile(path);
    expect(c).toMatchObject({ server: 'https://10.0.0.1:6443', origin: `kubeconfig ${path}`, caFile: join(dir!, 'ca.pem'), tlsServerName: 'api' });
    expect([c.ca?.toString(), c.cert?.toString(), c.key?.toString()]).toEqual(['CA', 'CERT', 'KEY']);
    // YAML as kubectl writes it, with a token file.
    const yaml = write(`apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\nclusters:\n- name: k\n  cluster: {server: 'https://h:443', insecure-skip-tls-verify: true}\nusers:\n- name: u\n  user: {tokenFile: tok}\n`);
    expect(kubeconfigFile(yaml)).toMatchObject({ server: 'https://h:443', insecureSkipTlsVerify: true, tokenFile: join(dir!, 'tok') });
  });

  it.each([
    ['no current context', { clusters: [] }, /no current context with a cluster \(current-context is not set\)/],
    ['an undefined context', { 'current-context': 'x' }, /context "x" is not defined/],
    ['a context without its cluster', { ...config({}), 'current-context': 'other' }, /cluster "nope" of context "other" is not defined/],
    ['no server', config({}), /cluster "k": no server/],
    ['a server that is not a URL', config({ server: 'not a url' }), /cluster\.server: not a URL/],
    ['a missing CA file', config({ server: 'https://h', 'certificate-authority': 'gone.pem' }), /cluster\.certificate-authority: ENOENT/],
    ['a certificate without its key', config({ server: 'https://h' }, { 'client-certificate-data': 'QQ==' }), /client-certificate and client-key go together/],
    ['an exec plugin', config({ server: 'https://h' }, { exec: { command: 'aws' } }), /exec credentials are not supported by the agent: give it a token, a token file or a client certificate/],
    ['not YAML', '{{{', /kubeconfig .*config: /],
  ])('%s is refused naming the file and what is wrong', (_what, doc, message) => {
    const path = write(doc);
    expect(() => kubeconfigFile(path)).toThrow(message);
    expect(() => kubeconfigFile(path)).toThrow(`kubeconfig ${path}: `);
  });

  it('in-cluster: an IPv6 service address in brackets; the token is a file, read per request', () => {
    dir = mkdtempSync(join(tmpdir(), 'kube-sa-'));
    writeFileSync(join(dir, 'token'), 't');
    writeFileSync(join(dir, 'ca.crt'), 'CA');
    expect(inClusterConfig(dir, { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' })).toMatchObject({ server: 'https://[fd00::1]:443', tokenFile: join(dir, 'token'), origin: 'in-cluster' });
  });
});

describe('the agent does not load @kubernetes/client-node', () => {
  it('its sources import client-node for types only (erased at compile time)', () => {
    const src = resolve(import.meta.dirname, '../../src');
    const files = readdirSync(src, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
    const loading = files.flatMap((f) =>
      [...readFileSync(join(src, f), 'utf8').matchAll(/^\s*import\s+(?!type\s)[^;]*?from\s+'@kubernetes\/client-node'|import\(\s*'@kubernetes\/client-node'\s*\)/gm)].map((m) => `${f}: ${m[0].trim().replace(/\s+/g, ' ')}`),
    );
    expect(loading).toEqual([]);
  });
});
