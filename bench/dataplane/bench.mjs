// bench:dataplane — what two mesh-dataplane processes (node A outbound → node B tunnel, mutual TLS 1.3) add to a
// loopback TCP connection, against the same client and server talking directly, in one run:
//   round-trip latency of 64-byte messages on one connection (p50/p99), and throughput of one connection.
// Arms alternate block by block (ABBA) so drift on a shared machine hits both alike. Not a test: numbers only.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { buildC, header, median, onCleanup, root, round, runCommand, writeResult } from '../lib.mjs';

const params = {
  rttBlocks: 8, // per arm
  rttRounds: 2000, // per block, one connection
  rttWarmup: 20, // first round trips of a block not recorded (connect, handshake)
  messageBytes: 64,
  bulkReps: 3, // per arm
  bulkBytes: 256 * 1024 * 1024,
};

const DATAPLANE = join(root, 'native/dataplane/build/mesh-dataplane');
if (!existsSync(DATAPLANE)) throw new Error(`${DATAPLANE} is missing: run bash scripts/build.sh`);
const loadBefore = loadavg()[0];
const pingpong = buildC('dataplane/pingpong.c', 'pingpong', ['-lpthread']);

const dir = mkdtempSync(join(tmpdir(), 'bench-dataplane-'));
onCleanup(() => rmSync(dir, { recursive: true, force: true }));
const net = `127.201.${Math.floor(Math.random() * 256)}`;
const ip = (h) => `${net}.${h}`;

async function openssl(...args) {
  const r = await runCommand('openssl', args);
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

// A root and two P-256 SVIDs (one URI SAN each).
async function certificates() {
  const f = (n) => join(dir, n);
  await openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('root.key'),
    '-out', f('root.pem'), '-days', '30', '-subj', '/CN=bench-root', '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign');
  const svid = async (name, id) => {
    writeFileSync(f(`${name}.ext`), `subjectAltName=URI:${id}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=critical,CA:FALSE\n`);
    await openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', f(`${name}.key`));
    await openssl('req', '-new', '-key', f(`${name}.key`), '-subj', `/CN=${name}`, '-out', f(`${name}.csr`));
    await openssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f('root.pem'), '-CAkey', f('root.key'), '-CAcreateserial',
      '-days', '30', '-extfile', f(`${name}.ext`), '-out', f(`${name}.pem`));
    return { cert: f(`${name}.pem`), key: f(`${name}.key`), bundle: f('root.pem') };
  };
  return {
    client: await svid('client', 'spiffe://cluster.local/ns/bench/sa/client'),
    server: await svid('server', 'spiffe://cluster.local/ns/bench/sa/server'),
  };
}

/** Start a long-running process; resolves with it and the first stdout line matching `re`. */
function startProcess(cmd, args, re) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    onCleanup(() => child.kill('SIGKILL'));
    const lines = createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error(`${cmd}: no line matching ${re} within 30 s`)), 30_000);
    lines.on('line', (l) => {
      const m = re.exec(l);
      if (m) {
        clearTimeout(timer);
        resolve({ child, m });
      }
    });
    child.once('exit', (code) => reject(new Error(`${cmd} exited with ${code}`)));
  });
}

function cpuNs(pid) {
  // utime + stime in clock ticks (fields 14, 15 after the command name).
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) * 1e7;
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function client(mode, target, extra) {
  const r = await runCommand(pingpong, [mode, target.host, String(target.port), ...extra], { timeoutMs: 300_000 });
  if (r.status !== 0) throw new Error(`pingpong ${mode}: ${r.stderr}`);
  return r.stdout.trim().split('\n');
}

const svids = await certificates();
const server = await startProcess(pingpong, ['server', ip(20), '0'], /^listening (\d+)/);
const target = { host: ip(20), port: Number(server.m[1]) };
const writeConfig = (name, cfg) => {
  const p = join(dir, `${name}.json`);
  writeFileSync(p, JSON.stringify(cfg));
  return p;
};
const listening = /listening outbound=(\S+) tunnel=(\S+) stats=(\S+)/;
const b = await startProcess(DATAPLANE, ['--config', writeConfig('b', {
  tunnel: `${ip(2)}:0`, workloads: [{ address: ip(20), ...svids.server }],
})], listening);
const a = await startProcess(DATAPLANE, ['--config', writeConfig('a', {
  outbound: `${ip(1)}:0`,
  workloads: [{ address: ip(10), ...svids.client }],
  destinations: [{ address: `${target.host}:${target.port}`, tunnel: b.m[2], spiffeId: 'spiffe://cluster.local/ns/bench/sa/server' }],
})], listening);
const [aHost, aPort] = a.m[1].split(':');

process.env.PINGPONG_FROM = ip(10);
const arms = {
  direct: { target, extra: [] },
  mesh: { target: { host: aHost, port: Number(aPort) }, extra: ['-p', `PROXY TCP4 ${ip(10)} ${target.host} 0 ${target.port}`] },
};
const order = (n) => Array.from({ length: n }, (_, i) => (i % 4 === 0 || i % 4 === 3 ? ['direct', 'mesh'] : ['mesh', 'direct'])).flat();

const rtt = { direct: [], mesh: [] };
for (const arm of order(params.rttBlocks)) {
  const lines = await client('rtt', arms[arm].target, [...arms[arm].extra, '-n', String(params.rttRounds + params.rttWarmup), '-m', String(params.messageBytes)]);
  rtt[arm].push(...lines.slice(params.rttWarmup).map(Number));
}

const bulk = { direct: [], mesh: [] };
const dpCpu = { ns: 0, bytes: 0 };
for (const arm of order(params.bulkReps)) {
  const cpu0 = cpuNs(a.child.pid) + cpuNs(b.child.pid);
  const [line] = await client('bulk', arms[arm].target, [...arms[arm].extra, '-b', String(params.bulkBytes)]);
  const [bytes, ns] = line.split(' ').map(Number);
  bulk[arm].push((bytes * 8) / ns); // Gbit/s
  if (arm === 'mesh') {
    dpCpu.ns += cpuNs(a.child.pid) + cpuNs(b.child.pid) - cpu0;
    dpCpu.bytes += bytes;
  }
}

const summary = {};
for (const arm of ['direct', 'mesh']) {
  const s = [...rtt[arm]].sort((x, y) => x - y);
  summary[arm] = {
    rtt_p50_us: round(quantile(s, 0.5) / 1e3, 1),
    rtt_p90_us: round(quantile(s, 0.9) / 1e3, 1),
    rtt_p99_us: round(quantile(s, 0.99) / 1e3, 1),
    rtt_samples: s.length,
    throughput_gbit_s: round(median(bulk[arm]), 2),
  };
}
const result = {
  ...header('dataplane', loadBefore),
  params,
  medians: summary,
  ratios: {
    rtt_p50_mesh_vs_direct: round(summary.mesh.rtt_p50_us / summary.direct.rtt_p50_us, 2),
    rtt_p99_mesh_vs_direct: round(summary.mesh.rtt_p99_us / summary.direct.rtt_p99_us, 2),
    throughput_mesh_vs_direct: round(summary.mesh.throughput_gbit_s / summary.direct.throughput_gbit_s, 2),
  },
  added: {
    rtt_p50_us: round(summary.mesh.rtt_p50_us - summary.direct.rtt_p50_us, 1),
    rtt_p99_us: round(summary.mesh.rtt_p99_us - summary.direct.rtt_p99_us, 1),
  },
  // CPU time of both data planes per GiB carried (both TLS ends: encrypt at A, decrypt at B).
  dataplane_cpu_s_per_gib: round(dpCpu.ns / 1e9 / (dpCpu.bytes / 2 ** 30), 3),
  raw: { throughput_gbit_s: bulk },
};
const file = writeResult('dataplane', result);
console.log(JSON.stringify({ machine: result.machine, medians: summary, ratios: result.ratios, added: result.added, dataplane_cpu_s_per_gib: result.dataplane_cpu_s_per_gib }, null, 2));
console.log(`written to ${file}`);
process.exit(0);
