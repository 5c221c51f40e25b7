// A raw HTTP client for the test API server, for tests that check the wire protocol itself (status codes,
// chunked watch lines) rather than what a client library makes of it.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KubeApiServer } from '../../src/index.js';

export interface Reply {
  status: number;
  body: any;
}

export interface WatchEvent {
  type: string;
  object: any;
}

export interface OpenWatch {
  status: number;
  events: WatchEvent[];
  /** Resolves when the server ends the response (true) or the connection breaks (false). */
  ended: Promise<boolean>;
  close(): void;
}

function send(server: KubeApiServer, method: string, path: string, body?: unknown, opts: { contentType?: string; clientCert?: boolean } = {}): Promise<IncomingMessage> {
  const url = new URL(path, server.url);
  const pki = server.pki;
  const tls = pki === undefined ? {} : {
    ca: pki.ca.cert,
    ...(opts.clientCert !== false && { cert: pki.client.cert, key: pki.client.key }),
  };
  const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  const make = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = make(url, {
      method,
      ...tls,
      agent: false,
      timeout: 20_000,
      headers: { accept: 'application/json', ...(data !== undefined && { 'content-type': opts.contentType ?? 'application/json' }) },
    }, resolve);
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer in 20 s`)));
    req.end(data);
  });
}

export async function call(server: KubeApiServer, method: string, path: string, body?: unknown, opts: { contentType?: string; clientCert?: boolean } = {}): Promise<Reply> {
  const res = await send(server, method, path, body, opts);
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString();
  return { status: res.statusCode ?? 0, body: text === '' ? undefined : JSON.parse(text) };
}

export async function watch(server: KubeApiServer, path: string): Promise<OpenWatch> {
  const res = await send(server, 'GET', path);
  const events: WatchEvent[] = [];
  let buffered = '';
  const ended = new Promise<boolean>((resolve) => {
    res.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.trim() !== '') events.push(JSON.parse(line) as WatchEvent);
      }
    });
    res.on('end', () => resolve(true));
    res.on('error', () => resolve(false));
    res.on('aborted', () => resolve(false));
  });
  return { status: res.statusCode ?? 0, events, ended, close: () => res.destroy() };
}

/** Poll `check` every 20 ms until it returns true; throw naming `what` after `timeoutMs`. */
export async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}
