// sockmap, sockhash and sk_storage from user space, with real TCP sockets of this process (loopback).
import { describePrivileged } from '@mesh/testkit';
import { once } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { BpfMap, codec as c, socketCookie, socketFd, type BpfObject } from '../../src/index.js';
import { connState, sockKey, testprog, testprogs } from '../programs.js';

const names = testprogs.sock_track;

describePrivileged('socket maps', () => {
  let server: Server;
  const accepted: Socket[] = [];
  let obj: BpfObject;

  beforeAll(async () => {
    server = createServer((s) => accepted.push(s)).listen(0, '127.0.0.1');
    await once(server, 'listening');
    obj = testprog(names.name).load();
  });
  afterAll(async () => {
    obj?.close();
    accepted.forEach((s) => s.destroy());
    await new Promise((r) => server.close(r));
  });

  async function dial(): Promise<Socket> {
    const addr = server.address() as { port: number };
    const s = connect(addr.port, '127.0.0.1');
    await once(s, 'connect');
    return s;
  }

  it('sockmap: a socket fd goes in, its cookie comes out; delete removes it', async () => {
    const m = obj.map(names.maps.sock_map, { key: c.u32, value: c.u64 });
    const s = await dial();
    try {
      m.set(3, BigInt(socketFd(s)));
      expect(m.get(3)).toBe(socketCookie(s));
      expect(m.get(4)).toBeUndefined();
      expect(m.delete(3)).toBe(true);
      expect(m.get(3)).toBeUndefined();
      // A non-socket fd is refused by the kernel.
      const file = openSync('/dev/null', 'r');
      try {
        expect(() => m.set(0, BigInt(file))).toThrow(expect.objectContaining({ op: 'map_update', code: 'ENOTSOCK' }));
      } finally {
        closeSync(file);
      }
    } finally {
      s.destroy();
    }
  });

  it('sockhash: keyed by a struct; a closed socket leaves the map by itself', async () => {
    const m = obj.map(names.maps.sock_hash, { key: sockKey, value: c.u64 });
    const s = await dial();
    const key = { family: 2, localIp: Buffer.alloc(16), remoteIp: Buffer.alloc(16, 1), localPort: 1, remotePort: 2 };
    m.set(key, BigInt(socketFd(s)));
    expect(m.get(key)).toBe(socketCookie(s));
    s.destroy();
    await once(s, 'close');
    // The kernel unlinks a socket from sockmaps when it closes.
    for (let i = 0; i < 50 && m.get(key) !== undefined; i++) await new Promise((r) => setTimeout(r, 10));
    expect(m.get(key)).toBeUndefined();
  });

  it('sk_storage: per-socket values keyed by fd, gone with the socket', async () => {
    const m = obj.map(names.maps.conn_state, { key: c.i32, value: connState });
    const a = await dial();
    const b = await dial();
    const st = { cookie: 1n, establishedNs: 2n, msgBytes: 3, msgCount: 4, role: 1 };
    m.set(socketFd(a), st);
    expect(m.get(socketFd(a))).toEqual(st);
    expect(m.get(socketFd(b))).toBeUndefined();
    // Iteration is not defined for socket storage: the kernel says so.
    expect(() => [...m.keys()]).toThrow(expect.objectContaining({ op: 'map_next_key' }));
    const fdA = socketFd(a);
    a.destroy();
    b.destroy();
    await once(a, 'close');
    // The fd number is closed now: the storage is unreachable (EBADF), never another socket's.
    expect(() => m.get(fdA)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  it('a sockmap cannot be created with a value that is not a socket slot', () => {
    expect(() => BpfMap.create({ type: 'sockmap', maxEntries: 4 }, { key: c.u32, value: c.u16 })).toThrow(
      expect.objectContaining({ op: 'map_create', code: 'EINVAL' }),
    );
  });
});
