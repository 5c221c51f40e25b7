/** The agent's HTTP endpoints. The control API that meshctl reads (/v1/status, /v1/services, /v1/stat,
 *  /v1/workloads: every workload, its cgroup and every config error) is served only on a unix socket that root
 *  (and a group the operator names) can reach; the read-only /metrics, /healthz and /readyz are served there
 *  too and on a loopback TCP address, for Prometheus and probes. A loopback port is anyone's to take first, so
 *  nothing that meshctl acts on crosses it. /metrics alone may also be served on any address (--metrics-listen),
 *  for a Prometheus that scrapes the node's address. */
import { chmodSync, chownSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { dirname } from 'node:path';

import type { Registry } from 'prom-client';

import type { Logger } from './log.js';

export interface Endpoints {
  registry: Registry;
  healthy(): boolean;
  /** Undefined when ready; otherwise why not. */
  notReady(): string | undefined;
  /** JSON documents by path (/v1/…), given the query string; undefined on the TCP address. */
  api?: Record<string, (query: URLSearchParams) => unknown>;
  /** The read-only page (/) and the graph it polls (/graph.json); undefined when the page is off (--no-ui). */
  ui?: UiEndpoints;
  /** Only these paths are served (any other is 404); every endpoint above when undefined. */
  only?: readonly string[];
}

export interface UiEndpoints {
  page: { html: string; headers: Record<string, string> };
  graph(query: URLSearchParams): unknown;
}

const json = (res: ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n');
};

function createEndpoints(ep: Endpoints, log: Logger): Server {
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://agent');
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(res, 405, { error: `${req.method} not allowed` });
    if (ep.only && !ep.only.includes(url.pathname)) return json(res, 404, { error: `no such endpoint here (this address serves ${ep.only.join(', ')}): ${url.pathname}` });
    switch (url.pathname) {
      case '/metrics': {
        const text = await ep.registry.metrics();
        res.writeHead(200, { 'content-type': ep.registry.contentType });
        return res.end(text);
      }
      case '/healthz':
        res.writeHead(ep.healthy() ? 200 : 503, { 'content-type': 'text/plain' });
        return res.end(ep.healthy() ? 'ok\n' : 'unhealthy\n');
      case '/readyz': {
        const why = ep.notReady();
        res.writeHead(why ? 503 : 200, { 'content-type': 'text/plain' });
        return res.end(why ? `not ready: ${why}\n` : 'ready\n');
      }
      case '/':
        if (!ep.ui) break;
        res.writeHead(200, ep.ui.page.headers);
        return res.end(req.method === 'HEAD' ? undefined : ep.ui.page.html);
      case '/graph.json':
        if (!ep.ui) break;
        res.setHeader('cache-control', 'no-store');
        return json(res, 200, ep.ui.graph(url.searchParams));
    }
    const api = ep.api?.[url.pathname];
    if (!api) {
      const where = !ep.api && url.pathname.startsWith('/v1/') ? ' here: the control API is served on the agent\'s unix socket (meshctl --api-socket)' : '';
      return json(res, 404, { error: `no such endpoint${where}: ${url.pathname}` });
    }
    return json(res, 200, api(url.searchParams));
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((err: Error) => {
      log.error('request failed', { path: req.url, err });
      if (!res.headersSent) json(res, 500, { error: err.message });
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 5000;
  return server;
}

/** /metrics, /healthz, /readyz (and the page, unless it is off) on a TCP address — or what `ep.only` names.
 *  Rejects with the listen error (EADDRINUSE…). */
export function startTcpServer(host: string, port: number, ep: Endpoints, log: Logger): Promise<Server> {
  const server = createEndpoints({ ...ep, api: undefined }, log);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

export interface SocketOptions {
  path: string;
  /** Group that may use the socket besides root (mode 0660); root's group when undefined. */
  gid?: number;
}

/**
 * Everything, the control API included, on a unix socket: mode 0660, owner root, group `gid`. Its directory is
 * made root's and refused when anyone else could write to it (they could swap the socket for their own). A
 * socket file left by a killed agent is removed (the caller holds the pin root's lock); anything else at the
 * path is refused.
 */
export async function startSocketServer(opts: SocketOptions, ep: Endpoints, log: Logger): Promise<Server> {
  const dir = dirname(opts.path);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const d = lstatSync(dir);
  if (!d.isDirectory() || d.uid !== process.getuid!() || (d.mode & 0o022) !== 0) {
    throw new Error(
      `the control socket's directory ${dir} must be a directory owned by ${process.getuid!() === 0 ? 'root' : `uid ${process.getuid!()}`} that no one else can write to ` +
        `(it is ${d.isSymbolicLink() ? 'a symbolic link' : d.isDirectory() ? `owned by uid ${d.uid}, mode ${(d.mode & 0o777).toString(8)}` : 'not a directory'})`,
    );
  }
  try {
    const old = lstatSync(opts.path);
    if (!old.isSocket()) throw new Error(`${opts.path} exists and is not a socket: refusing to replace it with the control socket`);
    unlinkSync(opts.path); // a killed agent's: this agent holds the pin root's lock
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const server = createEndpoints(ep, log);
  // Created 0600 (umask), then opened to the group: never a moment when others can connect.
  const umask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    process.umask(umask);
  }
  chownSync(opts.path, process.getuid!(), opts.gid ?? process.getgid!());
  chmodSync(opts.path, 0o660);
  return server;
}
