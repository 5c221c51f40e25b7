// Done-when 1 of issue 22: Debian's Chromium, headless, loads the agent's page from a running demo topology
// (productpage → reviews, split 90/10 over reviews-v1 and reviews-v2, a fixed-rate client); the DOM it built
// shows both edges, each edge's share within 3 sigma of its weight and their rate within 20 % of the client's.
// UI_SCREENSHOT=PATH keeps a screenshot of the page (docs/ui.png is made so).
import { setTimeout as sleep } from 'node:timers/promises';

import { describePrivileged } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { demoConfig, productpageLoad, startReviews } from './demo-topology.js';
import { httpGet, meshEnvPerTest, testNet, type MeshEnv } from './harness.js';

const NET = testNet();
const WEIGHTS: [number, number] = [90, 10];
const RATE = 40;
/** The page's window: long enough that reviews-v2's share is measured over ~120 requests. */
const WINDOW_S = 30;
const SECONDS = WINDOW_S + 20;

/** Chromium's arguments: headless, no first-run work, a profile of the test's own. */
const chromium = (env: MeshEnv, extra: string[], url: string) =>
  env.procs.run('chromium', ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--hide-scrollbars', `--user-data-dir=${env.tempDir('chromium')}`, ...extra, url], { timeoutMs: 60_000 });

/** The page's edges as the DOM shows them: the data attributes of each `<g class="edge">`. */
function edgesOf(dom: string): Record<string, string>[] {
  return [...dom.matchAll(/<g class="edge[^"]*"([^>]*)>/g)].map((m) => Object.fromEntries([...m[1]!.matchAll(/([a-z-]+)="([^"]*)"/g)].map((a) => [a[1]!, a[2]!])));
}

describePrivileged(
  "the agent's page in Debian's Chromium",
  () => {
    const newEnv = meshEnvPerTest();

    it('shows productpage → reviews-v1 and → reviews-v2 with shares near the weights and the client\'s rate', async () => {
      const e = await newEnv();
      e.writeConfig(demoConfig(NET, WEIGHTS));
      await e.startAgent();
      await startReviews(e);

      const page = await httpGet('127.0.0.1', e.port, '/');
      expect(page.status).toBe(200);
      expect(page.body).toMatch(/^<!doctype html>/);
      // What the browser loads is one small file.
      expect(page.body.length).toBeLessThan(20_000);

      const load = await productpageLoad(e, NET, RATE, SECONDS);
      await sleep(Math.max(0, load.started + (WINDOW_S + 5) * 1000 - Date.now()));
      const url = `http://127.0.0.1:${e.port}/?window=${WINDOW_S}`;
      const dump = await chromium(e, ['--virtual-time-budget=10000', '--dump-dom'], url);
      expect(dump.code, dump.stderr).toBe(0);
      if (process.env.UI_SCREENSHOT) {
        const shot = await chromium(e, ['--virtual-time-budget=10000', '--window-size=1100,620', `--screenshot=${process.env.UI_SCREENSHOT}`], `${url}&every=60000`);
        expect(shot.code, shot.stderr).toBe(0);
      }
      const result = await load.done;
      expect(result.failed, result.errors.join(', ')).toBe(0);

      const dom = dump.stdout;
      expect(dom).toContain('data-ready="true"');
      const edges = edgesOf(dom).filter((x) => x['data-source'] === 'productpage' && x['data-via'] === 'reviews');
      expect(edges.map((x) => x['data-destination']).sort(), dom.slice(0, 4000)).toEqual(['reviews-v1', 'reviews-v2']);
      const n = edges.reduce((a, x) => a + Number(x['data-requests']), 0);
      const total = WEIGHTS[0] + WEIGHTS[1];
      for (const [i, dest] of ['reviews-v1', 'reviews-v2'].entries()) {
        const x = edges.find((y) => y['data-destination'] === dest)!;
        const w = WEIGHTS[i]! / total;
        expect(Number(x['data-weight'])).toBeCloseTo(w, 6);
        const sigma = Math.sqrt((w * (1 - w)) / n);
        const share = Number(x['data-share']);
        expect(Math.abs(share - w), `${dest}: share ${share} of ${n} requests, weight ${w}, sigma ${sigma}`).toBeLessThan(3 * sigma);
        // Keyboard and screen readers: each edge is focusable and says what it shows.
        expect(x.tabindex).toBe('0');
        expect(x['aria-label']).toMatch(new RegExp(`^productpage to ${dest} via reviews, HTTP/1.1: [0-9.]+ requests per second, success 100.0%, p99 [0-9.]+ ms, share`));
      }
      const rps = edges.reduce((a, x) => a + Number(x['data-rps']), 0);
      expect(Math.abs(rps - RATE) / RATE, `the page's rate ${rps}/s, the client's ${RATE}/s`).toBeLessThan(0.2);
      // High contrast on request (?contrast=high; prefers-contrast: more needs no switch).
      const hc = await chromium(e, ['--virtual-time-budget=5000', '--dump-dom'], `${url}&contrast=high`);
      expect(hc.stdout).toMatch(/<html lang="en" class="hc">/);
      expect(hc.stdout).toMatch(/<button id="contrast" type="button" aria-pressed="true">/);
      // The table view carries the same edges, one focusable row each.
      expect([...dom.matchAll(/<tr tabindex="0" data-id="client\|[^"]*productpage\|[^"]*reviews-v[12]\|reviews"/g)]).toHaveLength(2);
    }, 150_000);

    it('--no-ui: no page and no graph on the metrics listener; /metrics still served', async () => {
      const e = await newEnv();
      e.writeConfig(demoConfig(NET, WEIGHTS));
      await e.startAgent(['--no-ui']);
      expect((await httpGet('127.0.0.1', e.port, '/')).status).toBe(404);
      expect((await httpGet('127.0.0.1', e.port, '/graph.json')).status).toBe(404);
      expect((await httpGet('127.0.0.1', e.port, '/metrics')).status).toBe(200);
    }, 60_000);
  },
  { tools: ['chromium'] },
);
