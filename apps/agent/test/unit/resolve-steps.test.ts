// The resolve of a big config in steps (runStepsAsync serves the event loop between them), and what a reload
// keeps from the last one (the memo): counted in units of work and object identities, not milliseconds, so a
// loaded machine cannot change the outcome.
import { describe, expect, it } from 'vitest';

import { parseConfig } from '../../src/config/file.js';
import { type ConfigSnapshot, ConfigError, resolveConfig, resolveMemo, resolveSteps, type ResolvedWorkload } from '../../src/config/objects.js';

const file = (text: string) => [{ path: 'mesh.yaml', text }];

/** n Workloads in two namespaces, Service i selecting workload i, and an AuthorizationPolicy over them all. */
function config(n: number): string {
  const docs: string[] = [];
  for (let i = 0; i < n; i++) {
    docs.push(`apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: w-${i}, namespace: ns-${i % 2}, labels: { app: a-${i} } }
spec: { addresses: [127.50.${i >> 8}.${i & 255}], ports: [{ name: http, port: 8080 }] }
`);
    docs.push(`apiVersion: v1
kind: Service
metadata: { name: s-${i}, namespace: ns-${i % 2} }
spec: { clusterIP: 127.20.${i >> 8}.${i & 255}, selector: { app: a-${i} }, ports: [{ port: 80, targetPort: http }] }
`);
  }
  docs.push(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: ns-0 }
spec: { action: DENY, rules: [{ from: [{ source: { namespaces: [admin] } }] }] }
`);
  return docs.join('---\n');
}

describe('resolveSteps', () => {
  it('compiles at most 256 workloads’ mTLS policies between two yields (3,000 workloads)', () => {
    const n = 3_000;
    let read = 0;
    // The policies' compile reads each resolved workload's ports once: counted as it happens.
    const countPorts = (workloads: ResolvedWorkload[]) => {
      for (const w of workloads) {
        const ports = w.ports;
        Object.defineProperty(w, 'ports', { get: () => (read++, ports), enumerable: true });
      }
    };
    const steps = resolveSteps(parseConfig(file(config(n))), resolveMemo(), countPorts);
    let most = 0;
    for (;;) {
      const before = read;
      const r = steps.next();
      most = Math.max(most, read - before);
      if (r.done) {
        expect(r.value.policies.size).toBe(n);
        expect(r.value.policies.get('ns-0/w-0')!.policies.deny.map((p) => p.name)).toEqual(['ns-0/deny-admin']);
        expect(r.value.policies.get('ns-1/w-1')!.policies.deny).toEqual([]);
        break;
      }
    }
    expect(read).toBeGreaterThanOrEqual(n);
    expect(most).toBeLessThanOrEqual(256);
  });

  it('a reload that changed a route keeps the resolved workloads, endpoints and policies: the same objects', () => {
    const first = parseConfig(file(config(300)));
    const memo = resolveMemo();
    const a = resolveConfig(first, memo);
    // What the file source hands out for an unchanged document: the very object of the last parse.
    const route = parseConfig(file(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: r, namespace: ns-0 }
spec: { parentRefs: [{ name: s-0, port: 80 }], rules: [{ backendRefs: [{ name: s-2, port: 80, weight: 1 }] }] }
`)).httpRoutes;
    const second: ConfigSnapshot = { ...first, workloads: first.workloads.slice(), services: first.services.slice(), httpRoutes: route };
    const b = resolveConfig(second, memo);
    expect(b.workloads).toBe(a.workloads);
    expect(b.policies).toBe(a.policies);
    expect(b.routing.endpointSlices).toBe(a.routing.endpointSlices);
    expect(b.compiled.services.find((s) => s.service === 'ns-0/s-0')!.backends[0]!.endpoints).toEqual([{ addr: '127.50.0.2', port: 8080 }]);

    // A changed workload (a new object) is checked again: its new address is s-1's endpoint, and a clash with
    // another's address is still a problem.
    const moved = parseConfig(file(`apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: w-1, namespace: ns-1, labels: { app: a-1 } }
spec: { addresses: [127.60.0.1], ports: [{ name: http, port: 8080 }] }
`)).workloads[0]!;
    const third: ConfigSnapshot = { ...second, workloads: first.workloads.map((w, i) => (i === 1 ? moved : w)) };
    const c = resolveConfig(third, memo);
    expect(c.workloads).not.toBe(a.workloads);
    expect(c.workloads[1]!.addresses).toEqual(['127.60.0.1']);
    expect(c.compiled.services.find((s) => s.service === 'ns-1/s-1')!.backends[0]!.endpoints).toEqual([{ addr: '127.60.0.1', port: 8080 }]);
    const clash = { ...moved, spec: { ...moved.spec, addresses: ['127.50.0.3'] } };
    expect(() => resolveConfig({ ...second, workloads: first.workloads.map((w, i) => (i === 1 ? clash : w)) }, memo)).toThrow(ConfigError);
    expect(() => resolveConfig({ ...second, workloads: first.workloads.map((w, i) => (i === 1 ? clash : w)) }, memo)).toThrow(/127\.50\.0\.3 is already an address of Workload ns-1\/w-1/);
    // A rejected config leaves the memo as the last valid one left it.
    expect(resolveConfig(third, memo).workloads).toBe(c.workloads);
  });
});
