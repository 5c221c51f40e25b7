// The consumer's JS cost per stream, offline: the packed ring batches h2-capture.mjs recorded, fed to a fresh
// H2Streams (packages/metrics/dist) per repetition; prints the median CPU ns per stream (this process's CPU: less moved by other load than wall time) and the streams counted.
// Run: node bench/metrics/h2-replay.mjs FILE [reps]  (add --cpu-prof to see where the time goes)
import { readFileSync } from 'node:fs';

// H2_REPLAY_DIST=DIR: H2Streams from DIR/h2/streams.js (a copy of packages/metrics/dist inside packages/metrics,
// where its imports resolve), to compare two builds in turn.
const { H2Streams } = process.env.H2_REPLAY_DIST ? await import(`${process.env.H2_REPLAY_DIST}/h2/streams.js`) : await import('@mesh/metrics');

import { median } from '../lib.mjs';

const [file, repsArg = '15'] = process.argv.slice(2);
const raw = readFileSync(file);
const batches = [];
for (let at = 0; at < raw.length; ) {
  const n = raw.readUInt32LE(at);
  batches.push(raw.subarray(at + 4, at + 4 + n));
  at += 4 + n;
}
const times = [];
let streams = 0;
for (let i = 0; i < Number(repsArg); i++) {
  const s = new H2Streams();
  const c0 = process.cpuUsage();
  s.packed(batches);
  const { http } = s.read();
  const c = process.cpuUsage(c0);
  const ns = (c.user + c.system) * 1000;
  streams = http.filter((x) => x.direction === 'server').reduce((a, x) => a + x.count, 0);
  times.push(ns / streams);
}
console.log(`${streams} streams: ${median(times).toFixed(1)} ns per stream (median of ${times.length}; min ${Math.min(...times).toFixed(1)})`);
