// Invalid snapshots are rejected whole, with a message naming the object, the field (with indexes) and
// what was expected; Gateway API rules decide what is reported in route status instead.
import { describe, expect, it } from 'vitest';

import { compile, SnapshotError, type Snapshot, validate } from '../../src/index.js';
import { route, service, slice, snapshot } from '../support.js';

const base = (): Snapshot =>
  snapshot({
    services: [service('reviews', '127.0.0.100', 80), service('reviews-v1', '127.0.0.101', 80), service('reviews-v2', '127.0.0.102', 80)],
    endpointSlices: [slice('reviews-v1', ['127.0.0.2'], 9080), slice('reviews-v2', ['127.0.0.3'], 9080)],
    httpRoutes: [route('reviews', 'reviews', 80, [['reviews-v1', 90], ['reviews-v2', 10]])],
  });

function problems(s: Snapshot): string[] {
  try {
    compile(validate(s));
  } catch (e) {
    expect(e).toBeInstanceOf(SnapshotError);
    return (e as SnapshotError).problems;
  }
  return [];
}

describe('rejected snapshots', () => {
  it.each([
    ['a negative weight', (s: Snapshot) => (s.httpRoutes[0]!.spec.rules![0]!.backendRefs![0]!.weight = -1),
      'HTTPRoute default/reviews: spec.rules[0].backendRefs[0].weight: must be an integer in [0, 1000000], got -1'],
    ['a fractional weight', (s: Snapshot) => (s.httpRoutes[0]!.spec.rules![0]!.backendRefs![1]!.weight = 2.5),
      'HTTPRoute default/reviews: spec.rules[0].backendRefs[1].weight: must be an integer in [0, 1000000], got 2.5'],
    ['a weight above the maximum', (s: Snapshot) => (s.httpRoutes[0]!.spec.rules![0]!.backendRefs![1]!.weight = 1_000_001),
      'HTTPRoute default/reviews: spec.rules[0].backendRefs[1].weight: must be an integer in [0, 1000000], got 1000001'],
    ['a VIP used by two Services', (s: Snapshot) => (s.services[1]!.spec.clusterIP = '127.0.0.100'),
      'Service default/reviews-v1: spec.ports[0]: 127.0.0.100:80/TCP is already the address of Service default/reviews'],
    ['a backendRef to a Service without a port', (s: Snapshot) => delete s.httpRoutes[0]!.spec.rules![0]!.backendRefs![0]!.port,
      'HTTPRoute default/reviews: spec.rules[0].backendRefs[0].port: is required when the backend is a Service'],
    ['a bad clusterIP', (s: Snapshot) => (s.services[0]!.spec.clusterIP = '10.0.0.300'),
      'Service default/reviews: spec.clusterIP: must be an IPv4 or IPv6 address, got "10.0.0.300"'],
    ['a port out of range', (s: Snapshot) => (s.services[0]!.spec.ports[0]!.port = 70000),
      'Service default/reviews: spec.ports[0].port: must be an integer in [1, 65535], got 70000'],
    ['an EndpointSlice without its service label', (s: Snapshot) => (s.endpointSlices[0]!.metadata.labels = {}),
      'EndpointSlice default/reviews-v1-1: metadata.labels["kubernetes.io/service-name"]: names the Service and is required'],
    ['an endpoint address of the wrong family', (s: Snapshot) => (s.endpointSlices[0]!.endpoints[0]!.addresses = ['fd00::1']),
      'EndpointSlice default/reviews-v1-1: endpoints[0].addresses[0]: must be an IPv4 address, got "fd00::1"'],
    ['a duplicate object', (s: Snapshot) => s.services.push(service('reviews', '127.0.0.103', 81)),
      'Service default/reviews: metadata.name: appears twice in the snapshot'],
    ['a name that is not a DNS name', (s: Snapshot) => (s.services[0]!.metadata.name = 'Reviews_V1'),
      'Service default/Reviews_V1: metadata.name: must be a DNS name (lower-case letters, digits, -)'],
    ['more than 16 backendRefs', (s: Snapshot) => (s.httpRoutes[0]!.spec.rules![0]!.backendRefs = Array.from({ length: 17 }, () => ({ name: 'reviews-v1', port: 80 }))),
      'HTTPRoute default/reviews: spec.rules[0].backendRefs: at most 16 entries, got 17'],
  ])('%s', (_name, mutate, message) => {
    const s = base();
    mutate(s);
    expect(problems(s)).toEqual([message]);
  });

  it('lists every problem, not just the first', () => {
    const s = base();
    s.httpRoutes[0]!.spec.rules![0]!.backendRefs![0]!.weight = -1;
    s.services[0]!.spec.ports[0]!.port = 0;
    expect(problems(s).length).toBe(2);
  });

  it('non-objects and wrong types are named, never crash', () => {
    const s = base();
    (s.services as unknown[]).push(null, 7, { kind: 'Service' });
    (s.httpRoutes[0]!.spec as { rules: unknown }).rules = [{ backendRefs: 'reviews-v1' }];
    const p = problems(s);
    expect(p).toContain('Service: not an object');
    expect(p).toContain('Service (no metadata): metadata.name: must be a DNS name (lower-case letters, digits, -)');
    expect(p).toContain('HTTPRoute default/reviews: spec.rules[0].backendRefs: must be a list');
  });
});

describe('route status per the Gateway API', () => {
  const conditions = (s: Snapshot) => compile(validate(s)).routes[0]!.parents[0]!.conditions.map((c) => `${c.type}=${c.status}/${c.reason}`);

  it('a valid split is Accepted and ResolvedRefs', () => {
    expect(conditions(base())).toEqual(['Accepted=True/Accepted', 'ResolvedRefs=True/ResolvedRefs']);
  });

  it('an unknown backend: ResolvedRefs False BackendNotFound; its share of connections is refused', () => {
    const s = base();
    s.httpRoutes[0]!.spec.rules![0]!.backendRefs![1]!.name = 'reviews-v3';
    expect(conditions(s)).toEqual(['Accepted=True/Accepted', 'ResolvedRefs=False/BackendNotFound']);
    const svc = compile(validate(s)).services.find((x) => x.service === 'default/reviews')!;
    expect(svc.backends.map((b) => [b.weight, b.endpoints.length])).toEqual([[90, 1], [10, 0]]);
  });

  it('a cross-namespace backend without a ReferenceGrant: RefNotPermitted', () => {
    const s = base();
    s.httpRoutes[0]!.spec.rules![0]!.backendRefs![1]!.namespace = 'other';
    expect(conditions(s)).toEqual(['Accepted=True/Accepted', 'ResolvedRefs=False/RefNotPermitted']);
  });

  it('a parent Service that does not exist: Accepted False NoMatchingParent', () => {
    const s = base();
    s.httpRoutes[0]!.spec.parentRefs![0]!.name = 'nope';
    expect(conditions(s)).toEqual(['Accepted=False/NoMatchingParent', 'ResolvedRefs=True/ResolvedRefs']);
  });

  it('all weights 0: Accepted, with the reason in the message; the service takes no connection', () => {
    const s = base();
    s.httpRoutes[0]!.spec.rules![0]!.backendRefs!.forEach((b) => (b.weight = 0));
    const c = compile(validate(s));
    expect(c.routes[0]!.parents[0]!.conditions[0]!.message).toMatch(/every backendRef has weight 0/);
    expect(c.services.find((x) => x.service === 'default/reviews')!.backends.map((b) => b.weight)).toEqual([0, 0]);
  });

  it('two routes on one Service port: the older wins, the newer is not accepted', () => {
    const s = base();
    s.httpRoutes[0]!.metadata.creationTimestamp = '2026-01-02T00:00:00Z';
    const newer = route('reviews-b', 'reviews', 80, [['reviews-v2', 1]]);
    newer.metadata.creationTimestamp = '2026-01-03T00:00:00Z';
    s.httpRoutes.push(newer);
    const c = compile(validate(s));
    const byRoute = Object.fromEntries(c.routes.map((r) => [r.route, r.parents[0]!.conditions[0]!.status]));
    expect(byRoute).toEqual({ 'default/reviews': 'True', 'default/reviews-b': 'False' });
    expect(c.services.find((x) => x.service === 'default/reviews')!.route).toBe('default/reviews');
  });

  it('a Service without a route sends to its own endpoints; SCTP ports are not served', () => {
    const s = base();
    s.httpRoutes = [];
    s.services[1]!.spec.ports.push({ name: 'sctp', port: 99, protocol: 'SCTP' });
    s.services[1]!.spec.ports[0]!.name = 'http';
    s.endpointSlices[0]!.ports![0]!.name = 'http';
    const c = compile(validate(s));
    const v1 = c.services.filter((x) => x.service === 'default/reviews-v1');
    expect(v1.map((x) => x.key)).toEqual(['127.0.0.101|80|TCP']);
    expect(v1[0]!.backends).toEqual([{ ref: 'default/reviews-v1:80', weight: 1, endpoints: [{ addr: '127.0.0.2', port: 9080 }] }]);
  });

  it('endpoints that are not ready get no connection', () => {
    const s = base();
    s.endpointSlices[0]!.endpoints.push({ addresses: ['127.0.0.9'], conditions: { ready: false } });
    const v1 = compile(validate(s)).services.find((x) => x.service === 'default/reviews-v1')!;
    expect(v1.backends[0]!.endpoints).toEqual([{ addr: '127.0.0.2', port: 9080 }]);
  });
});
