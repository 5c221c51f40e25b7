/** Servers in the test process and small helpers shared by the integration tests. */
import { createCgroup, type Cgroup } from '@mesh/testkit';
import dgram from 'node:dgram';
import { existsSync } from 'node:fs';
import { afterAll, expect } from 'vitest';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Socket } from 'node:net';

import { codec as c, liveHandles, type BpfMap } from '../../src/index.js';
import { AF_INET, AF_INET6 } from '../programs.js';

export interface LocalTcpServer extends AsyncDisposable {
  readonly port: number;
  /** Accepted sockets, open or not, in accept order. */
  readonly accepted: Socket[];
  /** Bytes read over all connections. */
  received(): number;
  close(): Promise<void>;
}

/**
 * A TCP server in this process. 'echo' writes back what it reads; 'sink' reads until the peer ends, then
 * answers with the byte count (ASCII) and ends — the same modes as the peer fixture's.
 */
export async function localTcpServer(host: string, mode: 'echo' | 'sink' = 'sink'): Promise<LocalTcpServer> {
  const accepted: Socket[] = [];
  let received = 0;
  const server = createServer((sock) => {
    accepted.push(sock);
    let n = 0;
    sock.on('error', () => {});
    sock.on('data', (d) => {
      n += d.length;
      received += d.length;
    });
    if (mode === 'echo') sock.pipe(sock);
    else sock.once('end', () => sock.end(String(n)));
  });
  server.listen(0, host);
  await once(server, 'listening');
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      for (const s of accepted) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    })());
  return {
    port: (server.address() as AddressInfo).port,
    accepted,
    received: () => received,
    close,
    [Symbol.asyncDispose]: close,
  };
}

export interface LocalUdpServer extends AsyncDisposable {
  readonly port: number;
  /** Source address and port of every datagram received, as recvfrom() saw them. */
  readonly sources: { address: string; port: number }[];
  close(): Promise<void>;
}

/** A UDP server in this process that answers every datagram with the same bytes. */
export async function localUdpEcho(family: 4 | 6, host: string): Promise<LocalUdpServer> {
  const sock = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
  const sources: { address: string; port: number }[] = [];
  sock.on('message', (msg, rinfo) => {
    sources.push({ address: rinfo.address, port: rinfo.port });
    sock.send(msg, rinfo.port, rinfo.address);
  });
  sock.bind(0, host);
  await once(sock, 'listening');
  let closing: Promise<void> | undefined;
  const close = () => (closing ??= new Promise<void>((resolve) => sock.close(() => resolve())));
  return { port: sock.address().port, sources, close, [Symbol.asyncDispose]: close };
}

/** `size` bytes of the stream pattern the peer fixture writes: the byte at stream offset o is 'a' + o % 26. */
export function pattern(from: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = 0x61 + ((from + i) % 26);
  return b;
}

/** An address as 16 bytes, IPv4 in the first 4: how struct sock_key holds both families. */
export function ip16(addr: string): Buffer {
  const b = Buffer.alloc(16);
  c.ipToBytes(addr).copy(b);
  return b;
}

/** The sock_key a sockops program builds for a socket with this local and remote end. */
export function sockKeyOf(local: { address: string; port: number }, remote: { address: string; port: number }) {
  return {
    family: local.address.includes(':') ? AF_INET6 : AF_INET,
    localIp: ip16(local.address),
    remoteIp: ip16(remote.address),
    localPort: local.port,
    remotePort: remote.port,
  };
}

/** Every slot of an array map of counters, as numbers. */
export function readArray(map: BpfMap<number, number>, n: number): number[] {
  return Array.from({ length: n }, (_, i) => map.get(i) ?? 0);
}

/**
 * Scratch cgroups for one test file: returns a function that makes one. After the file's tests, whatever
 * happened in them, every cgroup made must be gone and no native handle left open.
 */
export function scratchCgroups(prefix: string): () => Promise<Cgroup> {
  const made: string[] = [];
  const handlesAtStart = liveHandles();
  afterAll(() => {
    for (const path of made) expect(existsSync(path)).toBe(false);
    expect(liveHandles()).toBe(handlesAtStart);
  });
  return async () => {
    const cg = await createCgroup(prefix);
    made.push(cg.path);
    return cg;
  };
}
