// Done-when 3 of the agent: a real Prometheus server (Debian's package) scrapes the agent, and PromQL over what
// it scraped returns the traffic the test generated: the request rate while the load runs, and the exact count.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { describePrivileged } from '@mesh/testkit';
import { afterEach, expect, it } from 'vitest';

import { freePort, httpGet, meshEnvPerTest, runLoad, splitConfig, startBackends } from './harness.js';

const NET = '127.103';
const RATE = 50;
const SECONDS = 10;

interface PromVector {
  status: string;
  data: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
}

describePrivileged(
  'Prometheus scraping the agent',
  () => {
    const newEnv = meshEnvPerTest();
    let dir: string | undefined;
    afterEach(() => {
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('PromQL returns the request rate and the exact count of the generated traffic', async () => {
      const e = await newEnv();
      e.writeConfig(splitConfig(NET, [3, 1]));
      await e.startAgent();
      await startBackends(e);

      dir = mkdtempSync(join(tmpdir(), 'mesh-prom-'));
      const promPort = await freePort();
      writeFileSync(
        join(dir, 'prometheus.yml'),
        `global: { scrape_interval: 1s, evaluation_interval: 1s }\nscrape_configs:\n  - job_name: mesh\n    static_configs: [{ targets: ['${e.listen}'] }]\n`,
      );
      e.procs.spawn('prometheus', [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${promPort}`,
        '--log.level=warn',
      ], { stdio: ['ignore', 'pipe', 'pipe'] });
      const query = async (q: string) => {
        const r = await httpGet('127.0.0.1', promPort, `/api/v1/query?query=${encodeURIComponent(q)}`);
        expect(r.status, r.body).toBe(200);
        return (JSON.parse(r.body) as PromVector).data.result;
      };
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline) {
        const up = await query('up{job="mesh"}').catch(() => []);
        if (up[0]?.value[1] === '1') break;
        await sleep(250);
      }
      expect((await query('up{job="mesh"}'))[0]?.value[1]).toBe('1');

      let rateDuringLoad: number | undefined;
      const probe = (async () => {
        await sleep(7_000);
        const r = await query('sum(rate(http_client_request_duration_seconds_count{source_workload="client"}[5s]))');
        rateDuringLoad = Number(r[0]?.value[1]);
      })();
      const load = await runLoad(e, NET, RATE, SECONDS);
      await probe;
      expect(load.failed).toBe(0);
      // The rate Prometheus computed from the agent's counters is the load's rate.
      expect(rateDuringLoad).toBeGreaterThan(RATE * 0.6);
      expect(rateDuringLoad).toBeLessThan(RATE * 1.4);

      // After two more scrapes, the counters Prometheus holds are the traffic, exactly, per destination.
      await sleep(2_500);
      const total = await query('sum(http_client_request_duration_seconds_count{source_workload="client"})');
      expect(Number(total[0]?.value[1])).toBe(RATE * SECONDS);
      const byDest = await query('sum by (destination_workload) (http_server_request_duration_seconds_count)');
      const got = Object.fromEntries(byDest.map((s) => [s.metric.destination_workload, Number(s.value[1])]));
      expect(got).toEqual({ 'web-a': load.byBody.a, 'web-b': load.byBody.b });
      const ok = await query('sum(http_client_request_duration_seconds_count{source_workload="client",http_response_status_code="200",destination_service="web"})');
      expect(Number(ok[0]?.value[1])).toBe(RATE * SECONDS);
    });
  },
  { tools: ['prometheus'] },
);
