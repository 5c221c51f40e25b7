// mesh_split_backend_weight: one series per routed service port and backend Service, read from the config in
// force at each scrape.
import type { CompiledService } from '../../src/compile.js';
import { Registry } from 'prom-client';
import { expect, it } from 'vitest';

import { registerSplitWeights } from '../../src/metrics.js';

const svc = (addr: string, port: number, service: string, backends: [string, number][], route?: string): CompiledService => ({
  key: `${addr}|${port}|TCP`,
  addr,
  family: addr.includes(':') ? 6 : 4,
  port,
  proto: 'TCP',
  service,
  route,
  backends: backends.map(([ref, weight]) => ({ ref, weight, endpoints: [] })),
});

it('exports each routed backend weight once (IPv4 and IPv6 of a port agree, two refs to one Service add up), none for unrouted services, and follows the config', async () => {
  const registry = new Registry();
  let services: CompiledService[] = [
    svc('10.0.0.1', 8080, 'shop/reviews', [['shop/reviews-v1:8080', 90], ['shop/reviews-v2:8080', 5], ['shop/reviews-v2:9090', 5]], 'shop/reviews-split'),
    svc('fd00::1', 8080, 'shop/reviews', [['shop/reviews-v1:8080', 90], ['shop/reviews-v2:8080', 5], ['shop/reviews-v2:9090', 5]], 'shop/reviews-split'),
    svc('10.0.0.2', 8080, 'shop/reviews-v1', [['shop/reviews-v1:8080', 1]]),
  ];
  registerSplitWeights(registry, () => services);
  const lines = async () => (await registry.metrics()).split('\n').filter((l) => l.startsWith('mesh_split_backend_weight{'));
  expect(await lines()).toEqual([
    'mesh_split_backend_weight{namespace="shop",service="reviews",port="8080",backend="reviews-v1"} 90',
    'mesh_split_backend_weight{namespace="shop",service="reviews",port="8080",backend="reviews-v2"} 10',
  ]);
  services = [svc('10.0.0.1', 8080, 'shop/reviews', [['shop/reviews-v2:8080', 1]], 'shop/reviews-split')];
  expect(await lines()).toEqual(['mesh_split_backend_weight{namespace="shop",service="reviews",port="8080",backend="reviews-v2"} 1']);
});
