// bench:mtls: what workload identities cost — SVIDs issued per second (ECDSA P-256 key + certificate signed by
// the built-in CA), the CPU of one mutual TLS 1.3 handshake pair with these certificates (both ends in this
// process, so the process CPU is the pair's), with and without the X509-SVID checks on both sides (and with them
// through an SvidVerifier that reuses a verdict for a chain it accepted before), against
// plain TCP connect+accept in the same loop. Arms interleaved per repetition. Writes bench/results/mtls.json.
// `--quick`: tiny sizes, prints and writes nothing (a check that the bench runs).
import { once } from 'node:events';
import { createServer as createTcpServer, connect as tcpConnect } from 'node:net';
import { createSecureContext, createServer, connect } from 'node:tls';
import { loadavg } from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { BuiltinCa, SvidVerifier, TrustBundleSet, tlsClientOptions, tlsServerOptions, validateSvid, verifyPeer, workloadSpiffeId } from '@mesh/mtls';

import { cleanup, header, median, onCleanup, round, writeResult } from '../lib.mjs';

const quick = process.argv.includes('--quick');
const params = quick
  ? { issueBatch: 20, issueReps: 2, concurrency: 8, handshakes: 20, handshakeReps: 2, validations: 50 }
  : { issueBatch: 200, issueReps: 7, concurrency: 8, handshakes: 200, handshakeReps: 7, validations: 1000 };
const loadBefore = loadavg()[0];
const TD = 'bench.mesh.local';

const state = mkdtempSync(join(tmpdir(), 'bench-mtls-'));
onCleanup(() => rmSync(state, { recursive: true, force: true }));
const ca = await BuiltinCa.open({ stateDir: state, trustDomain: TD });
const bundles = new TrustBundleSet([await ca.bundle()]);
const cpuMs = (u) => (u.user + u.system) / 1000;

/** Issues `n` SVIDs with at most `inFlight` at once: wall time and process CPU. */
async function issueBatch(n, inFlight) {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      await ca.issue(workloadSpiffeId(TD, 'bench', `sa-${i}`), { ttlMs: 3_600_000 });
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return { wallMs: performance.now() - t0, cpuMs: cpuMs(process.cpuUsage(c0)) };
}

// Handshakes: one server per arm, listening on loopback; each connection opened, completed, and closed in turn.
const web = await ca.issue(workloadSpiffeId(TD, 'default', 'web'), { ttlMs: 3_600_000 });
const api = await ca.issue(workloadSpiffeId(TD, 'default', 'api'), { ttlMs: 3_600_000 });
const serverOpts = await tlsServerOptions(web, bundles);
const clientBase = await tlsClientOptions(api, bundles);
const clientCtx = createSecureContext(clientBase);
const clientOpts = { secureContext: clientCtx, checkServerIdentity: clientBase.checkServerIdentity, minVersion: 'TLSv1.3' };

async function listen(server) {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  onCleanup(() => server.close());
  return server.address().port;
}

/** Arms: each returns a function that makes one connection (handshake done, one byte back) and closes it. */
const tcpPort = await listen(createTcpServer((s) => s.end('x')));
const tlsPort = await listen(createServer(serverOpts, (s) => s.end('x')).on('tlsClientError', () => {}));
const svidPort = await listen(
  createServer(serverOpts, (s) => {
    void verifyPeer(s, bundles).then((r) => {
      if (!r.ok) throw new Error(`server rejected the client: ${r.reason}`);
      s.end('x');
    });
  }).on('tlsClientError', () => {}),
);
// The same checks through an SvidVerifier per side: after the first connection, each side's verdict is reused.
const serverVerifier = new SvidVerifier(bundles);
const clientVerifier = new SvidVerifier(bundles);
const cachedPort = await listen(
  createServer(serverOpts, (s) => {
    void verifyPeer(s, bundles, {}, serverVerifier).then((r) => {
      if (!r.ok) throw new Error(`server rejected the client: ${r.reason}`);
      s.end('x');
    });
  }).on('tlsClientError', () => {}),
);
const oneConnection = (open, check) =>
  new Promise((resolve, reject) => {
    const s = open();
    s.once('error', reject);
    s.once(open === openTcp ? 'connect' : 'secureConnect', () => {
      Promise.resolve(check?.(s)).then(() => s.once('data', () => { s.destroy(); resolve(); }), reject);
    });
  });
const openTcp = () => tcpConnect(tcpPort, '127.0.0.1');
const arms = {
  tcp: () => oneConnection(openTcp),
  mtls: () => oneConnection(() => connect({ ...clientOpts, host: '127.0.0.1', port: tlsPort })),
  mtls_svid_checks: () =>
    oneConnection(
      () => connect({ ...clientOpts, host: '127.0.0.1', port: svidPort }),
      async (s) => {
        const r = await verifyPeer(s, bundles);
        if (!r.ok) throw new Error(`client rejected the server: ${r.reason}`);
      },
    ),
  mtls_svid_checks_cached: () =>
    oneConnection(
      () => connect({ ...clientOpts, host: '127.0.0.1', port: cachedPort }),
      async (s) => {
        const r = await verifyPeer(s, bundles, {}, clientVerifier);
        if (!r.ok) throw new Error(`client rejected the server: ${r.reason}`);
      },
    ),
};

async function handshakeBlock(arm, n) {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) await arms[arm]();
  return { wallUsPerConn: ((performance.now() - t0) * 1000) / n, cpuUsPerConn: (cpuMs(process.cpuUsage(c0)) * 1000) / n };
}

// Warm-up: JIT, OpenSSL's tables, the first imports of keys.
await issueBatch(10, 1);
for (const arm of Object.keys(arms)) await handshakeBlock(arm, 20);

const raw = { issue_sequential: [], issue_concurrent: [], handshake: { tcp: [], mtls: [], mtls_svid_checks: [], mtls_svid_checks_cached: [] } };
for (let rep = 0; rep < Math.max(params.issueReps, params.handshakeReps); rep++) {
  if (rep < params.issueReps) {
    raw.issue_sequential.push(await issueBatch(params.issueBatch, 1));
    raw.issue_concurrent.push(await issueBatch(params.issueBatch, params.concurrency));
  }
  if (rep < params.handshakeReps) {
    // Rotate the arm order each repetition so drift touches every arm alike.
    const order = Object.keys(arms);
    for (let k = 0; k < rep % order.length; k++) order.push(order.shift());
    for (const arm of order) raw.handshake[arm].push(await handshakeBlock(arm, params.handshakes));
  }
}

// The X509-SVID checks alone, per chain (what each side adds to a handshake).
const der = new Uint8Array(api.certificate.rawData);
const c0 = process.cpuUsage();
for (let i = 0; i < params.validations; i++) {
  const r = await validateSvid([der], bundles);
  if (!r.ok) throw new Error(r.reason);
}
const validateCpuUs = (cpuMs(process.cpuUsage(c0)) * 1000) / params.validations;

const perSecond = (b) => (params.issueBatch * 1000) / b.wallMs;
const hs = Object.fromEntries(
  Object.entries(raw.handshake).map(([arm, xs]) => [arm, { cpu_us_per_pair: round(median(xs.map((x) => x.cpuUsPerConn)), 1), wall_us_per_pair: round(median(xs.map((x) => x.wallUsPerConn)), 1) }]),
);
const result = {
  ...header('mtls', loadBefore),
  params,
  note: 'The machine is shared with other engineers: read machine.loadavg1m before the second digit.',
  units: {
    svids_per_second: 'SVIDs (fresh P-256 key + leaf signed by the built-in CA root) per second of wall time',
    cpu_us_per_pair: 'process CPU (user+sys, includes libuv threadpool work) per connection with both ends in this process: one client + one server handshake',
  },
  issuance: {
    svids_per_second_sequential: round(median(raw.issue_sequential.map(perSecond)), 1),
    svids_per_second_concurrent: round(median(raw.issue_concurrent.map(perSecond)), 1),
    cpu_ms_per_svid: round(median(raw.issue_sequential.map((b) => b.cpuMs / params.issueBatch)), 3),
  },
  handshake: {
    ...hs,
    // What mutual TLS 1.3 with these certificates costs over a plain TCP connection, per pair of ends.
    mtls_over_tcp_cpu_us: round(hs.mtls.cpu_us_per_pair - hs.tcp.cpu_us_per_pair, 1),
    svid_checks_over_mtls_cpu_us: round(hs.mtls_svid_checks.cpu_us_per_pair - hs.mtls.cpu_us_per_pair, 1),
    cached_svid_checks_over_mtls_cpu_us: round(hs.mtls_svid_checks_cached.cpu_us_per_pair - hs.mtls.cpu_us_per_pair, 1),
    ratio_mtls_to_tcp_cpu: round(hs.mtls.cpu_us_per_pair / hs.tcp.cpu_us_per_pair, 2),
  },
  validate_svid_cpu_us_per_chain: round(validateCpuUs, 1),
  raw,
};
await ca.bundle();
cleanup();
if (quick) {
  console.log(JSON.stringify({ issuance: result.issuance, handshake: result.handshake, validate: result.validate_svid_cpu_us_per_chain }, null, 2));
} else {
  console.log(`wrote ${writeResult('mtls', result)}`);
  console.log(JSON.stringify({ issuance: result.issuance, handshake: result.handshake, validate: result.validate_svid_cpu_us_per_chain, load: result.machine.loadavg1m }, null, 2));
}
process.exit(0);
