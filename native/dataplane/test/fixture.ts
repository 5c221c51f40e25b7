// Two nodes on loopback: node A's data plane (outbound) and node B's (tunnel) with a real node:http server
// behind B, and the certificates they use. Each suite gets its own /24 of 127/8 and its own temp dir.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo, Socket } from 'node:net';
import { ProcessTracker } from '@mesh/testkit';
import { loopbackNet, Pki, startDataplane, type Ca, type Dataplane, type DataplaneConfig, type Endpoint, type Svid } from './harness.js';

export const TD = 'spiffe://cluster.local';
export const CLIENT_ID = `${TD}/ns/default/sa/client`;
export const SERVER_ID = `${TD}/ns/default/sa/server`;

export interface Nodes {
  dir: string;
  tracker: ProcessTracker;
  pki: Pki;
  root: Ca;
  ip: (host: number) => string;
  /** The client workload's address on node A. */
  client: string;
  clientSvid: Svid;
  serverSvid: Svid;
  backend: Server;
  /** Where the backend listens: the server workload's address on node B. */
  target: Endpoint;
  /** Connections the backend accepted. */
  accepts: () => number;
  a: Dataplane;
  b: Dataplane;
  configA: DataplaneConfig;
  configB: DataplaneConfig;
  close: () => Promise<void>;
}

export const MARKER = 'PLAINTEXT-MARKER-7c1e';

/** Serves `/<anything>` with a body holding MARKER. */
function backendHandler(): Parameters<typeof createServer>[1] {
  return (req, res) => {
    const body = `${MARKER} ${req.url}\n`;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
}

export interface NodesOptions {
  /** Extra settings merged into the configs before start. */
  tweak?: (ctx: {
    ip: (host: number) => string;
    pki: Pki;
    root: Ca;
    configA: DataplaneConfig;
    configB: DataplaneConfig;
    target: Endpoint;
  }) => Promise<void> | void;
}

export async function startNodes(opts: NodesOptions = {}): Promise<Nodes> {
  const dir = await mkdtemp(join(tmpdir(), 'mesh-dataplane-'));
  const tracker = new ProcessTracker('mesh-dataplane test');
  const sockets = new Set<Socket>();
  let backend: Server | undefined;
  const close = async (): Promise<void> => {
    await tracker.close();
    for (const s of sockets) s.destroy();
    if (backend) await new Promise<void>((r) => backend!.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const ip = loopbackNet();
    const pki = new Pki(dir);
    const root = await pki.root('root');
    const clientSvid = await pki.svid(root, 'client', CLIENT_ID);
    const serverSvid = await pki.svid(root, 'server', SERVER_ID);
    let accepted = 0;
    const server = createServer(backendHandler());
    backend = server;
    server.on('connection', (s: Socket) => {
      accepted++;
      sockets.add(s);
      s.once('close', () => sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, ip(20), () => resolve());
    });
    const target = { host: ip(20), port: (server.address() as AddressInfo).port };

    const configB: DataplaneConfig = {
      tunnel: `${ip(2)}:0`,
      stats: `${ip(2)}:0`,
      workloads: [{ address: ip(20), spiffeId: SERVER_ID, ...serverSvid, bundle: root.cert }],
    };
    const configA: DataplaneConfig = {
      outbound: `${ip(1)}:0`,
      stats: `${ip(1)}:0`,
      workloads: [{ address: ip(10), spiffeId: CLIENT_ID, ...clientSvid, bundle: root.cert }],
      destinations: [],
    };
    await opts.tweak?.({ ip, pki, root, configA, configB, target });
    const b = await startDataplane(tracker, dir, 'node-b', configB);
    configB.tunnel = `${b.tunnel!.host}:${b.tunnel!.port}`;
    configB.stats = `${b.stats!.host}:${b.stats!.port}`;
    configA.destinations = [
      { address: `${target.host}:${target.port}`, tunnel: configB.tunnel, spiffeId: SERVER_ID },
      ...(configA.destinations ?? []).map((d) => ({ ...d, tunnel: d.tunnel === 'B' ? configB.tunnel! : d.tunnel })),
    ];
    const a = await startDataplane(tracker, dir, 'node-a', configA);
    configA.outbound = `${a.outbound!.host}:${a.outbound!.port}`;
    configA.stats = `${a.stats!.host}:${a.stats!.port}`;
    return {
      dir, tracker, pki, root, ip, client: ip(10), clientSvid, serverSvid, backend: server, target,
      accepts: () => accepted, a, b, configA, configB, close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}

/** Poll `fn` until it returns true; throws with `what` after `timeoutMs`. */
export async function eventually(what: string, fn: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Open fds of process `pid`. */
export async function fdsOf(pid: number): Promise<number> {
  const { readdir } = await import('node:fs/promises');
  return (await readdir(`/proc/${pid}/fd`)).length;
}
