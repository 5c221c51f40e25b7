// Endpoints computed from selectors and workloads, as the endpoints controller would from pods.
import { describe, expect, it } from 'vitest';

import { compile, endpointSlicesFor, type Service, validate, type WorkloadEndpoints } from '../../src/index.js';

const svc = (name: string, selector: Record<string, string>, targetPort: number | string): Service => ({
  kind: 'Service',
  metadata: { name, namespace: 'shop' },
  spec: { clusterIP: '127.0.0.50', clusterIPs: ['127.0.0.50', '::1'], selector, ports: [{ name: 'http', port: 80, targetPort }] },
});
const wl = (name: string, labels: Record<string, string>, addresses: string[], extra: Partial<WorkloadEndpoints['spec']> = {}): WorkloadEndpoints => ({
  metadata: { name, namespace: 'shop', labels },
  spec: { addresses, ports: [{ name: 'web', port: 9080 }], ...extra },
});

describe('endpointSlicesFor', () => {
  it('selects by every label, per namespace and family, resolving named target ports', () => {
    const workloads = [
      wl('a', { app: 'reviews', version: 'v1' }, ['127.0.0.2', '::1']),
      wl('b', { app: 'reviews', version: 'v2' }, ['127.0.0.3']),
      wl('c', { app: 'ratings' }, ['127.0.0.4']),
      { ...wl('d', { app: 'reviews', version: 'v1' }, ['127.0.0.5']), metadata: { name: 'd', namespace: 'other', labels: { app: 'reviews', version: 'v1' } } },
    ];
    const slices = endpointSlicesFor([svc('reviews-v1', { app: 'reviews', version: 'v1' }, 'web')], workloads);
    expect(slices.map((s) => [s.metadata.name, s.addressType, s.endpoints.map((e) => e.addresses[0]), s.ports])).toEqual([
      ['reviews-v1-v4', 'IPv4', ['127.0.0.2'], [{ name: 'http', port: 9080, protocol: 'TCP' }]],
      ['reviews-v1-v6', 'IPv6', ['::1'], [{ name: 'http', port: 9080, protocol: 'TCP' }]],
    ]);
    // And they compile into the service's backends.
    const compiled = compile(validate({ services: [svc('reviews-v1', { app: 'reviews', version: 'v1' }, 'web')], endpointSlices: slices, httpRoutes: [] }));
    expect(compiled.services.map((s) => [s.key, s.backends[0]!.endpoints])).toEqual([
      ['127.0.0.50|80|TCP', [{ addr: '127.0.0.2', port: 9080 }]],
      ['::1|80|TCP', [{ addr: '::1', port: 9080 }]],
    ]);
  });

  it('a workload that is not ready is listed but gets no connection; no selector means no computed slice', () => {
    const slices = endpointSlicesFor(
      [svc('r', { app: 'r' }, 9080), { ...svc('manual', {}, 80) }],
      [wl('a', { app: 'r' }, ['127.0.0.2']), wl('b', { app: 'r' }, ['127.0.0.3'], { ready: false })],
    );
    expect(slices.length).toBe(1);
    const c = compile(validate({ services: [svc('r', { app: 'r' }, 9080)], endpointSlices: slices, httpRoutes: [] }));
    expect(c.services[0]!.backends[0]!.endpoints).toEqual([{ addr: '127.0.0.2', port: 9080 }]);
  });
});
