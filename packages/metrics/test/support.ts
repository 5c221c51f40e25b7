/** A measured topology: a scratch cgroup with the metrics programs, an HTTP server and clients inside it. */
import { createCgroup, type Cgroup, ensureTool, waitForLine, waitForPort } from '@mesh/testkit';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { MetricsDatapath, type HttpSample, type MetricsOptions } from '../src/index.js';

export const serverScript = fileURLToPath(new URL('./fixtures/server.mjs', import.meta.url));

export interface Topology {
  cg: Cgroup;
  dp: MetricsDatapath;
  close(): Promise<void>;
}

export async function topology(prefix: string, opts: MetricsOptions = {}): Promise<Topology> {
  const cg = await createCgroup(prefix);
  const dp = MetricsDatapath.load(opts);
  try {
    dp.attach(cg.path);
  } catch (err) {
    dp.close();
    await cg.close();
    throw err;
  }
  return {
    cg,
    dp,
    close: async () => {
      dp.close();
      await cg.close();
    },
  };
}

/** Starts the fixture server inside the cgroup; resolves with its port. */
export async function startServer(cg: Cgroup, host: string, statuses: number[], delayMs = 0): Promise<{ port: number; child: ChildProcess }> {
  return startFixture(cg, 'server.mjs', [host, statuses.join(','), String(delayMs)]);
}

/** Starts a fixture script (test/fixtures/NAME) that prints {"port":N} inside the cgroup; resolves with its port. */
export async function startFixture(cg: Cgroup, name: string, args: string[]): Promise<{ port: number; child: ChildProcess }> {
  const child = cg.spawn(process.execPath, [fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url)), ...args]);
  const [line] = await waitForLine(child, /^\{"port":\d+\}$/, 15_000);
  return { port: (JSON.parse(line) as { port: number }).port, child };
}

/** Request counts per status for one direction and port. */
export function byStatus(samples: HttpSample[], direction: 'client' | 'server', port: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samples) if (s.direction === direction && s.port === port) out[s.status] = (out[s.status] ?? 0) + s.count;
  return out;
}

/** A test nginx's config in `dir` (one worker in the foreground, every file it writes under `dir`): `http` lines go
 *  in the http block, `server` lines (indented as they should appear) in its one server block. Returns its path. */
export function writeNginxConfig(dir: string, opts: { workerConnections: number; http?: string[]; server: string[] }): string {
  const path = join(dir, 'nginx.conf');
  writeFileSync(
    path,
    [
      'daemon off;',
      'master_process off;',
      'worker_processes 1;',
      `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/error.log;`,
      `events { worker_connections ${opts.workerConnections}; }`,
      'http {',
      '  access_log off;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/${t === 'client_body' ? 'body' : t};`),
      ...(opts.http ?? []).map((l) => `  ${l}`),
      '  server {',
      ...opts.server,
      '  }',
      '}',
      '',
    ].join('\n'),
  );
  return path;
}

/** nginx serving HTTP/2 on a cleartext listener (h2c, prior knowledge) at `host` on a free port, started by `by` (a
 *  cgroup, to be measured, or a ProcessTracker). `locations`: its server's location lines. `keepaliveRequests`:
 *  above a run's requests on one connection (nginx's default 1,000 would send GOAWAY mid-run). Returns its
 *  directory (the caller removes it) and port. */
export async function startNginxH2(
  by: { spawn(cmd: string, args: readonly string[]): ChildProcess },
  host: string,
  opts: { prefix: string; keepaliveRequests: number; locations: string },
): Promise<{ dir: string; port: number }> {
  const dir = mkdtempSync(join(tmpdir(), opts.prefix));
  const s = createServer().listen(0, host);
  await new Promise((resolve) => s.once('listening', resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise((resolve) => s.close(resolve));
  const conf = writeNginxConfig(dir, {
    workerConnections: 64,
    http: [`keepalive_requests ${opts.keepaliveRequests}; # default 1000: nginx would send GOAWAY mid-run`],
    server: [`    listen ${host}:${port} http2;`, opts.locations],
  });
  try {
    by.spawn(ensureTool('nginx'), ['-p', dir, '-c', conf]);
    await waitForPort(host, port, 15_000);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true }); // the caller has no directory to remove
    throw err;
  }
  return { dir, port };
}
