// nginx (Debian's) as the server, hey as the client, both in the measured cgroup: exact counts per status.
import { describePrivileged, ensureTool, waitForPort } from '@mesh/testkit';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { byStatus, topology, type Topology, writeNginxConfig } from '../support.js';

const HOST = '127.0.0.17';
const PORT = 18417;

describePrivileged(
  'nginx',
  () => {
    let t: Topology;
    let dir: string;

    beforeAll(async () => {
      t = await topology('metnginx');
      dir = mkdtempSync(join(tmpdir(), 'mesh-nginx-'));
      const conf = writeNginxConfig(dir, {
        workerConnections: 256,
        server: [
          `    listen ${HOST}:${PORT};`,
          '    location /ok { return 200 "ok\\n"; }',
          '    location /missing { return 404; }',
          '    location /down { return 503; }',
        ],
      });
      t.cg.spawn(ensureTool('nginx'), ['-p', dir, '-c', conf]);
      await waitForPort(HOST, PORT, 15_000);
    });
    afterAll(async () => {
      await t?.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('600 requests each to a 200, a 404 and a 503 location: counted exactly, client and server side', async () => {
      // waitForPort's probe connection came from outside the cgroup: it is not measured.
      for (const path of ['ok', 'missing', 'down']) {
        const r = await t.cg.run(ensureTool('hey'), ['-n', '600', '-c', '6', `http://${HOST}:${PORT}/${path}`], { timeoutMs: 60_000 });
        expect(r.code, r.stderr).toBe(0);
      }
      const snap = t.dp.read();
      expect(byStatus(snap.http, 'client', PORT)).toEqual({ 200: 600, 404: 600, 503: 600 });
      expect(byStatus(snap.http, 'server', PORT)).toEqual({ 200: 600, 404: 600, 503: 600 });
    });
  },
  { tools: ['hey', 'nginx'] },
);
