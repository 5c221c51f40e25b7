// meshctl stat with HTTP/2 and gRPC: h2load (h2c) against a node:http2 server in web-a, and @grpc/grpc-js calls
// against a gRPC server in web-b, all from the client workload. Each protocol has rows of its own, gRPC one per
// method, and their counts and success rates are what the clients saw.
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { capturedOutput, describePrivileged, ensureTool, waitForExit, waitForLine } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { meshEnvPerTest, splitConfig, testNet } from './harness.js';

const NET = testNet();
const fixture = (f: string) => fileURLToPath(new URL(`../../../../packages/metrics/test/fixtures/${f}`, import.meta.url));
// h2load visits the URIs round robin per client.
const PATHS = ['/s/200', '/s/404', '/s/200', '/s/503'];
const REQUESTS = 400;
// gRPC calls: Method:code:count (grpc-client.mjs), OK / NOT_FOUND / UNAVAILABLE.
const PLAN = 'Say:0:30,Say:5:10,Watch:0:6,Watch:14:4';

interface Row {
  direction: string;
  source: string;
  destination: string;
  protocol: string;
  rpc: string;
  requests: number;
  successRate: number;
}

async function output(child: ChildProcess, timeoutMs: number): Promise<string> {
  const code = await waitForExit(child, timeoutMs);
  const { stdout, stderr } = capturedOutput(child);
  expect(code, stderr).toBe(0);
  return stdout;
}

describePrivileged('meshctl stat: HTTP/2 and gRPC rows', () => {
  const newEnv = meshEnvPerTest();

  it('rows per protocol and gRPC method agree with what the clients did', async () => {
    const h2load = ensureTool('h2load');
    const e = await newEnv();
    e.writeConfig(splitConfig(NET, [1, 1]));
    await e.startAgent();

    const web = e.meshRun('web-a', [process.execPath, fixture('h2-status-server.mjs'), `${NET}.0.1`]);
    const grpc = e.meshRun('web-b', [process.execPath, fixture('grpc-server.mjs'), `${NET}.0.2`]);
    const webPort = (JSON.parse((await waitForLine(web, /^\{.*\}$/, 15_000))[0]) as { port: number }).port;
    const grpcPort = (JSON.parse((await waitForLine(grpc, /^\{.*\}$/, 15_000))[0]) as { port: number }).port;

    const urls = Array.from({ length: 4 }, (_, i) => `http://${NET}.0.1:${webPort}${PATHS[i]}`);
    const load = await output(e.meshRun('client', [h2load, '-n', String(REQUESTS), '-c', '2', '-m', '4', ...urls]), 60_000);
    const m = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(load);
    expect(m, load).not.toBeNull();
    const [ok, , notFound, unavailable] = m!.slice(1).map(Number) as [number, number, number, number];
    expect(ok + notFound + unavailable).toBe(REQUESTS);
    expect(unavailable).toBeGreaterThan(0);

    const calls = JSON.parse(await output(e.meshRun('client', [process.execPath, fixture('grpc-client.mjs'), `${NET}.0.2:${grpcPort}`, PLAN]), 60_000)) as Record<string, number>;
    expect(calls).toEqual({ 'Say/0': 30, 'Say/5': 10, 'Watch/0': 6, 'Watch/14': 4 });

    // Let the agent take a sample after the load (it samples every 2 s while watched, and at each query).
    await new Promise((r) => setTimeout(r, 2500));
    const stat = JSON.parse((await e.meshctl(['stat', '--window', '60', '--json'])).stdout) as { pairs: Row[] };
    const rows = (direction: string) =>
      stat.pairs
        .filter((p) => p.direction === direction && p.requests > 0)
        .map((p) => [p.source, p.destination, p.protocol, p.rpc, p.requests, p.successRate]);
    const want = [
      ['default/client', 'default/web-a', 'HTTP/2', '', REQUESTS, (REQUESTS - unavailable) / REQUESTS],
      // gRPC: a call succeeds with grpc-status OK.
      ['default/client', 'default/web-b', 'gRPC', 'mesh.test.Echo/Say', 40, 30 / 40],
      ['default/client', 'default/web-b', 'gRPC', 'mesh.test.Echo/Watch', 10, 6 / 10],
    ];
    expect(rows('client')).toEqual(want);
    // The clients do not bind their workload's address: the servers see 127.0.0.1, a peer the mesh does not know.
    expect(rows('server')).toEqual(want.map(([, ...rest]) => ['unknown', ...rest]));

    const table = (await e.meshctl(['stat', '--window', '60'])).stdout;
    expect(table).toMatch(/SIDE\s+SOURCE\s+DESTINATION\s+SERVICE\s+PROTOCOL\s+RPC\s+REQS\s+RPS\s+SUCCESS\s+P50\s+P95\s+P99/);
    expect(table).toMatch(new RegExp(`client\\s+default/client\\s+default/web-a\\s+-\\s+HTTP/2\\s+-\\s+${REQUESTS}\\s`));
    expect(table).toMatch(/server\s+unknown\s+default\/web-b\s+-\s+gRPC\s+mesh\.test\.Echo\/Say\s+40\s+\S+\s+75\.00%/);
  });
});
