/** A measured topology: a scratch cgroup with the metrics programs, an HTTP server and clients inside it. */
import { createCgroup, type Cgroup, waitForLine } from '@mesh/testkit';
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
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
