// The test API server: HTTPS with client-certificate authentication (or plain HTTP on loopback), the router,
// and the switches tests use to misbehave like a real cluster does: stalled and dropped watches, compaction,
// a server that goes away and comes back on the same port with the same objects.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { atExit } from '../exit.js';
import { makePki, type PkiOptions, type TestPki } from './certs.js';
import { writeKubeconfig } from './kubeconfig.js';
import type { KubeObject } from './resources.js';
import { Router } from './router.js';
import { failure } from './status.js';
import { ObjectStore, type StoreOptions } from './store.js';
import type { ExpiredForm, Watch } from './watch.js';

export interface KubeApiServerOptions extends StoreOptions, PkiOptions {
  /** HTTPS with client certificates (default), or plain HTTP without authentication. */
  tls?: boolean;
  /** Default 0: a free port, kept across stop()/start(). */
  port?: number;
  /** How often a watch that asked for bookmarks gets one. Default 60 s, as the apiserver's watch cache. */
  bookmarkIntervalMs?: number;
  /** How a watch from a compacted resourceVersion is refused. Default 'event' (HTTP 200, then ERROR 410). */
  expiredForm?: ExpiredForm;
}

export interface RequestRecord {
  /** Date.now() when it arrived. */
  at: number;
  method: string;
  /** Path and query, as sent. */
  url: string;
  /** The body's media type, e.g. which kind of patch; '' without one. */
  contentType: string;
  /** Client certificate CN; '' over plain HTTP. */
  user: string;
  groups: string[];
  /** The response's status once it has ended or broken off; 0 while it is going on (an open watch). */
  status: number;
}

const MAX_REQUEST_RECORDS = 10_000;

export class KubeApiServer implements AsyncDisposable {
  readonly store: ObjectStore;
  /** Where the certificates and the kubeconfig live; removed by close(). */
  readonly dir: string;
  readonly kubeconfigPath: string;
  /** Recent requests, oldest first (bounded). */
  readonly requests: RequestRecord[] = [];
  expiredForm: ExpiredForm;
  readonly #watches = new Set<Watch>();
  readonly #sockets = new Set<Socket>();
  readonly #server: Server;
  readonly #router: Router;
  readonly #pki: TestPki | undefined;
  #port: number;
  #listening = false;
  #closed = false;
  #unregister: () => void;

  private constructor(opts: KubeApiServerOptions, dir: string, pki: TestPki | undefined) {
    this.dir = dir;
    this.kubeconfigPath = join(dir, 'kubeconfig');
    this.store = new ObjectStore(opts);
    this.expiredForm = opts.expiredForm ?? 'event';
    this.#pki = pki;
    this.#port = opts.port ?? 0;
    const bookmarkIntervalMs = opts.bookmarkIntervalMs ?? 60_000;
    this.#router = new Router({
      store: this.store,
      get address() { return address(); },
      get expiredForm() { return expiredForm(); },
      bookmarkIntervalMs,
      addWatch: (w) => this.#watches.add(w),
      removeWatch: (w) => this.#watches.delete(w),
    });
    const address = (): string => `127.0.0.1:${this.#port}`;
    const expiredForm = (): ExpiredForm => this.expiredForm;
    const handler = (req: IncomingMessage, res: ServerResponse): void => this.#handle(req, res);
    this.#server = pki === undefined
      ? createHttpServer(handler)
      : createHttpsServer({ key: pki.server.key, cert: pki.server.cert, ca: pki.ca.cert, requestCert: true, rejectUnauthorized: false }, handler);
    // Raw TCP sockets, TLS or not, so stop() also cuts connections still in their handshake.
    this.#server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.once('close', () => this.#sockets.delete(s));
    });
    this.#unregister = atExit(() => rmSync(dir, { recursive: true, force: true }));
  }

  /** Make the certificates, start listening on 127.0.0.1 and write the kubeconfig. */
  static async start(opts: KubeApiServerOptions = {}): Promise<KubeApiServer> {
    checkOptions(opts);
    const dir = mkdtempSync(join(tmpdir(), 'mesh-kube-'));
    try {
      const tls = opts.tls ?? true;
      const pki = tls ? await makePki(dir, opts) : undefined;
      const server = new KubeApiServer(opts, dir, pki);
      await server.listen();
      writeKubeconfig(server.kubeconfigPath, {
        server: server.url,
        ...(pki && { ca: pki.ca.cert, clientCert: pki.client.cert, clientKey: pki.client.key }),
      });
      return server;
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  get port(): number {
    return this.#port;
  }

  get url(): string {
    return `${this.#pki === undefined ? 'http' : 'https'}://127.0.0.1:${this.#port}`;
  }

  get listening(): boolean {
    return this.#listening;
  }

  /** The CA certificate, client certificate and key (HTTPS only), e.g. for a client configured by hand. */
  get pki(): TestPki | undefined {
    return this.#pki;
  }

  /** Open watches. */
  get watches(): Watch[] {
    return [...this.#watches];
  }

  /** Stop sending on every open watch without closing it; returns how many. */
  stallWatches(): number {
    for (const w of this.#watches) w.stall();
    return this.#watches.size;
  }

  /** Close every open watch: cleanly (the response ends) or, with `abrupt`, by cutting the connection. */
  dropWatches(opts: { abrupt?: boolean } = {}): number {
    const all = this.watches;
    for (const w of all) {
      if (opts.abrupt) w.destroy();
      else w.end();
    }
    return all.length;
  }

  /** A bookmark now on every watch that asked for bookmarks. */
  sendBookmarks(): void {
    for (const w of this.#watches) w.bookmark();
  }

  /** Forget the change history up to `resourceVersion` (default: now): watches from before it get 410. */
  compact(resourceVersion?: number): void {
    this.store.compact(resourceVersion);
  }

  /** Listen (again) on the same port. */
  async listen(): Promise<void> {
    if (this.#closed) throw new TypeError('KubeApiServer: listen after close');
    if (this.#listening) return;
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#port, '127.0.0.1', () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    this.#port = (this.#server.address() as AddressInfo).port;
    this.#listening = true;
  }

  /** Stop listening and cut every connection; objects and history stay for listen(). */
  async stop(): Promise<void> {
    if (!this.#listening) return;
    this.#listening = false;
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const w of this.watches) w.destroy();
    for (const s of this.#sockets) s.destroy();
    await closed;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await this.stop();
    this.#closed = true;
    rmSync(this.dir, { recursive: true, force: true });
    this.#unregister();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // Objects by their apiVersion/kind, without HTTP: for tests that script many changes.

  create(obj: KubeObject): KubeObject {
    return structuredClone(this.store.create(this.store.resourceOf(obj), obj));
  }

  replace(obj: KubeObject): KubeObject {
    return structuredClone(this.store.replace(this.store.resourceOf(obj), obj));
  }

  delete(ref: Pick<KubeObject, 'apiVersion' | 'kind'> & { metadata: { name?: string; namespace?: string } }): KubeObject {
    const r = this.store.resourceOf(ref);
    return structuredClone(this.store.delete(r, ref.metadata.namespace ?? 'default', ref.metadata.name ?? ''));
  }

  get(ref: Pick<KubeObject, 'apiVersion' | 'kind'> & { metadata: { name?: string; namespace?: string } }): KubeObject | undefined {
    const r = this.store.resourceOf(ref);
    const obj = this.store.get(r, r.namespaced ? ref.metadata.namespace ?? 'default' : undefined, ref.metadata.name ?? '');
    return obj && structuredClone(obj);
  }

  list(ref: Pick<KubeObject, 'apiVersion' | 'kind'>, namespace?: string): KubeObject[] {
    return structuredClone(this.store.list(this.store.resourceOf(ref), namespace));
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
    const record: RequestRecord = { at: Date.now(), method: req.method ?? '', url: req.url ?? '', contentType, user: '', groups: [], status: 0 };
    res.once('finish', () => (record.status = res.statusCode));
    res.once('close', () => (record.status ||= res.statusCode));
    this.requests.push(record);
    if (this.requests.length > MAX_REQUEST_RECORDS) this.requests.shift();
    if (this.#pki !== undefined) {
      const socket = req.socket as TLSSocket;
      if (!socket.authorized) {
        const body = JSON.stringify(failure(401, 'Unauthorized', 'Unauthorized'));
        res.writeHead(401, { 'content-type': 'application/json' }).end(body);
        return;
      }
      const subject = socket.getPeerCertificate().subject;
      record.user = String(subject.CN ?? '');
      record.groups = subject.O === undefined ? [] : ([] as string[]).concat(subject.O);
    }
    void this.#router.handle(req, res);
  }
}

function checkOptions(opts: KubeApiServerOptions): void {
  const { port, bookmarkIntervalMs, expiredForm } = opts;
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) throw new RangeError(`KubeApiServer: port must be an integer in 0..65535, got ${port}`);
  if (bookmarkIntervalMs !== undefined && !(Number.isFinite(bookmarkIntervalMs) && bookmarkIntervalMs >= 10)) {
    throw new RangeError(`KubeApiServer: bookmarkIntervalMs must be at least 10, got ${bookmarkIntervalMs}`);
  }
  if (expiredForm !== undefined && expiredForm !== 'http' && expiredForm !== 'event') {
    throw new TypeError(`KubeApiServer: expiredForm must be 'http' or 'event', got ${JSON.stringify(expiredForm)}`);
  }
}
