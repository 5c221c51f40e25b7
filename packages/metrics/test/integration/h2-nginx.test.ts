// nginx (Debian's, http2 on a cleartext listener: h2c with prior knowledge) as a second, independent HPACK encoder
// and HTTP/2 framer: 3,000 requests over one connection through the recording relay to locations answering
// statuses outside the static table (and some inside it); the decoded status of every stream is the one the
// client got.
import { ProcessTracker, ensureTool, waitForPort } from '@mesh/testkit';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { HeaderDirection } from '../../src/h2/direction.js';
import { FrameType } from '../../src/h2/frames.js';
import { frames, get, runCalls, startRelay } from '../h2-relay.js';
import { writeNginxConfig } from '../support.js';

const STATUSES = [200, 201, 204, 302, 404, 418, 429, 500, 503, 504];
const CALLS = 3000;

async function freePort(): Promise<number> {
  const s = createServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => s.once('listening', resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

describe('HPACK against nginx (h2c)', () => {
  const procs = new ProcessTracker('h2-nginx');
  let dir: string;
  let port: number;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mesh-h2-nginx-'));
    port = await freePort();
    const locations = STATUSES.map((s) => `    location = /s/${s} { return ${s} "status ${s}\\n"; }`).join('\n');
    const conf = writeNginxConfig(dir, {
      workerConnections: 64,
      http: [`keepalive_requests ${CALLS + 100}; # default 1000: nginx would send GOAWAY mid-run`],
      server: [`    listen 127.0.0.1:${port} http2;`, locations],
    });
    procs.spawn(ensureTool('nginx'), ['-p', dir, '-c', conf]);
    await waitForPort('127.0.0.1', port, 15_000);
  }, 30_000);
  afterAll(async () => {
    await procs.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(`${CALLS} responses on one connection: every decoded status is the one the client got`, async () => {
    const relay = await startRelay(port);
    const got = new Map<number, number>();
    try {
      await runCalls(relay.port, async (session, i) => {
        const r = await get(session, `/s/${STATUSES[i % STATUSES.length]}`);
        got.set(r.streamId, r.status);
      }, CALLS, 50);
    } finally {
      await relay.close();
    }
    expect(got.size).toBe(CALLS);

    const down = new HeaderDirection();
    const decoded = new Map<number, number | undefined>();
    let sizeUpdates = 0;
    for (const f of frames(relay.down, false)) {
      const b = down.frame(f.header, f.payload);
      if (b) decoded.set(b.streamId, b.signals?.status);
      if (f.header.type === FrameType.HEADERS && (f.payload[0]! & 0xe0) === 0x20) sizeUpdates++;
    }
    expect(down.error).toBeUndefined();
    expect(decoded).toEqual(got);
    expect(down.hpack.stats.blocks).toBe(CALLS);

    const up = new HeaderDirection();
    let requests = 0;
    for (const f of frames(relay.up, true)) if (up.frame(f.header, f.payload)?.signals?.method === 'GET') requests++;
    expect(up.error).toBeUndefined();
    expect(requests).toBe(CALLS);
    // Reported, not asserted: how this encoder differs from nghttp2's (nginx 1.22: it adds entries, never refers to them).
    console.log(`nginx: ${down.hpack.stats.dynamicHits} dynamic-table references, ${down.hpack.stats.inserted} insertions, ${sizeUpdates} blocks opening with a size update`);
  }, 60_000);
});
