// Done-when 2 of issue 22: every panel query of deploy/grafana/mesh.json returns data from a real Prometheus
// (Debian's) scraping a running agent with traffic; the split panel's observed shares sit near the weights.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { describePrivileged } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { meshEnvPerTest, type PromSample, runLoad, splitConfig, startBackends, startPrometheus, testNet } from './harness.js';

const DASHBOARD = resolve(import.meta.dirname, '../../../../deploy/grafana/mesh.json');
const NET = testNet();
const WEIGHTS: [number, number] = [3, 1];
const RATE = 40;
const SECONDS = 30;
/** What the test puts for Grafana's interval macros: ten 1 s scrapes. */
const WINDOW = '10s';
/** web-b answers every FAIL_EVERY-th request with a 500: the error-share panels show 1/FAIL_EVERY for its pair. */
const FAIL_EVERY = 4;

interface Target {
  expr?: string;
  refId?: string;
  datasource?: unknown;
}
interface Panel {
  id?: number;
  type: string;
  title?: string;
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
}
interface Dashboard {
  schemaVersion: number;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: string | { query: string } }[] };
}

const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;

/** Every panel, those inside (collapsed) rows included. */
const allPanels = (ps: Panel[]): Panel[] => ps.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);

const CORE_PANELS = new Set(['row', 'timeseries', 'stat', 'bargauge', 'gauge', 'table', 'text', 'heatmap', 'piechart']);

it('the dashboard is well formed: schema ≥ 36, unique panel ids, core panels only, a DS_PROMETHEUS source on every panel and query', () => {
  expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
  const ds = dashboard.templating.list.find((v) => v.name === 'DS_PROMETHEUS');
  expect(ds).toMatchObject({ type: 'datasource', query: 'prometheus' });
  const panels = allPanels(dashboard.panels);
  const ids = panels.map((p) => p.id);
  expect(ids.every((id) => Number.isInteger(id))).toBe(true);
  expect(new Set(ids).size).toBe(ids.length);
  for (const p of panels) {
    expect(CORE_PANELS.has(p.type), `panel ${p.id} type ${p.type}`).toBe(true);
    if (p.type === 'row') continue;
    expect(p.datasource, `panel ${p.id} ${p.title}`).toEqual({ type: 'prometheus', uid: '${DS_PROMETHEUS}' });
    expect(p.targets?.length, `panel ${p.id} ${p.title} has no targets`).toBeGreaterThan(0);
    const refIds = p.targets!.map((t) => t.refId);
    expect(new Set(refIds).size, `panel ${p.id} refIds`).toBe(refIds.length);
    for (const t of p.targets!) {
      expect(t.expr?.trim(), `panel ${p.id} ${p.title} target ${t.refId}`).toBeTruthy();
      expect(t.datasource).toEqual(p.datasource);
    }
  }
  // A collapsed row's panels count: the walk reaches them.
  expect(dashboard.panels.some((p) => p.type === 'row' && (p.panels?.length ?? 0) > 0)).toBe(true);
});

describePrivileged(
  'the Grafana dashboard over a real Prometheus',
  () => {
    const newEnv = meshEnvPerTest();

    it('every panel query returns a finite series while traffic runs; the split panel shows the weights', async () => {
      const e = await newEnv();
      e.writeConfig(splitConfig(NET, WEIGHTS));
      await e.startAgent();
      await startBackends(e, { b: { FAIL_EVERY: String(FAIL_EVERY) } });
      const { query } = await startPrometheus(e);

      // Template variables, resolved as Grafana does (label_values), in order: each may use the ones before.
      const vars = new Map<string, string>();
      const substitute = (q: string) => {
        let out = q.replace(/\$\{?__(rate_interval|interval|range)\}?/g, WINDOW);
        for (const [name, value] of vars) out = out.replace(new RegExp(`\\$\\{?${name}\\}?(?![A-Za-z0-9_])`, 'g'), () => value);
        expect(out, `unresolved variable in ${q}`).not.toMatch(/\$/);
        return out;
      };
      const resolveVariables = async () => {
        vars.clear();
        for (const v of dashboard.templating.list) {
          if (v.type !== 'query') continue;
          const def = typeof v.query === 'string' ? v.query : v.query.query;
          const m = /^label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$/.exec(def);
          expect(m, `variable ${v.name}: ${def}`).not.toBeNull();
          const values = (await query(`group by (${m![2]}) (${substitute(m![1]!)})`)).map((s) => s.metric[m![2]!]!);
          expect(values.length, `variable ${v.name} has no values: ${def}`).toBeGreaterThan(0);
          // Escaped as Grafana escapes a regex value inside a PromQL string.
          vars.set(v.name, values.map((x) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\\\$&')).join('|'));
        }
      };

      const targets = allPanels(dashboard.panels).flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p, target: t })));
      const results = new Map<string, PromSample[]>();
      let started = 0;
      const probe = (async () => {
        // Wait until the rate windows hold the load: WINDOW plus a few scrapes.
        for (let i = 0; !started && i < 600; i++) await sleep(100);
        if (!started) throw new Error('the load did not start within 60 s');
        await sleep(Math.max(0, started + 15_000 - Date.now()));
        await resolveVariables();
        for (const { panel, target } of targets) results.set(`${panel.id}/${target.refId}`, await query(substitute(target.expr!)));
      })();
      const [load] = await Promise.all([runLoad(e, NET, RATE, SECONDS, () => (started = Date.now())), probe]);
      expect(load.ok + load.failed).toBe(load.sent);
      expect(load.errors.every((x) => x === 'status 500'), load.errors.join(', ')).toBe(true);
      // The only failures are web-b's 500s: every FAIL_EVERY-th request it served.
      expect(load.failed).toBe(Math.floor(((load.byBody.b ?? 0) + load.failed) / FAIL_EVERY));

      const empty: string[] = [];
      for (const { panel, target } of targets) {
        const r = results.get(`${panel.id}/${target.refId}`)!;
        if (!r.some((s) => Number.isFinite(Number(s.value[1])))) empty.push(`${panel.title} ${target.refId}: ${target.expr} → ${JSON.stringify(r)}`);
      }
      expect(empty, `panel queries without a finite value:\n${empty.join('\n')}`).toEqual([]);

      // The split panel: observed shares per destination workload within a loose band of the configured weights.
      const split = allPanels(dashboard.panels).find((p) => /split share/i.test(p.title ?? ''))!;
      const [observedQ, weightQ] = split.targets!;
      const total = WEIGHTS[0] + WEIGHTS[1];
      const want = { 'web-a': WEIGHTS[0] / total, 'web-b': WEIGHTS[1] / total };
      const observed = Object.fromEntries(results.get(`${split.id}/${observedQ!.refId}`)!.filter((s) => s.metric.destination_service === 'web').map((s) => [s.metric.destination_workload, Number(s.value[1])]));
      expect(Object.keys(observed).sort()).toEqual(['web-a', 'web-b']);
      for (const [w, share] of Object.entries(want)) expect(Math.abs(observed[w]! - share), `observed share of ${w}: ${observed[w]}`).toBeLessThan(0.15);
      const weight = Object.fromEntries(results.get(`${split.id}/${weightQ!.refId}`)!.filter((s) => s.metric.service === 'web').map((s) => [s.metric.backend, Number(s.value[1])]));
      expect(weight).toEqual(want);

      // The error-share panels, both sides: web-b's pair at 1/FAIL_EVERY, web-a's at 0.
      for (const side of ['client', 'server']) {
        const p = allPanels(dashboard.panels).find((x) => x.title === `Error share, 5xx (${side})`)!;
        const share = Object.fromEntries(results.get(`${p.id}/A`)!.filter((s) => s.metric.source_workload === 'client').map((s) => [s.metric.destination_workload, Number(s.value[1])]));
        expect(share['web-a'], `${side} ${JSON.stringify(share)}`).toBe(0);
        expect(Math.abs(share['web-b']! - 1 / FAIL_EVERY), `${side} ${JSON.stringify(share)}`).toBeLessThan(0.1);
      }
    });
  },
  { tools: ['prometheus'] },
);
