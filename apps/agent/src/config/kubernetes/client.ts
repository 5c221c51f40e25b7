/**
 * The agent's own Kubernetes client: the client configuration (a kubeconfig file's cluster and user, or the
 * pod's service account) and the two calls the source makes, a paged list and a watch, over node:https.
 *
 * Why not @kubernetes/client-node at run time: importing it (its KubeConfig pulls in the whole generated API)
 * costs the agent ~67 MiB of RSS, half its memory with an empty cluster, for the two GETs the source sends.
 * client-node stays the reference client the test API server is checked against (packages/testkit) and the
 * source of the object typings (type-only imports, nothing loaded). docs/kubernetes.md.
 */
import { readFileSync, statSync } from 'node:fs';
import { Agent as HttpAgent, type ClientRequest, type IncomingMessage, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { isIPv6 } from 'node:net';
import { dirname, isAbsolute, join } from 'node:path';

import { load as loadYaml } from 'js-yaml';

export interface KubeClientConfig {
  /** The API server's URL (https://host:port, maybe with a path prefix). */
  server: string;
  /** Where the configuration came from, for messages: "kubeconfig PATH" or "in-cluster". */
  origin: string;
  /** PEM of the CA(s) the server's certificate must chain to; the system's roots when absent. */
  ca?: Buffer;
  /** The file `ca` was read from, when it came from one. */
  caFile?: string;
  /** A client certificate and its key (PEM). */
  cert?: Buffer;
  key?: Buffer;
  /** A bearer token, or the file holding it (re-read, as kubelet rotates a service account's token). */
  token?: string;
  tokenFile?: string;
  insecureSkipTlsVerify?: boolean;
  /** The name the server's certificate is checked against instead of the URL's host. */
  tlsServerName?: string;
}

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

type Named<T> = { name?: string } & T;
interface KubeconfigFile {
  'current-context'?: string;
  contexts?: Named<{ context?: { cluster?: string; user?: string } }>[];
  clusters?: Named<{ cluster?: Record<string, unknown> }>[];
  users?: Named<{ user?: Record<string, unknown> }>[];
}

/** A kubeconfig file's current context, as a client configuration. Throws naming the file and what is wrong. */
export function kubeconfigFile(path: string): KubeClientConfig {
  const fail = (what: string): never => {
    throw new Error(`kubeconfig ${path}: ${what}`);
  };
  let doc: KubeconfigFile;
  try {
    doc = (loadYaml(readFileSync(path, 'utf8')) ?? {}) as KubeconfigFile;
  } catch (err) {
    return fail((err as Error).message);
  }
  if (typeof doc !== 'object' || Array.isArray(doc)) return fail('not a kubeconfig (expected a mapping)');
  const current = doc['current-context'];
  if (!current) return fail('no current context with a cluster (current-context is not set)');
  const context = doc.contexts?.find((c) => c?.name === current)?.context;
  if (!context) return fail(`no current context with a cluster (context ${JSON.stringify(current)} is not defined)`);
  const cluster = doc.clusters?.find((c) => c?.name === context.cluster)?.cluster;
  if (!cluster) return fail(`no current context with a cluster (cluster ${JSON.stringify(context.cluster)} of context ${JSON.stringify(current)} is not defined)`);
  const user = (context.user !== undefined ? doc.users?.find((u) => u?.name === context.user)?.user : undefined) ?? {};
  const base = dirname(path);
  const str = (o: Record<string, unknown>, k: string, where: string): string | undefined => {
    const v = o[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') return fail(`${where}.${k}: expected a string`);
    return v;
  };
  /** `KEY-data` (base64) or `KEY` (a file, relative to the kubeconfig's directory). */
  const material = (o: Record<string, unknown>, k: string, where: string): { data?: Buffer; file?: string } => {
    const data = str(o, `${k}-data`, where);
    if (data !== undefined) return { data: Buffer.from(data, 'base64') };
    const file = str(o, k, where);
    if (file === undefined) return {};
    const abs = isAbsolute(file) ? file : join(base, file);
    try {
      return { data: readFileSync(abs), file: abs };
    } catch (err) {
      return fail(`${where}.${k}: ${(err as Error).message}`);
    }
  };
  const server = str(cluster, 'server', 'cluster') ?? fail(`cluster ${JSON.stringify(context.cluster)}: no server`);
  try {
    new URL(server);
  } catch {
    fail(`cluster.server: not a URL: ${JSON.stringify(server)}`);
  }
  for (const k of ['exec', 'auth-provider']) {
    if (user[k] !== undefined) fail(`user ${JSON.stringify(context.user)}: ${k} credentials are not supported by the agent: give it a token, a token file or a client certificate`);
  }
  const ca = material(cluster, 'certificate-authority', 'cluster');
  const cert = material(user, 'client-certificate', 'user');
  const key = material(user, 'client-key', 'user');
  if ((cert.data === undefined) !== (key.data === undefined)) fail('user: client-certificate and client-key go together');
  const tokenFile = str(user, 'tokenFile', 'user');
  return {
    server,
    origin: `kubeconfig ${path}`,
    ...(ca.data && { ca: ca.data }),
    ...(ca.file && { caFile: ca.file }),
    ...(cert.data && { cert: cert.data, key: key.data }),
    ...(str(user, 'token', 'user') !== undefined && { token: str(user, 'token', 'user') }),
    ...(tokenFile !== undefined && { tokenFile: isAbsolute(tokenFile) ? tokenFile : join(base, tokenFile) }),
    ...(cluster['insecure-skip-tls-verify'] === true && { insecureSkipTlsVerify: true }),
    ...(str(cluster, 'tls-server-name', 'cluster') !== undefined && { tlsServerName: str(cluster, 'tls-server-name', 'cluster') }),
  };
}

/** The pod's own configuration: the service account's token and CA, and the service address kubelet sets. */
export function inClusterConfig(dir = SERVICE_ACCOUNT_DIR, env: NodeJS.ProcessEnv = process.env): KubeClientConfig {
  const { KUBERNETES_SERVICE_HOST: host, KUBERNETES_SERVICE_PORT: port } = env;
  if (!host || !port) throw new Error('in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (is the agent running in a pod?)');
  const file = (f: string) => {
    try {
      return readFileSync(join(dir, f));
    } catch {
      throw new Error(`in-cluster config: ${join(dir, f)} is missing (is a service account token mounted?)`);
    }
  };
  file('token');
  return { server: `https://${isIPv6(host) ? `[${host}]` : host}:${port}`, origin: 'in-cluster', ca: file('ca.crt'), caFile: join(dir, 'ca.crt'), tokenFile: join(dir, 'token') };
}

/** An answer of the API server other than 2xx; `code` and `body` as client-node's ApiException has them. */
export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly body: string,
    path: string,
  ) {
    super(`HTTP ${code} for GET ${path}`);
  }
}

/** A watch event as the server sends it. */
export interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: { metadata?: { name?: string; namespace?: string; resourceVersion?: string }; code?: number; message?: string };
}

/** How a watch ended without an error: the server closed it, or it was silent past the bound. */
export type WatchEnd = 'closed' | 'silent' | 'stopped';

/** Bodies of error answers are read up to this much (for the message in health). */
const ERROR_BODY_MAX = 64 * 1024;
/** A list page, or a watch's answer, not started within this long is given up (and retried). */
const REQUEST_TIMEOUT_MS = 60_000;
/** A token file is read again after this long. */
const TOKEN_REREAD_MS = 60_000;

export class KubeClient {
  private readonly base: URL;
  private readonly agent: HttpAgent;
  private token: { value: string; read: number; mtimeMs: number } | undefined;

  constructor(readonly config: KubeClientConfig) {
    this.base = new URL(config.server);
    if (this.base.protocol !== 'https:' && this.base.protocol !== 'http:') throw new Error(`${config.origin}: server ${config.server}: expected https:// or http://`);
    this.agent =
      this.base.protocol === 'https:'
        ? new HttpsAgent({
            keepAlive: true,
            ...(config.ca && { ca: config.ca }),
            ...(config.cert && { cert: config.cert, key: config.key }),
            rejectUnauthorized: !config.insecureSkipTlsVerify,
            ...(config.tlsServerName && { servername: config.tlsServerName }),
          })
        : new HttpAgent({ keepAlive: true });
  }

  /** GET `path` with `query`; the response once its status is 2xx, else an ApiError with the body. */
  private get(path: string, query: Record<string, string | number | boolean | undefined>, onRequest?: (req: ClientRequest) => void): Promise<IncomingMessage> {
    const url = new URL(this.base.href.replace(/\/$/, '') + path);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'mesh-agent' };
    const token = this.bearer();
    if (token) headers.authorization = `Bearer ${token}`;
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = request(url, { agent: this.agent, headers }, (res) => {
        req.setTimeout(0);
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) return resolve(res);
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          if (body.length < ERROR_BODY_MAX) body += d;
        });
        res.on('end', () => reject(new ApiError(status, body, url.pathname)));
        res.on('error', () => reject(new ApiError(status, body, url.pathname)));
      });
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`no answer to GET ${url.pathname} within ${REQUEST_TIMEOUT_MS / 1000} s`)));
      req.on('error', reject);
      onRequest?.(req);
      req.end();
    });
  }

  private bearer(): string | undefined {
    const { token, tokenFile } = this.config;
    if (token !== undefined || !tokenFile) return token;
    const now = Date.now();
    if (!this.token || now - this.token.read > TOKEN_REREAD_MS) {
      try {
        const mtimeMs = statSync(tokenFile).mtimeMs;
        if (!this.token || mtimeMs !== this.token.mtimeMs) this.token = { value: readFileSync(tokenFile, 'utf8').trim(), read: now, mtimeMs };
        else this.token.read = now;
      } catch (err) {
        // A rotation in progress: keep the token we have, if any.
        if (!this.token) throw new Error(`token file ${tokenFile}: ${(err as Error).message}`);
      }
    }
    return this.token.value;
  }

  /** One page of a collection (the JSON as sent). */
  async list<T = unknown>(path: string, query: Record<string, string | number | undefined>, signal?: AbortSignal): Promise<{ metadata?: { resourceVersion?: string; continue?: string }; items: T[] }> {
    let req: ClientRequest | undefined;
    const abort = () => req?.destroy(new Error('stopped'));
    signal?.addEventListener('abort', abort, { once: true });
    try {
      const res = await this.get(path, query, (r) => (req = r));
      const chunks: Buffer[] = [];
      for await (const c of res) chunks.push(c as Buffer);
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { metadata?: { resourceVersion?: string; continue?: string }; items?: T[] | null };
      return { metadata: body.metadata, items: body.items ?? [] };
    } finally {
      signal?.removeEventListener('abort', abort);
    }
  }

  /**
   * Watches `path` from `query.resourceVersion`, calling `onEvent` per event, until the server closes the stream
   * ('closed'), nothing arrived for `silenceMs` ('silent'), `signal` aborted ('stopped') or `onEvent` returned
   * 'stop' (e.g. at an ERROR event). Rejects on an error answer (ApiError) or a broken connection.
   */
  async watch(path: string, query: Record<string, string | number | boolean | undefined>, opts: { silenceMs: number; signal?: AbortSignal; onOpen?: () => void; onEvent: (e: WatchEvent) => void | 'stop' }): Promise<WatchEnd> {
    let req: ClientRequest | undefined;
    let ended: WatchEnd | undefined;
    const end = (why: WatchEnd) => {
      ended ??= why;
      req?.destroy();
    };
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => end('silent'), opts.silenceMs);
    };
    const abort = () => end('stopped');
    if (opts.signal?.aborted) return 'stopped';
    opts.signal?.addEventListener('abort', abort, { once: true });
    arm();
    try {
      let res: IncomingMessage;
      try {
        res = await this.get(path, { ...query, watch: true }, (r) => (req = r));
      } catch (err) {
        if (ended) return ended;
        throw err;
      }
      opts.onOpen?.();
      arm();
      return await new Promise<WatchEnd>((resolve, reject) => {
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          if (ended) return;
          arm();
          buf += chunk;
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (!line) continue;
            let event: WatchEvent;
            try {
              event = JSON.parse(line) as WatchEvent;
            } catch {
              end('closed');
              return reject(new Error(`watch ${path}: not a JSON event: ${line.slice(0, 200)}`));
            }
            try {
              if (opts.onEvent(event) === 'stop') return end('closed');
            } catch (err) {
              // The consumer refuses the stream (an ERROR event): the watch ends with its reason.
              end('closed');
              return reject(err);
            }
            if (ended) return;
          }
        });
        res.on('end', () => resolve(ended ?? 'closed'));
        res.on('close', () => {
          if (ended) return resolve(ended);
          // Closed without a clean end of the stream: the connection was cut.
          if (!res.complete) reject(new Error(`watch ${path}: the connection was cut (socket closed mid-stream)`));
          else resolve('closed');
        });
        res.on('error', (err) => (ended ? resolve(ended) : reject(new Error(`watch ${path}: the connection was cut (socket closed mid-stream: ${err.message})`))));
      });
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', abort);
    }
  }

  /** Closes the kept-alive connections. */
  close(): void {
    this.agent.destroy();
  }
}
