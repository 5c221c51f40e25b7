// User-space cost of HTTP/2 header decoding per block (packages/metrics/src/h2): what the agent pays per HTTP/2
// response or trailers block once the kernel hands it the frames. Not a test, not a result file: prints figures.
//
// Blocks come from a real encoder: a node:http2 (nghttp2) server and client on 127.0.0.1, the server→client bytes
// recorded by a TCP relay. Two shapes, 2,000 responses each on one connection: "rest" (:status from a mix of 200,
// 404, 503, 201; content-type, content-length, date, a per-response x-request-id) and "grpc" (response HEADERS
// + trailers with grpc-status / grpc-message). Each repetition decodes the whole sequence with fresh decoders
// (the dynamic table must follow the connection), through HeaderDirection (reassembly + HPACK + signals) and
// through HpackDecoder alone with an empty sink. Run: npx tsc -b packages/metrics && node bench/metrics/h2-decode.mjs
import http2 from 'node:http2';
import net from 'node:net';

import { median } from '../lib.mjs';
import { HeaderDirection } from '../../packages/metrics/dist/h2/direction.js';
import { FrameReader, FrameType, HeaderBlockAssembler } from '../../packages/metrics/dist/h2/frames.js';
import { HpackDecoder } from '../../packages/metrics/dist/h2/hpack.js';

const N = 2000;
const REPS = 31;

async function capture(onStream) {
  const server = http2.createServer();
  server.on('stream', onStream);
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const down = [];
  const sockets = [];
  const relay = net.createServer((client) => {
    const up = net.connect(server.address().port, '127.0.0.1');
    sockets.push(client, up);
    client.on('data', (d) => up.write(d));
    up.on('data', (d) => {
      down.push(d);
      client.write(d);
    });
    client.on('error', () => {});
    up.on('error', () => {});
  });
  await new Promise((r) => relay.listen(0, '127.0.0.1', r));
  const session = http2.connect(`http://127.0.0.1:${relay.address().port}`);
  for (let i = 0; i < N; i += 50) {
    await Promise.all(
      Array.from({ length: 50 }, (_, k) =>
        new Promise((resolve, reject) => {
          const req = session.request({ ':method': 'POST', ':path': `/api/items/${i + k}`, 'content-type': 'application/json' });
          req.on('error', reject);
          req.resume();
          req.on('end', resolve);
          req.end('{}');
        }),
      ),
    );
  }
  await new Promise((r) => session.close(r));
  for (const s of sockets) s.destroy();
  await new Promise((r) => relay.close(r));
  await new Promise((r) => server.close(r));
  const frames = [];
  const reader = new FrameReader((header, payload) => {
    if (header.type === FrameType.HEADERS || header.type === FrameType.CONTINUATION) frames.push({ header, payload: Buffer.from(payload) });
  });
  for (const d of down) reader.push(d);
  return frames;
}

const rest = await capture((stream, headers) => {
  const i = Number(String(headers[':path']).split('/')[3]);
  const status = [200, 200, 200, 404, 503, 201][i % 6];
  const body = JSON.stringify({ id: i, ok: status < 400 });
  stream.respond({ ':status': status, 'content-type': 'application/json; charset=utf-8', 'content-length': body.length, 'x-request-id': `7f3a9c${(i * 2654435761) % 1e9}` });
  stream.end(body);
});
const grpc = await capture((stream, headers) => {
  const i = Number(String(headers[':path']).split('/')[3]);
  stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-accept-encoding': 'identity,deflate,gzip' }, { waitForTrailers: true });
  stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': [0, 0, 5, 14][i % 4], 'grpc-message': i % 4 ? 'not found' : '' }));
  stream.end(Buffer.from([0, 0, 0, 0, 2, 8, 1]));
});

function timeDirection(frames) {
  const t0 = process.hrtime.bigint();
  const d = new HeaderDirection();
  let statuses = 0;
  for (const f of frames) {
    const b = d.frame(f.header, f.payload);
    if (b?.signals?.status !== undefined || b?.signals?.grpcStatus !== undefined) statuses++;
  }
  const ns = Number(process.hrtime.bigint() - t0);
  if (d.error || statuses !== frames.length) throw new Error(`decoding failed: ${d.error?.message ?? statuses}`);
  return ns / frames.length;
}

function timeHpack(frames) {
  const t0 = process.hrtime.bigint();
  const a = new HeaderBlockAssembler();
  const h = new HpackDecoder();
  const sink = () => {};
  for (const f of frames) {
    const b = a.push(f.header, f.payload);
    if (b) h.decode(b.block, sink);
  }
  return Number(process.hrtime.bigint() - t0) / frames.length;
}

const out = {};
for (const [name, frames] of [['rest', rest], ['grpc', grpc]]) {
  const bytes = frames.reduce((s, f) => s + f.payload.length, 0) / frames.length;
  const fields = (() => {
    const h = new HpackDecoder();
    for (const f of frames) h.decode(f.payload, () => {});
    return h.stats;
  })();
  for (let i = 0; i < 5; i++) timeDirection(frames), timeHpack(frames); // warm up the JIT
  const dir = [];
  const hp = [];
  for (let i = 0; i < REPS; i++) {
    dir.push(timeDirection(frames));
    hp.push(timeHpack(frames));
  }
  out[name] = {
    blocks: frames.length,
    octets_per_block: Number(bytes.toFixed(1)),
    fields_per_block: Number((fields.fields / fields.blocks).toFixed(2)),
    dynamic_hits_per_block: Number((fields.dynamicHits / fields.blocks).toFixed(2)),
    ns_per_block_direction: Math.round(median(dir)),
    ns_per_block_hpack_only: Math.round(median(hp)),
    min_ns_per_block_direction: Math.round(Math.min(...dir)),
  };
}
console.log(JSON.stringify({ node: process.version, reps: REPS, ...out }, null, 2));
