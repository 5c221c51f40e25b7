/**
 * The demo's topology (examples/single-host/mesh.yaml: productpage → reviews, split over reviews-v1 and
 * reviews-v2) on a test's own addresses, with its backends and a bounded fixed-rate client.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { waitForLine } from '@mesh/testkit';

import { BACKEND, EXAMPLES, LOAD, type LoadResult, type MeshEnv } from './harness.js';

/** The example's config on `net`'s addresses ("127.N", from testNet()) with the canary weighted `weights`. */
export function demoConfig(net: string, weights: [number, number]): string {
  const yaml = readFileSync(join(EXAMPLES, 'mesh.yaml'), 'utf8')
    .replaceAll('127.0.1.', `${net}.1.`)
    .replaceAll('127.0.2.', `${net}.2.`)
    .replaceAll('127.10.0.', `${net}.10.`)
    .replace('weight: 90', `weight: ${weights[0]}`)
    .replace('weight: 10', `weight: ${weights[1]}`);
  if (/127\.(0\.[12]|10\.0)\./.test(yaml) || !yaml.includes(`weight: ${weights[1]} }`)) throw new Error('examples/single-host/mesh.yaml changed: update demoConfig');
  return yaml;
}

/** reviews-v1 and reviews-v2 (answering "v1" and "v2" on port 9080), started through meshctl run. */
export async function startReviews(env: MeshEnv): Promise<void> {
  const started = ['v1', 'v2'].map((v) => env.meshRun(`reviews-${v}`, [process.execPath, BACKEND], { NAME: v, PORT: '9080' }));
  await Promise.all(started.map((c) => waitForLine(c, /^listening /, 10_000)));
}

/** productpage's fixed-rate load on the reviews VIP; resolves to its summary when done. */
export async function productpageLoad(env: MeshEnv, net: string, rate: number, seconds: number): Promise<{ started: number; done: Promise<LoadResult> }> {
  const child = env.meshRun('productpage', [process.execPath, LOAD], { URL: `http://${net}.10.1:9080/`, RATE: String(rate), SECONDS: String(seconds) });
  await waitForLine(child, /^started$/, 10_000);
  const started = Date.now();
  const done = waitForLine(child, /^\{.*\}$/, seconds * 1000 + 30_000).then((m) => JSON.parse(m[0]) as LoadResult);
  return { started, done };
}
