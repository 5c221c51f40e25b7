// The demo's client: RATE requests per second to URL for SECONDS seconds, one connection per request (the
// mesh picks a backend per connection), from $MESH_ADDRESS. Prints one JSON line per second and a summary.
import { request } from 'node:http';

const url = new URL(process.env.URL ?? 'http://127.10.0.1:9080/reviews');
const rate = Number(process.env.RATE ?? 50);
const seconds = Number(process.env.SECONDS ?? 30);
const localAddress = process.env.MESH_ADDRESS || undefined;
const total = Math.round(rate * seconds);
const seen = { ok: 0, failed: 0, byVersion: {}, byStatus: {} };

const once = () =>
  new Promise((resolve) => {
    const req = request({ host: url.hostname, port: url.port, path: url.pathname, agent: false, localAddress, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => {
        seen.byStatus[res.statusCode] = (seen.byStatus[res.statusCode] ?? 0) + 1;
        try {
          const v = JSON.parse(body).version;
          seen.byVersion[v] = (seen.byVersion[v] ?? 0) + 1;
        } catch {}
        seen.ok++;
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => {
      seen.failed++;
      resolve();
    });
    req.end();
  });

const start = Date.now();
const inflight = new Set();
for (let i = 0; i < total; i++) {
  const due = start + (i * 1000) / rate;
  const wait = due - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const p = once().then(() => inflight.delete(p));
  inflight.add(p);
  if ((i + 1) % rate === 0) console.log(JSON.stringify({ sent: i + 1, ...seen }));
}
await Promise.all(inflight);
console.log(JSON.stringify({ done: true, sent: total, ...seen }));
