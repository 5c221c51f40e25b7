// A reviews server for the demo: answers on $MESH_ADDRESS:9080 (set by `meshctl run`) with its version.
// VERSION, DELAY_MS and ERROR_EVERY (answer 503 to every Nth request) make the canary visibly different.
import { createServer } from 'node:http';

const version = process.env.VERSION ?? 'v1';
const delayMs = Number(process.env.DELAY_MS ?? 0);
const errorEvery = Number(process.env.ERROR_EVERY ?? 0);
const host = process.env.MESH_ADDRESS || '127.0.0.1';
const port = Number(process.env.PORT ?? 9080);
let n = 0;

const server = createServer((req, res) => {
  n++;
  const status = errorEvery > 0 && n % errorEvery === 0 ? 503 : 200;
  setTimeout(() => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ version, request: n }) + '\n');
  }, delayMs);
});
server.listen(port, host, () => console.log(`reviews ${version} listening on ${host}:${port}`));
for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => server.close(() => process.exit(0)));
