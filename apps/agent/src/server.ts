/** The agent's HTTP endpoints, on a loopback address: /metrics, /healthz, /readyz, and the JSON API that
 *  meshctl reads (/v1/status, /v1/services, /v1/stat, /v1/workloads). */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

import type { Registry } from 'prom-client';

import type { Logger } from './log.js';

export interface Endpoints {
  registry: Registry;
  healthy(): boolean;
  /** Undefined when ready; otherwise why not. */
  notReady(): string | undefined;
  /** JSON documents by path (/v1/…), given the query string. */
  api: Record<string, (query: URLSearchParams) => unknown>;
}

const json = (res: ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n');
};

export function startServer(host: string, port: number, ep: Endpoints, log: Logger): Promise<Server> {
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://agent');
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(res, 405, { error: `${req.method} not allowed` });
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
    }
    const api = ep.api[url.pathname];
    if (!api) return json(res, 404, { error: `no such endpoint: ${url.pathname}` });
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
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}
