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
