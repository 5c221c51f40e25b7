/** The agent's page (apps/agent/ui/index.html, hand-written, served as is) and the graph document it polls. */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { EdgeHistory, graphView } from './graph.js';
import type { UiEndpoints } from './server.js';
import type { PairStats } from './stats.js';
import type { Applied } from './views.js';

export const UI_PAGE = new URL('../ui/index.html', import.meta.url);

/** Its inline script and style are allowed by hash: nothing else runs, and it reaches only this listener. */
export function loadPage(path: URL = UI_PAGE): UiEndpoints['page'] {
  const html = readFileSync(path, 'utf8');
  const hashes = (tag: string) =>
    [...html.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))].map((m) => `'sha256-${createHash('sha256').update(m[1]!).digest('base64')}'`).join(' ');
  return {
    html,
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': `default-src 'none'; connect-src 'self'; script-src ${hashes('script')}; style-src ${hashes('style')}; frame-ancestors 'none'; base-uri 'none'; form-action 'none'`,
      'x-content-type-options': 'nosniff',
      'cache-control': 'no-cache',
    },
  };
}

/** The page's endpoints over the agent's stats and its applied config; the history fills from each stats sample. */
export function uiEndpoints(stats: PairStats, applied: () => Applied | undefined, mtlsOn: () => boolean = () => false): UiEndpoints {
  const history = new EdgeHistory();
  stats.onSample((at, totals) => history.record(at, totals));
  const page = loadPage();
  return {
    page,
    graph: (q) => {
      const w = Number(q.get('window') ?? 10);
      const windowS = Number.isFinite(w) ? Math.min(60, Math.max(1, w)) : 10;
      return graphView(stats.query(windowS * 1000), applied(), history, mtlsOn());
    },
  };
}
