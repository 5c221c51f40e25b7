// The tunnel side connects to workloads from the configured inbound source address (the one source a STRICT
// port accepts, docs/capture.md), and counts each authorized connection by the client's and the workload's
// SPIFFE IDs; an inboundSource of the wrong family is refused, naming the field.
import { writeFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged, run } from '@mesh/testkit';
import { DATAPLANE, get, meshAgent, missingDataplane } from './harness.js';
import { CLIENT_ID, MARKER, SERVER_ID, startNodes, type Nodes } from './fixture.js';

const missing = missingDataplane();

describePrivileged('mesh-dataplane inbound source', () => {
  let n: Nodes;
  const peers: string[] = [];
  beforeAll(async () => {
    if (missing) throw new Error(missing);
    n = await startNodes({
      tweak: ({ ip, configB }) => {
        configB.inboundSource = { ipv4: ip(6) };
      },
    });
    n.backend.on('connection', (s: Socket) => peers.push(s.remoteAddress ?? ''));
  });
  afterAll(async () => {
    await n?.close();
  });

  it('connects to the workload from the inbound source; counts the connection by both SPIFFE IDs', async () => {
    const agent = meshAgent(n.a, n.client, n.target, 1);
    for (let i = 0; i < 5; i++) {
      const res = await get({ host: n.target.host, port: n.target.port, path: `/src-${i}`, agent });
      expect(res.body.toString()).toBe(`${MARKER} /src-${i}\n`);
    }
    agent.destroy();
    expect(peers.length).toBeGreaterThan(0);
    expect(new Set(peers)).toEqual(new Set([n.ip(6)]));
    const labels = `source_principal="${CLIENT_ID}",destination_principal="${SERVER_ID}"`;
    expect(await n.b.counter('mesh_dataplane_inbound_authorized_total', labels)).toBe(peers.length);
  });

  it('an inboundSource of the wrong family is refused, naming the field', async () => {
    const path = join(n.dir, 'bad-source.json');
    await writeFile(path, JSON.stringify({ ...n.configB, tunnel: `${n.ip(2)}:0`, stats: undefined, inboundSource: { ipv4: '::1' } }));
    const r = await run(DATAPLANE, ['--config', path, '--check'], { timeoutMs: 30_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('config.inboundSource.ipv4: expected an IPv4 address, got "::1"');
  });
});
