// What the identity resolver keeps for the metrics' names of peers: at 10,000 Services of 10 endpoints on 50,000
// pod addresses (bench:agent's Kubernetes RSS case) it was ~6 MiB of the agent's heap.

import type { CompiledService } from '@mesh/split';
import { heapUsedAfterGc } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { ConfigResolver, knownAddressesOf } from '../../src/identity.js';

const heap = heapUsedAfterGc;

it('the resolver of 10,000 Services x 10 endpoints on 50,000 addresses holds at most 50 bytes per endpoint', async () => {
  const services: CompiledService[] = Array.from({ length: 10_000 }, (_, i) => ({
    key: `127.96.${i >> 8}.${i & 255}|80|TCP`,
    addr: `127.96.${i >> 8}.${i & 255}`,
    family: 4,
    port: 80,
    proto: 'TCP',
    service: `bench/s-${i}`,
    backends: [{
      ref: `bench/s-${i}:80`,
      weight: 1,
      endpoints: Array.from({ length: 10 }, (_, e) => {
        const x = (i * 10 + e) % 50_000;
        return { addr: `10.${60 + (x >> 16)}.${(x >> 8) & 0xff}.${x & 0xff}`, port: 8080 };
      }),
    }],
  }));
  const before = heap();
  // No such cgroup root: no workload, so nothing of it depends on cgroups.
  const resolver = await ConfigResolver.create('/nonexistent-mesh-cgroup-root', [], services);
  const perEndpoint = (heap() - before) / 100_000;
  // Measured on Node 20: 63 bytes with a copy of the Service's name per address and a Set of the known addresses
  // kept beside the maps; 39 now.
  expect(Math.round(perEndpoint)).toBeLessThanOrEqual(50);
  // What it answers is unchanged: the Service clients dialled (the first that names the address), known peers.
  expect(resolver.peer('10.60.0.5', 8080, 'client')).toEqual({ workload: 'unknown', namespace: '', service: 's-0' });
  expect(resolver.peer('10.60.0.5', 8080, 'server')).toBeUndefined();
  expect([...resolver.knownAddresses()].sort()).toEqual(knownAddressesOf([], services).sort());
}, 60_000);

it('the resolver is built a few hundred Services a step: none read in one step the whole list of 10,000', () => {
  // The routed Services first was two filter() passes and a copy of the whole list in one step (a step of 12-16
  // ms of the thread's CPU at 50,000 in a step log of the scale apply). Counted in Services read between yields.
  let read = new Set<object>();
  const services = Array.from({ length: 10_000 }, (_, i) => {
    const s: CompiledService = {
      key: `127.97.${i >> 8}.${i & 255}|80|TCP`,
      addr: `127.97.${i >> 8}.${i & 255}`,
      family: 4,
      port: 80,
      proto: 'TCP',
      service: `bench/s-${i}`,
      backends: [{ ref: `bench/s-${i}:80`, weight: 1, endpoints: [{ addr: `10.61.${i >> 8}.${i & 255}`, port: 8080 }] }],
    };
    if (i % 1000 === 0) s.route = `bench/r-${i}`;
    // Routed ones from s-1000 on also list s-5's endpoint: the first of them names it, though s-5 comes first.
    if (i % 1000 === 0 && i > 0) s.backends[0]!.endpoints.push({ addr: '10.61.0.5', port: 8080 });
    return new Proxy(s, {
      get(t, p, r) {
        read.add(t);
        return Reflect.get(t, p, r);
      },
    });
  });
  const build = (ConfigResolver as unknown as { build(ids: unknown[], w: unknown[], s: CompiledService[]): Generator<void, ConfigResolver, void> }).build;
  const steps = build([], [], services);
  let most = 0;
  let resolver: ConfigResolver;
  for (;;) {
    read = new Set();
    const r = steps.next();
    most = Math.max(most, read.size);
    if (r.done) {
      resolver = r.value;
      break;
    }
  }
  expect(most, 'Services read between two yields').toBeLessThanOrEqual(1024);
  // Unchanged: a routed Service names its endpoints before the backend Services do.
  expect(resolver.peer('10.61.0.5', 8080, 'client')).toEqual({ workload: 'unknown', namespace: '', service: 's-1000' });
  expect(resolver.peer('10.61.0.7', 8080, 'client')).toEqual({ workload: 'unknown', namespace: '', service: 's-7' });
});
