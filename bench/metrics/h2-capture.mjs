// Records the h2_events ring's packed batches of a short h2load run against nginx (h2c), both ends in the mesh,
// as bench:metrics makes them, into a file that h2-replay.mjs feeds to H2Streams offline.
// Prints each thread's CPU per request over the run (OUT '-': nothing recorded, the consumer's cost as it is) and
// the programs' run time per request (BPF run-time statistics, on during the h2load run only).
// Run (root): node bench/metrics/h2-capture.mjs OUT [seconds]
// H2_CAPTURE_OBJECT=<http.bpf.o of another build>: its programs instead of this build's (their own constants'
// defaults), to compare the drain thread's CPU per request of two builds in turn.
// H2_CAPTURE_DIST=DIR: MetricsDatapath and H2Streams from DIR/index.js (a copy of packages/metrics/dist inside
// packages/metrics, where its imports resolve), for a build whose records this one's H2Streams does not read.
// OUT: "H2REC", a zero byte, the u16 record header size (struct h2_record: 32, 96 before the connection records),
// then each batch as a u32 length and its bytes.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { ObjectSpec } from '@mesh/bpf';

import { bpfRunTime, cleanup, inCgroup, onCleanup, runCommand, scratchCgroup } from '../lib.mjs';

const { MetricsDatapath, H2Streams, H2_RECORD_HEADER } = process.env.H2_CAPTURE_DIST ? await import(`${process.env.H2_CAPTURE_DIST}/index.js`) : await import('@mesh/metrics');

const [out, seconds = '2'] = process.argv.slice(2);
if (!out) throw new Error('usage: h2-capture.mjs OUT [seconds]');
const host = '127.0.0.18';
const port = 18440;
const cg = scratchCgroup('h2cap');
const dp = process.env.H2_CAPTURE_OBJECT ? new MetricsDatapath(ObjectSpec.file(process.env.H2_CAPTURE_OBJECT).setConstant('cell_epoch', 7).load()) : MetricsDatapath.load();
onCleanup(() => dp.close());
const links = dp.attach(cg);
const batches = [];
const packed = H2Streams.prototype.packed;
if (out !== '-') {
  H2Streams.prototype.packed = function (bs) {
    for (const b of bs) batches.push(Buffer.from(b));
    return packed.call(this, bs);
  };
}
// CPU time (user + system, clock ticks) of each of this process's threads, by name; `faults`: the event loop's
// minor page faults.
function threadTicks() {
  const t = {};
  const self = readFileSync('/proc/self/stat', 'utf8');
  t.faults = Number(self.slice(self.lastIndexOf(')') + 2).split(' ')[7]);
  for (const tid of readdirSync('/proc/self/task')) {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    const name = tid === String(process.pid) ? 'main' : stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    t[name] = (t[name] ?? 0) + Number(f[11]) + Number(f[12]);
  }
  return t;
}
dp.consumeH2();
const dir = mkdtempSync(join(tmpdir(), 'mesh-h2cap-'));
onCleanup(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, 'nginx.conf'), `daemon off; master_process off; worker_processes 1; pid ${dir}/pid; error_log ${dir}/error.log;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path ${dir}/b; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f; uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s;
  keepalive_requests 1000000000; keepalive_timeout 600s;
  server { listen ${host}:${port} http2; location / { return 200 "${'x'.repeat(1024)}"; } } }
`);
const [cmd, args] = inCgroup(cg, ['nginx', '-p', dir, '-c', join(dir, 'nginx.conf')]);
const child = spawn(cmd, args, { stdio: 'ignore' });
onCleanup(() => child.kill('SIGKILL'));
await sleep(500);
const [lc, la] = inCgroup(cg, ['h2load', '-t1', '-c16', '-m1', `-D${seconds}`, `http://${host}:${port}/`]);
// H2_CAPTURE_PROF=FILE: a CPU profile of this process over the h2load run only (not the load and setup).
let session;
if (process.env.H2_CAPTURE_PROF) {
  const { Session } = await import('node:inspector/promises');
  session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
}
const t0 = threadTicks();
const { result: r, programs } = await bpfRunTime(links, () => runCommand(lc, la, { timeoutMs: 60_000 }));
if (r.status !== 0) throw new Error(r.stdout + r.stderr);
await sleep(300);
const h = dp.readH2();
const t1 = threadTicks();
if (session) writeFileSync(process.env.H2_CAPTURE_PROF, JSON.stringify((await session.post('Profiler.stop')).profile));
const done = Number(/(\d+) done/.exec(r.stdout)?.[1]);
// Ticks are 10 ms: ns per request by thread; page faults per 1,000 requests.
console.log(Object.fromEntries(Object.entries(t1).map(([k, v]) => [k, Math.round(((v - (t0[k] ?? 0)) * (k === 'faults' ? 1000 : 1e7)) / done)]).filter(([, v]) => v)));
console.log(/requests: .*/.exec(r.stdout)?.[0], JSON.stringify(h.counters), JSON.stringify(dp.readCounters()));
// The programs' run time per request (every hook: both ends are in the mesh), and per program ns per run × runs per request.
const kernelNs = Object.values(programs).reduce((a, p) => a + p.ns, 0);
console.log(`kernel: ${Math.round(kernelNs / done)} ns per request (${Object.entries(programs).filter(([, p]) => p.runs).map(([n, p]) => `${n} ${Math.round(p.ns / p.runs)}×${(p.runs / done).toFixed(2)}`).join(', ')}); ring bytes per request ${h.counters.bytes === undefined ? '-' : Math.round((h.counters.bytes + 8 * h.counters.entries) / done)} (with the 8-byte ring header each)`);
if (out === '-') {
  cleanup();
  process.exit(0);
}
const len = Buffer.alloc(4);
const head = Buffer.alloc(8);
head.write('H2REC', 0, 'latin1');
head.writeUInt16LE(H2_RECORD_HEADER ?? 96, 6);
const parts = [head];
for (const b of batches) {
  len.writeUInt32LE(b.length);
  parts.push(Buffer.from(len), b);
}
writeFileSync(out, Buffer.concat(parts));
console.log(`${batches.length} batches, ${parts.reduce((a, p) => a + p.length, 0)} bytes -> ${out}`);
cleanup();
process.exit(0);
