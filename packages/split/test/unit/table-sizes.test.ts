// The routing tables' capacities for a config: twice its service addresses and endpoint slots, at least the
// floors, rounded up to a power of two.
import { expect, it } from 'vitest';

import { type CompiledService, MIN_ENDPOINTS, MIN_SERVICES, tableSizesFor } from '../../src/index.js';

/** `n` service addresses, each with `backends` backends of `perBackend` endpoints. */
function services(n: number, backends: number, perBackend: number): CompiledService[] {
  return Array.from({ length: n }, (_, i) => ({
    key: `10.0.${i >> 8}.${i & 255}|80|TCP`,
    addr: `10.0.${i >> 8}.${i & 255}`,
    family: 4,
    port: 80,
    proto: 'TCP',
    service: `default/s${i}`,
    backends: Array.from({ length: backends }, (_, b) => ({
      ref: `default/s${i}-${b}:80`,
      weight: 1,
      endpoints: Array.from({ length: perBackend }, (_, e) => ({ addr: `10.1.${b}.${e}`, port: 8080 })),
    })),
  })) as CompiledService[];
}

it.each([
  ['an empty config', 0, 1, 1, MIN_SERVICES, MIN_ENDPOINTS],
  ['13 services of 1 endpoint', 13, 1, 1, 1024, 4096],
  ['512 services (exactly the floor at 2x)', 512, 1, 1, 1024, 4096],
  ['513 services', 513, 1, 1, 2048, 4096],
  ['600 services of 2 backends of 3 endpoints (3,600 slots)', 600, 2, 3, 2048, 8192],
  ['50,000 services of 1 endpoint', 50_000, 1, 1, 131_072, 131_072],
] as const)('%s', (_what, n, backends, perBackend, maxServices, maxEndpoints) => {
  expect(tableSizesFor(services(n, backends, perBackend))).toEqual({ maxServices, maxEndpoints });
});
