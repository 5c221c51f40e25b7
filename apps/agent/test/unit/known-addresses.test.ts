// The metrics' known peers (ConfigResolver.knownAddresses, kept as the resolver's maps are built) are the set
// knownAddressesOf computes from the config alone: every workload address and every endpoint address, on random
// configs where addresses repeat across workloads, endpoints and ports.
import type { CompiledService } from '@mesh/split';
import { describe, expect, it } from 'vitest';

import type { ResolvedWorkload } from '../../src/config/objects.js';
import { ConfigResolver, knownAddressesOf } from '../../src/identity.js';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

function randomConfig(seed: number): { workloads: ResolvedWorkload[]; services: CompiledService[] } {
  const r = rng(seed);
  const addr = () => (r() < 0.8 ? `127.1.${Math.floor(r() * 4)}.${Math.floor(r() * 50)}` : `fd00::${Math.floor(r() * 60).toString(16)}`);
  const workloads: ResolvedWorkload[] = Array.from({ length: 1 + Math.floor(r() * 80) }, (_, i) => ({
    name: `w-${i}`,
    namespace: 'default',
    serviceAccount: 'default',
    labels: {},
    cgroup: `default/w-${i}`,
    addresses: Array.from({ length: Math.floor(r() * 3) }, addr),
  }));
  const services: CompiledService[] = Array.from({ length: Math.floor(r() * 120) }, (_, i) => ({
    key: `10.0.0.${i}|80|TCP`,
    addr: `10.0.0.${i}`,
    family: 4,
    port: 80,
    proto: 'TCP',
    service: `default/s-${i}`,
    ...(r() < 0.3 ? { route: `default/r-${i}` } : {}),
    backends: Array.from({ length: 1 + Math.floor(r() * 3) }, (_, b) => ({
      ref: `default/b-${b}:80`,
      weight: 1,
      endpoints: Array.from({ length: Math.floor(r() * 6) }, () => ({ addr: addr(), port: 8000 + Math.floor(r() * 3) })),
    })),
  }));
  return { workloads, services };
}

describe('ConfigResolver.knownAddresses', () => {
  it('equals knownAddressesOf the config on 200 random configs', async () => {
    for (let seed = 1; seed <= 200; seed++) {
      const { workloads, services } = randomConfig(seed);
      // No such cgroup root: every cgroup id is unknown, which the peer set does not depend on.
      const resolver = await ConfigResolver.create('/nonexistent-mesh-cgroup-root', workloads, services);
      const got = [...resolver.knownAddresses()];
      expect(new Set(got).size).toBe(got.length);
      expect([...got].sort()).toEqual([...knownAddressesOf(workloads, services)].sort());
    }
  });
});
