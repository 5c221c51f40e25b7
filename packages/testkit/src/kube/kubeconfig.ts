// A kubeconfig that kubectl and client-node both load. JSON is YAML, so no YAML writer is needed.
import { writeFileSync } from 'node:fs';

export interface KubeconfigOptions {
  /** https://127.0.0.1:PORT or http://127.0.0.1:PORT */
  server: string;
  /** PEM of the CA that signed the server's certificate (HTTPS only). */
  ca?: string;
  /** PEM client certificate and key (HTTPS only). */
  clientCert?: string;
  clientKey?: string;
  /** A bearer token instead (the test server authenticates client certificates only, so this gets 401). */
  token?: string;
  /** The context's default namespace. Default 'default'. */
  namespace?: string;
  /** Cluster, user and context name. Default 'mesh-test'. */
  name?: string;
}

export function kubeconfig(opts: KubeconfigOptions): object {
  const name = opts.name ?? 'mesh-test';
  const b64 = (pem: string): string => Buffer.from(pem).toString('base64');
  if ((opts.clientCert === undefined) !== (opts.clientKey === undefined)) throw new TypeError('kubeconfig: clientCert and clientKey go together');
  return {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name, cluster: { server: opts.server, ...(opts.ca !== undefined && { 'certificate-authority-data': b64(opts.ca) }) } }],
    users: [{
      name,
      user: {
        ...(opts.clientCert !== undefined && { 'client-certificate-data': b64(opts.clientCert), 'client-key-data': b64(opts.clientKey!) }),
        ...(opts.token !== undefined && { token: opts.token }),
      },
    }],
    contexts: [{ name, context: { cluster: name, user: name, namespace: opts.namespace ?? 'default' } }],
    'current-context': name,
    preferences: {},
  };
}

/** Write a kubeconfig file (mode 0600, as kubectl wants for files holding keys). */
export function writeKubeconfig(path: string, opts: KubeconfigOptions): void {
  writeFileSync(path, `${JSON.stringify(kubeconfig(opts), null, 2)}\n`, { mode: 0o600 });
}
