// Listeners handed over by fd (--listen-fd, as the agent hands them): the data plane serves on them, a
// connection made while no data plane runs waits in the inherited listener and is accepted by the next one
// (also after a data plane was killed), and an fd that is not a listening socket bound where the config says is
// refused at start, naming the fd.
import { connect, type Socket } from 'node:net';
import { mkdtempSync, openSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';

import { afterAll, beforeAll, expect, it } from 'vitest';
import { closeFd, listeningAddress, listenTcp } from '@mesh/bpf';
import { capturedOutput, describePrivileged, ProcessTracker, waitForExit, waitForLine } from '@mesh/testkit';

import { DATAPLANE, Dataplane, get, loopbackNet, missingDataplane } from './harness.js';

const missing = missingDataplane();

describePrivileged('mesh-dataplane --listen-fd', () => {
  const tracker = new ProcessTracker('listen-fd');
  const ip = loopbackNet();
  let dir: string;
  let fd: number;
  let port: number;
  const socks: Socket[] = [];

  beforeAll(() => {
    if (missing) throw new Error(missing);
    dir = mkdtempSync(join(tmpdir(), 'dp-listen-fd-'));
    fd = listenTcp(ip(1), 0);
    port = listeningAddress(fd)!.port;
  });
  afterAll(async () => {
    for (const s of socks) s.destroy();
    await tracker.close();
    if (fd !== undefined) closeFd(fd);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const config = (tunnel: string) => {
    const path = join(dir, `dp-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(path, JSON.stringify({ tunnel, stats: `${ip(1)}:0`, workloads: [] }));
    return path;
  };
  const start = (path: string, given: number, args = ['--listen-fd', 'tunnel=3']): ChildProcess =>
    tracker.spawn(DATAPLANE, ['--config', path, ...args], { stdio: ['ignore', 'pipe', 'pipe', given] });
  // Connections the data plane accepted on its inbound side, once it reaches `want` (its accept and a scrape
  // can come in either order within one turn of its loop), or what it counted after 5 s.
  const accepted = async (child: ChildProcess, want: number) => {
    const m = await waitForLine(child, /listening outbound=\S+ tunnel=\S+ stats=(\S+) workers=\d+ inherited=tunnel/, 30_000);
    const stats = m[1]!;
    const i = stats.lastIndexOf(':');
    let n = -1;
    for (let tries = 0; tries < 50 && n !== want; tries++) {
      if (tries) await new Promise((r) => setTimeout(r, 100));
      const res = await get({ host: stats.slice(0, i), port: Number(stats.slice(i + 1)), path: '/metrics' });
      n = Dataplane.sample(res.body.toString(), 'mesh_dataplane_connections_total', 'role="inbound"');
    }
    return n;
  };
  const dialQueued = () =>
    new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: ip(1), port }, () => resolve(s));
      s.on('error', reject);
      socks.push(s);
    });

  it('connections made while no data plane runs wait in the inherited listener for the next one, also after a kill', async () => {
    await dialQueued(); // the kernel completes it: the listener is open here, nobody accepts yet
    const first = start(config(`${ip(1)}:${port}`), fd);
    expect(await accepted(first, 1)).toBe(1);
    first.kill('SIGKILL');
    await waitForExit(first, 20_000);
    await dialQueued(); // the dead data plane's listener is still open (ours): queued, not refused
    const second = start(config(`${ip(1)}:${port}`), fd);
    expect(await accepted(second, 1)).toBe(1);
    second.kill('SIGKILL');
    await waitForExit(second, 20_000);
  });

  it('refuses an fd bound elsewhere, one that is not a listening socket, and a malformed --listen-fd, naming it', async () => {
    const exits = async (child: ChildProcess, code: number, msg: RegExp) => {
      await waitForExit(child, 20_000);
      expect(child.exitCode).toBe(code);
      expect(capturedOutput(child).stderr).toMatch(msg);
    };
    await exits(start(config(`${ip(1)}:${port === 65535 ? 1 : port + 1}`), fd), 1, new RegExp(`--listen-fd tunnel=3: bound to ${ip(1).replaceAll('.', '\\.')}:${port}, the config says`));
    const file = join(dir, 'not-a-socket');
    writeFileSync(file, '');
    const ffd = openSync(file, 'r');
    try {
      await exits(start(config(`${ip(1)}:${port}`), ffd), 1, /--listen-fd tunnel=3: not a listening socket/);
    } finally {
      closeSync(ffd);
    }
    await exits(start(config(`${ip(1)}:${port}`), fd, ['--listen-fd', 'tunnel']), 2, /--listen-fd "tunnel": expected outbound=FD or tunnel=FD/);
  });
});
