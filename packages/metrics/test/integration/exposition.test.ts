// Durations land in the right histogram buckets, and the scraped exposition passes promtool.
import { createCgroup, describePrivileged, ensureTool, type Cgroup } from '@mesh/testkit';
import { spawnSync } from 'node:child_process';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { BUCKET_BOUNDS_S, KernelMetrics } from '../../src/index.js';
import { startServer, topology, type Topology } from '../support.js';

const HOST = '127.0.0.14';

describePrivileged(
  'durations and exposition',
  () => {
    let t: Topology;
    let outside: Cgroup;
    let slow: number, fast: number;
    // The same servers outside the mesh: only the client's side is measured, by the client's own socket.
    let slowOut: number, fastOut: number;
    /** What hey itself measured per request (seconds, dial included), by port. */
    const heyTimes = new Map<number, number[]>();

    beforeAll(async () => {
      t = await topology('metexp');
      outside = await createCgroup('metexpout');
      slow = (await startServer(t.cg, HOST, [200], 50)).port;
      fast = (await startServer(t.cg, HOST, [200], 0)).port;
      slowOut = (await startServer(outside, HOST, [200], 50)).port;
      fastOut = (await startServer(outside, HOST, [200], 0)).port;
      for (const port of [slow, fast, slowOut, fastOut]) {
        const r = await t.cg.run(ensureTool('hey'), ['-n', '100', '-c', '4', '-o', 'csv', `http://${HOST}:${port}/`], { timeoutMs: 60_000 });
        expect(r.code, r.stderr).toBe(0);
        const rows = r.stdout.trim().split('\n').slice(1).map((l) => l.split(','));
        expect(rows.every((c) => c[6] === '200')).toBe(true);
        heyTimes.set(port, rows.map((c) => Number(c[0])));
      }
    });
    afterAll(async () => {
      await t?.close();
      await outside?.close();
    });

    const buckets = (port: number, direction: 'client' | 'server') => {
      const b = new Array<number>(15).fill(0);
      let sum = 0;
      for (const s of t.dp.read().http) {
        if (s.port !== port || s.direction !== direction) continue;
        s.buckets.forEach((x, i) => (b[i]! += x));
        sum += s.sumSeconds;
      }
      return Object.assign(b, { sum });
    };

    /** hey's own times as the kernel's buckets: counts per bucket (the last is +Inf). */
    const heyBuckets = (port: number) => {
      const b = new Array<number>(BUCKET_BOUNDS_S.length + 1).fill(0);
      for (const x of heyTimes.get(port)!) {
        const i = BUCKET_BOUNDS_S.findIndex((bound) => x <= bound);
        b[i < 0 ? BUCKET_BOUNDS_S.length : i]!++;
      }
      return b;
    };
    const cumulative = (b: number[]) => b.map((_, i) => b.slice(0, i + 1).reduce((a, x) => a + x, 0));

    it('durations lie within what the client measured: a 50 ms server\'s never below 0.05 s, and at every bound at least as many as hey saw there', () => {
      const views = [
        { dir: 'client', slow, fast },
        { dir: 'server', slow, fast },
        { dir: 'client', slow: slowOut, fast: fastOut },
      ] as const;
      for (const { dir, slow, fast } of views) {
        // Lower bounds are exact: a 50 ms wait cannot be measured shorter. Index 3 is (0.025, 0.05]: Node's timers
        // count whole milliseconds from the event loop's clock, so a 50 ms wait can end up to 1 ms early.
        const s = buckets(slow, dir);
        expect(s.slice(0, 3).reduce((a, x) => a + x, 0), `${dir} ${s}`).toBe(0);
        expect(s.reduce((a, x) => a + x, 0)).toBe(100);
        expect(s.sum / 100, `${dir} mean`).toBeGreaterThanOrEqual(0.049);
        // Upper bounds are what the client saw: each request's duration in the kernel (first request byte to
        // last response byte, on either side) lies inside hey's own measurement of it (dial included), so at
        // every bound the kernel has at least as many requests at or below it as hey has. A machine that makes
        // requests wait for a CPU moves both; a kernel that measured too long, or bucketed wrongly, breaks it.
        for (const [port, b] of [[slow, s], [fast, buckets(fast, dir)]] as const) {
          const kernel = cumulative(b);
          const client = cumulative(heyBuckets(port));
          kernel.forEach((k, i) => expect(k, `${dir} port ${port} at bound ${BUCKET_BOUNDS_S[i] ?? '+Inf'}: kernel ${b}, hey ${heyBuckets(port)}`).toBeGreaterThanOrEqual(client[i]!));
        }
        expect(s.sum / 100, `${dir} mean`).toBeLessThanOrEqual(heyTimes.get(slow)!.reduce((a, x) => a + x, 0) / 100);
        expect(buckets(fast, dir).reduce((a, x) => a + x, 0)).toBe(100);
      }
    });

    it('the scraped text passes promtool check metrics and carries the OTel names and labels', async () => {
      // Only the mesh's metrics: prom-client's own nodejs_* defaults carry names promtool lints.
      const registry = new Registry();
      new KernelMetrics(t.dp).register(registry);
      const text = await registry.metrics();
      const r = spawnSync(ensureTool('promtool'), ['check', 'metrics'], { input: text, encoding: 'utf8' });
      expect(`${r.stdout}${r.stderr}`.trim()).toBe('');
      expect(r.status).toBe(0);
      // Both servers run in one workload and are dialled from one address: one series of 200 requests.
      const line = new RegExp(`^http_server_request_duration_seconds_count\\{[^}]*http_request_method="GET"[^}]*http_response_status_code="200"[^}]*\\} 200$`, 'm');
      expect(text).toMatch(line);
      expect(text).toMatch(/^http_client_request_duration_seconds_bucket\{.*le="0.075".*\} \d+$/m);
      expect(text).toMatch(/^mesh_tcp_connections_opened_total\{/m);
      expect(text).toMatch(/^mesh_bpf_map_entries\{map="http_requests"\} \d+$/m);
    });

    it('a series cap merges what exceeds it into one overflow series and counts it', async () => {
      const registry = new Registry();
      // Name the served service by port, so the two servers are two series; the cap keeps one.
      const resolver = {
        local: (id: bigint, port: number) => ({ workload: `w${id}`, namespace: 'test', service: `svc-${port}` }),
        peer: (ip: string) => ({ workload: ip, namespace: 'test' }),
      };
      new KernelMetrics(t.dp, { maxSeries: 1, resolver }).register(registry);
      const text = await registry.metrics();
      const counts = [...text.matchAll(/^http_server_request_duration_seconds_count\{([^}]*)\} (\d+)$/gm)];
      // One series kept, one overflow series; no request lost between them.
      expect(counts.length).toBe(2);
      expect(counts.some(([, labels]) => labels!.includes('source_workload="_overflow"'))).toBe(true);
      expect(counts.reduce((a, m) => a + Number(m[2]), 0)).toBe(200);
      expect(text).toMatch(/^mesh_metrics_series_overflow_total [1-9]\d*$/m);
    });
  },
  { tools: ['hey', 'promtool'] },
);
