/** The configured weights of routed services as a gauge, so a dashboard can set a split's observed share (from
 *  the client histograms, labelled `destination_service`) against what the HTTPRoute asked for. */
import type { CompiledService } from '@mesh/split';
import { Gauge, type Registry } from 'prom-client';

export function registerSplitWeights(registry: Registry, services: () => CompiledService[]): void {
  new Gauge({
    name: 'mesh_split_backend_weight',
    help: "An HTTPRoute backendRef's weight for a service port; its share is weight / sum by (namespace, service, port).",
    labelNames: ['namespace', 'service', 'port', 'backend'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of services()) {
        if (s.route === undefined) continue; // unrouted: one backend, itself
        const [namespace, service] = s.service.split('/') as [string, string];
        const weights = new Map<string, number>();
        // ref is "namespace/name:port"; two refs to one Service add up. IPv4 and IPv6 addresses of one port agree.
        for (const b of s.backends) {
          const backend = b.ref.slice(b.ref.indexOf('/') + 1, b.ref.lastIndexOf(':'));
          weights.set(backend, (weights.get(backend) ?? 0) + b.weight);
        }
        for (const [backend, w] of weights) this.set({ namespace, service, port: String(s.port), backend }, w);
      }
    },
  });
}
