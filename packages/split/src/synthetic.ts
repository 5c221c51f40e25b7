/** Synthetic snapshots of a given size, for capacity planning, scale tests and benchmarks. */
import type { Snapshot } from './model.js';

/**
 * `n` routed services, each split 90/10 by an HTTPRoute over two backend Services of `perBackend` endpoints
 * (3n Services in all). Every address is in 127.0.0.0/8: VIPs never leave the machine.
 */
export function syntheticSnapshot(n: number, perBackend: number): Snapshot {
  const ip = (i: number, base: number) => `127.${base + ((i >> 16) & 0xff)}.${(i >> 8) & 0xff}.${i & 0xff}`;
  const svc = (name: string, vip: string) => ({
    kind: 'Service' as const,
    metadata: { name, namespace: 'default' },
    spec: { clusterIP: vip, ports: [{ port: 80, protocol: 'TCP' as const }] },
  });
  const s: Snapshot = { services: [], endpointSlices: [], httpRoutes: [] };
  for (let i = 0; i < n; i++) {
    const name = `svc-${i}`;
    s.services.push(svc(name, ip(i, 10)));
    for (const [v, vipBase, epBase] of [['a', 20, 40], ['b', 30, 60]] as const) {
      s.services.push(svc(`${name}-${v}`, ip(i, vipBase)));
      s.endpointSlices.push({
        kind: 'EndpointSlice',
        metadata: { name: `${name}-${v}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': `${name}-${v}` } },
        addressType: 'IPv4',
        endpoints: Array.from({ length: perBackend }, (_, j) => ({ addresses: [ip(i * perBackend + j, epBase)], conditions: { ready: true } })),
        ports: [{ port: 8080, protocol: 'TCP' }],
      });
    }
    s.httpRoutes.push({
      kind: 'HTTPRoute',
      metadata: { name, namespace: 'default' },
      spec: {
        parentRefs: [{ kind: 'Service', group: '', name, port: 80 }],
        rules: [{ backendRefs: [{ name: `${name}-a`, port: 80, weight: 90 }, { name: `${name}-b`, port: 80, weight: 10 }] }],
      },
    });
  }
  return s;
}
