import { it } from 'vitest';
import { get, meshAgent } from './harness.js';
import { startNodes } from './fixture.js';
it('debug', async () => {
  const n = await startNodes();
  try {
    const agent = meshAgent(n.a, n.client, n.target, 1);
    try {
      const r = await get({ host: n.target.host, port: n.target.port, path: '/x', agent });
      console.log(r.status, r.body.toString());
    } catch (e) { console.log('ERR', e); }
    console.log((await n.a.scrape()).split('\n').filter((l) => !l.startsWith('#') && !l.endsWith(' 0')).join('\n'));
    console.log((await n.b.scrape()).split('\n').filter((l) => !l.startsWith('#') && !l.endsWith(' 0')).join('\n'));
  } finally { await n.close(); }
}, 60000);
