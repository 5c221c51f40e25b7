/** Helpers for the mTLS datapath's kernel tests: a stand-in for the data plane's outbound listener, servers
 *  that name themselves, and a dialler run inside test cgroups. */
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Cgroup } from '@mesh/testkit';
import { expect } from 'vitest';

export const dialScript = fileURLToPath(new URL('../fixtures/dial.mjs', import.meta.url));

export interface Dialled {
  line: string | null;
  peer: string | null;
  local: string | null;
  error: string | null;
}

/** A TCP server that writes its name and a newline to each connection; `onAccept` sees each socket first. */
export interface NamedServer {
  name: string;
  host: string;
  port: number;
  accepted: number;
  close(): Promise<void>;
}

export async function namedServer(name: string, host: string, onAccept?: (s: Socket) => void): Promise<NamedServer> {
  const sockets = new Set<Socket>();
  const srv: Server = createServer((s) => {
    out.accepted++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    onAccept?.(s);
    s.end(`${name}\n`);
  });
  srv.listen(0, host);
  await once(srv, 'listening');
  const out: NamedServer = {
    name,
    host,
    port: (srv.address() as { port: number }).port,
    accepted: 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => srv.close(r));
    },
  };
  return out;
}

/** `count` connections from a process in `cg` to host:port, one after another. */
export async function dial(cg: Cgroup, host: string, port: number, count: number): Promise<Dialled[]> {
  const r = await cg.run(process.execPath, [dialScript, host, String(port), String(count)], { timeoutMs: 60_000 });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Dialled[];
}
