// What the Kubernetes source keeps per object: the views of 10,000 Services and their EndpointSlices are most of
// the agent's heap in a big cluster (docs/kubernetes.md, "Memory"), so their size per object is held to a bound.
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { heapUsedAfterGc } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { endpointSliceView, serviceView } from '../../src/config/kubernetes/views.js';

/** Objects as the API server sends them (parsed JSON, as the client hands them to the informers). */
const service = (i: number): V1Service => JSON.parse(JSON.stringify({
  apiVersion: 'v1', kind: 'Service', metadata: { name: `s-${i}`, namespace: 'bench', resourceVersion: String(i) },
  spec: { clusterIP: `10.96.${i >> 8}.${i & 255}`, clusterIPs: [`10.96.${i >> 8}.${i & 255}`], ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }], selector: { app: `a-${i}` } },
}));
const slice = (i: number): V1EndpointSlice => JSON.parse(JSON.stringify({
  apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: `s-${i}-a`, namespace: 'bench', labels: { 'kubernetes.io/service-name': `s-${i}` } },
  addressType: 'IPv4', endpoints: Array.from({ length: 10 }, (_, e) => ({ addresses: [`10.60.${e}.${i & 255}`], conditions: { ready: true } })),
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
}));

it('a Service and its EndpointSlice of 10 endpoints take at most 1,750 bytes of heap as views', () => {
  const n = 20_000;
  const objects = Array.from({ length: n }, (_, i) => [service(i), slice(i)] as const);
  const before = heapUsedAfterGc();
  const views = objects.map(([s, e]) => [serviceView(s), endpointSliceView(e)] as const);
  const perPair = (heapUsedAfterGc() - before) / n;
  expect(views).toHaveLength(n);
  // Measured on Node 20: 2,436 bytes when each port object built with spreads had a hidden class of its own; 1,861
  // without spreads; 1,637 with equal port lists shared.
  expect(Math.round(perPair)).toBeLessThanOrEqual(1750);
  // Equal port lists are one frozen list.
  expect(views[1]![0]!.spec.ports).toBe(views[2]![0]!.spec.ports);
  expect(Object.isFrozen(views[1]![1]!.ports![0])).toBe(true);
  // The views still read as before.
  expect(views[7]![0]).toEqual({ apiVersion: 'v1', kind: 'Service', metadata: { name: 's-7', namespace: 'bench' }, spec: { clusterIP: '10.96.0.7', clusterIPs: ['10.96.0.7'], ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }], selector: { app: 'a-7' } } });
  expect(JSON.stringify(views[7]![1])).toBe(JSON.stringify({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 's-7-a', namespace: 'bench', labels: { 'kubernetes.io/service-name': 's-7' } }, addressType: 'IPv4', endpoints: Array.from({ length: 10 }, (_, e) => ({ addresses: [`10.60.${e}.7`], conditions: { ready: true } })), ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] }));
}, 60_000);
