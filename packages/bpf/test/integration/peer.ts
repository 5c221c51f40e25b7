/** Drives fixtures/peer.mjs, a socket peer in another process (inside a test's cgroup), over its IPC channel. */
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';

import { capturedOutput, stopProcess } from '@mesh/testkit';

const PEER = fileURLToPath(new URL('./fixtures/peer.mjs', import.meta.url));
const START_TIMEOUT_MS = 10_000;
const CALL_TIMEOUT_MS = 10_000;

export interface ConnInfo {
  index: number;
  localAddress: string;
  localPort: number;
  /** As getpeername() returned it to the peer. */
  remoteAddress: string;
  remotePort: number;
}

export type UdpResult =
  | { data: string; fromAddress: string; fromPort: number }
  | { sendError: string }
  | { timedOut: true };

export interface Peer {
  readonly pid: number;
  listen(args: { host: string; port?: number; mode?: 'echo' | 'sink' }): Promise<{ port: number }>;
  serverStats(): Promise<{ accepted: number; open: number; received: number }>;
  connect(args: { host: string; port: number; count?: number; timeoutMs?: number }): Promise<ConnInfo[]>;
  /** One connect attempt: how it ended (an errno name, or 'TIMEOUT' when nothing happened within timeoutMs). */
  tryConnect(args: { host: string; port: number; timeoutMs: number }): Promise<{ connected: boolean; code?: string }>;
  write(args: { sizes: number[]; conn?: number }): Promise<{ bytes: number }>;
  /** Ends the connections and returns, per connection, what it received. */
  finish(args?: { conn?: number; timeoutMs?: number }): Promise<string[]>;
  /** A second fd for one of the peer's connections, in this process (SCM_RIGHTS through the IPC channel). */
  handOver(conn: number): Promise<Socket>;
  udpListen(args: { family: 4 | 6; host: string; port?: number }): Promise<{ port: number }>;
  /** Binds to `bind` (default: loopback of the family), then sends each payload and waits for its answer. */
  udpExchange(args: { family: 4 | 6; host: string; port: number; payloads: string[]; timeoutMs?: number; bind?: string }): Promise<{
    localPort: number;
    results: UdpResult[];
  }>;
  /** Stops the peer; safe to call twice. */
  close(): Promise<void>;
}

/** Where a peer runs: a testkit Cgroup or Netns, whose close() also stops the peer. */
export interface Spawner {
  spawn(cmd: string, args?: readonly string[], opts?: SpawnOptions): ChildProcess;
}

/** Starts a peer inside `where` (a cgroup: it has joined it before its first instruction). */
export async function startPeer(where: Spawner): Promise<Peer> {
  const child = where.spawn(process.execPath, [PEER], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  const pending = new Map<number, { resolve: (v: [unknown, Socket | undefined]) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  let exited = false;

  const failAll = (why: string) => {
    for (const p of pending.values()) p.reject(new Error(`peer ${child.pid}: ${why}${outputOf(child)}`));
    pending.clear();
  };
  child.on('message', (msg: { id?: number; ok?: boolean; result?: unknown; error?: { message: string; code?: string } }, handle?: Socket) => {
    const p = msg.id === undefined ? undefined : pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id!);
    if (msg.ok) p.resolve([msg.result, handle]);
    else p.reject(Object.assign(new Error(`peer: ${msg.error?.message}`), { code: msg.error?.code }));
  });
  child.once('exit', (code, signal) => {
    exited = true;
    failAll(`exited (${code ?? signal})`);
  });

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`peer did not start within ${START_TIMEOUT_MS} ms${outputOf(child)}`)), START_TIMEOUT_MS);
    child.once('message', () => {
      clearTimeout(timer);
      resolve();
    });
    child.once('exit', () => {
      clearTimeout(timer);
      reject(new Error(`peer exited before it was ready${outputOf(child)}`));
    });
  });

  const call = <T>(op: string, args: unknown = {}, timeoutMs = CALL_TIMEOUT_MS): Promise<[T, Socket | undefined]> => {
    if (exited) return Promise.reject(new Error(`peer ${child.pid} has exited`));
    const id = nextId++;
    return new Promise<[T, Socket | undefined]>((resolve, reject) => {
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`peer ${op}: no answer within ${timeoutMs} ms${outputOf(child)}`));
      }, timeoutMs);
      pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as [T, Socket | undefined]);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      child.send({ id, op, args });
    });
  };
  const value = async <T>(op: string, args?: unknown): Promise<T> => (await call<T>(op, args))[0];

  return {
    pid: child.pid!,
    listen: (a) => value('listen', a),
    serverStats: () => value('serverStats'),
    connect: (a) => value('connect', a),
    tryConnect: (a) => value('tryConnect', a),
    write: (a) => value('write', a),
    finish: (a) => value('finish', a),
    async handOver(conn) {
      const [, handle] = await call('handOver', { conn });
      if (!handle) throw new Error(`peer handOver ${conn}: no socket came with the answer`);
      return handle;
    },
    udpListen: (a) => value('udpListen', a),
    udpExchange: (a) => value('udpExchange', a),
    close: () => stopProcess(child),
  };
}

function outputOf(child: ChildProcess): string {
  const { stdout, stderr } = capturedOutput(child);
  const text = `${stdout}${stderr}`.trim();
  return text === '' ? '' : `; output:\n${text}`;
}
