// Done-when 3 of the agent: a real Prometheus server (Debian's package) scrapes the agent, and PromQL over what
// it scraped returns the traffic the test generated: the request rate while the load runs, and the exact count;
// the split programs' counters show the rewritten connects and the refused ones.
import { spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';

import { describePrivileged, ensureTool, waitForLine } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { meshEnvPerTest, runLoad, splitConfig, startBackends, startPrometheus, testNet } from './harness.js';

const NET = testNet();
const RATE = 50;
const SECONDS = 10;

describePrivileged(
  'Prometheus scraping the agent',
  () => {
    const newEnv = meshEnvPerTest();

    it('PromQL returns the request rate and the exact count of the generated traffic, and the split counters', async () => {
      const e = await newEnv();
      // Plus a service whose selector matches no workload: a connect() to it is refused in the kernel.
      e.writeConfig(splitConfig(NET, [3, 1], `---\napiVersion: v1\nkind: Service\nmetadata: { name: empty }\nspec: { clusterIP: ${NET}.1.9, selector: { app: nothing }, ports: [{ port: 8080 }] }\n`));
      await e.startAgent();
      await startBackends(e);

      const { query } = await startPrometheus(e);

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
      // The agent told the metrics programs which peers to name: the three workloads' addresses (the endpoints are
      // two of them); any other peer is "unknown".
      expect(Number((await query('mesh_bpf_map_entries{map="http_peers"}'))[0]?.value[1])).toBe(3);
      const ok = await query('sum(http_client_request_duration_seconds_count{source_workload="client",http_response_status_code="200",destination_service="web"})');
      expect(Number(ok[0]?.value[1])).toBe(RATE * SECONDS);

      // The split programs' counters: every request of the load was a new connection through the VIP, rewritten.
      const rewritten = await query('sum(mesh_split_connects_total{result="rewritten"})');
      expect(Number(rewritten[0]?.value[1])).toBeGreaterThanOrEqual(RATE * SECONDS);
      expect(Number((await query('sum(mesh_split_connects_total{result="refused"})'))[0]?.value[1])).toBe(0);
      // Three connects to the service without endpoints, from the client workload: refused (ECONNREFUSED, as a service proxy refuses), counted.
      const refuse = e.meshRun('client', [process.execPath, '-e', `
        const net = require('node:net');
        const codes = [];
        const next = () => net.connect(8080, '${NET}.1.9')
          .on('connect', () => { codes.push('connected'); done(); })
          .on('error', (err) => { codes.push(err.code); done(); });
        const done = () => (codes.length < 3 ? next() : console.log('codes ' + codes.join(',')));
        next();`]);
      const [line] = await waitForLine(refuse, /^codes .*$/, 10_000);
      expect(line).toBe('codes ECONNREFUSED,ECONNREFUSED,ECONNREFUSED');
      await sleep(2_500);
      expect(Number((await query('sum(mesh_split_connects_total{result="refused"})'))[0]?.value[1])).toBe(3);
      // The agent's own families pass promtool's lint (prom-client's nodejs_* defaults are left out: promtool lints
      // their names).
      const own = (await e.metrics()).split('\n').filter((l) => /^(# (HELP|TYPE) )?mesh_/.test(l)).join('\n') + '\n';
      expect(own).toMatch(/^mesh_split_connects_total\{result="refused"\} 3$/m);
      const lint = spawnSync(ensureTool('promtool'), ['check', 'metrics'], { input: own, encoding: 'utf8' });
      expect(`${lint.stdout}${lint.stderr}`.trim()).toBe('');
      expect(lint.status).toBe(0);
    });
  },
  { tools: ['prometheus'] },
);
