// The consumer's JS cost per stream, offline: the packed ring batches h2-capture.mjs recorded, fed to a fresh
// H2Streams (packages/metrics/dist) per repetition; prints the median CPU ns per stream (this process's CPU: less moved by other load than wall time) and the streams counted.
// Run: node bench/metrics/h2-replay.mjs FILE [reps]  (add --cpu-prof to see where the time goes)
import { readFileSync } from 'node:fs';

// H2_REPLAY_DIST=DIR: H2Streams from DIR/h2/streams.js (a copy of packages/metrics/dist inside packages/metrics,
// where its imports resolve), to compare two builds in turn.
const { H2Streams, H2_RECORD_HEADER } = process.env.H2_REPLAY_DIST ? await import(`${process.env.H2_REPLAY_DIST}/h2/streams.js`) : await import('@mesh/metrics');

import { median } from '../lib.mjs';

const [file, repsArg = '15'] = process.argv.slice(2);
const raw = readFileSync(file);
// The records' layout is the kernel's of the build that recorded them (see h2-capture.mjs): the same as this H2Streams' or nothing.
if (raw.toString('latin1', 0, 6) !== 'H2REC\0') throw new Error(`${file}: no H2REC header (recorded before the records' header size was written, with 96-byte headers); record it again with h2-capture.mjs`);
if (raw.readUInt16LE(6) !== H2_RECORD_HEADER) throw new Error(`${file}: recorded with ${raw.readUInt16LE(6)}-byte record headers, this H2Streams reads ${H2_RECORD_HEADER}-byte ones`);
const batches = [];
for (let at = 8; at < raw.length; ) {
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
