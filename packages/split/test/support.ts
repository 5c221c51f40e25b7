/** Test topology for the split programs: backend servers on loopback addresses, a scratch cgroup holding
 *  the clients, and snapshot builders. Services' VIPs are in 127.0.0.0/8 (DEVELOPERS.md, Tests: a VIP dialled from
 *  the host namespace without the hook attached must not leave the machine). */
import { createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';

import type { EndpointSlice, HTTPRoute, Service, Snapshot } from '../src/index.js';

export const dialScript = fileURLToPath(new URL('./fixtures/dial.mjs', import.meta.url));

/** A TCP server that writes its name and a newline to every connection, and counts them. */
export interface NamedServer {
  name: string;
  host: string;
  port: number;
  accepted: number;
  sockets: Set<Socket>;
  close(): Promise<void>;
}

export async function namedServer(name: string, host: string, opts: { keepOpen?: boolean } = {}): Promise<NamedServer> {
  const sockets = new Set<Socket>();
  const srv: Server = createServer((s) => {
    out.accepted++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.write(`${name}\n`);
    // Long-lived connections echo "<name>:<line>" so the client can tell who answers.
    if (opts.keepOpen) s.on('data', (d) => s.write(`${name}:${d}`));
    else s.end();
  });
  srv.listen(0, host);
  await once(srv, 'listening');
  const out: NamedServer = {
    name,
    host,
    port: (srv.address() as { port: number }).port,
    accepted: 0,
    sockets,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => srv.close(r));
    },
  };
  return out;
}

export function service(name: string, vip: string | string[], port: number, opts: { targetPort?: number; protocol?: 'TCP' | 'UDP' } = {}): Service {
  const ips = Array.isArray(vip) ? vip : [vip];
  return {
    kind: 'Service',
    metadata: { name, namespace: 'default' },
    spec: { clusterIP: ips[0], ...(ips.length > 1 ? { clusterIPs: ips } : {}), ports: [{ port, protocol: opts.protocol ?? 'TCP', ...(opts.targetPort ? { targetPort: opts.targetPort } : {}) }] },
  };
}

export function slice(serviceName: string, addrs: string[], port: number, opts: { name?: string; protocol?: 'TCP' | 'UDP'; family?: 4 | 6 } = {}): EndpointSlice {
  return {
    kind: 'EndpointSlice',
    metadata: { name: opts.name ?? `${serviceName}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': serviceName } },
    addressType: opts.family === 6 ? 'IPv6' : 'IPv4',
    endpoints: addrs.map((a) => ({ addresses: [a], conditions: { ready: true } })),
    ports: [{ port, protocol: opts.protocol ?? 'TCP' }],
  };
}

export function route(name: string, parent: string, port: number, backends: [string, number | undefined][]): HTTPRoute {
  return {
    kind: 'HTTPRoute',
    metadata: { name, namespace: 'default' },
    spec: {
      parentRefs: [{ kind: 'Service', group: '', name: parent, port }],
      rules: [{ backendRefs: backends.map(([n, w]) => ({ name: n, port, ...(w === undefined ? {} : { weight: w }) })) }],
    },
  };
}

export function snapshot(parts: Partial<Snapshot>): Snapshot {
  return { services: parts.services ?? [], endpointSlices: parts.endpointSlices ?? [], httpRoutes: parts.httpRoutes ?? [] };
}

/** Allowed distance from the binomial mean: 3 standard deviations. */
export function threeSigma(n: number, p: number): number {
  return 3 * Math.sqrt(n * p * (1 - p));
}

/**
 * Asserts that `count` of `n` connections is within 3 sigma of the binomial mean n·p. A correct split misses that
 * 0.27 % of the time, and the suite holds several such checks, so a miss draws one fresh sample (`redraw`) and
 * judges that: a wrong split misses both, a correct one fails CI once in ~140,000 runs instead of once in ~50.
 */
export async function expectWithinThreeSigma(count: number, n: number, p: number, redraw: () => Promise<number>): Promise<void> {
  const ok = (c: number) => Math.abs(c - p * n) <= threeSigma(n, p);
  if (ok(count)) return;
  const again = await redraw();
  expect(Math.abs(again - p * n), `${count}, then ${again} of ${n} (expected ${p * n} ± ${threeSigma(n, p).toFixed(1)})`).toBeLessThanOrEqual(threeSigma(n, p));
}


export { syntheticSnapshot as bigSnapshot } from '../src/index.js';
