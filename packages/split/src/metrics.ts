/** The split family's Prometheus metrics: what its programs counted, read from the kernel at each scrape, and
 *  the configured weights of routed services. */
import { Counter, Gauge, type Registry } from 'prom-client';

import type { CompiledService } from './compile.js';
import type { CounterName } from './maps.js';

export interface SplitMetricsSource {
  counters(): Record<CounterName, bigint>;
  /** The services in force (the last apply's). */
  services(): CompiledService[];
}

export function registerSplitMetrics(registry: Registry, source: SplitMetricsSource): void {
  const counter = (name: string, help: string, values: (c: Record<CounterName, bigint>) => [Record<string, string>, bigint][], labelNames: string[] = []) =>
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        for (const [labels, v] of values(source.counters())) this.inc(labels, Number(v));
      },
    });
  counter('mesh_split_connects_total', 'connect() calls to a service address: rewritten to an endpoint, or refused (no backend can take the connection).', (c) => [
    [{ result: 'rewritten' }, c.connect_rewrite],
    [{ result: 'refused' }, c.connect_no_backend],
  ], ['result']);
  counter('mesh_split_udp_sends_total', 'Unconnected UDP datagrams to a service address: rewritten to an endpoint, or refused.', (c) => [
    [{ result: 'rewritten' }, c.sendmsg_rewrite],
    [{ result: 'refused' }, c.sendmsg_no_backend],
  ], ['result']);
  counter('mesh_split_table_retries_total', 'Connections that found their endpoint table swapped under them and read the service again.', (c) => [[{}, c.table_retry]]);
  counter('mesh_split_peer_table_full_total', "Connections through a service address whose getpeername() shows the endpoint: the per-connection table had no free slot.", (c) => [[{}, c.orig_full]]);
  registerSplitWeights(registry, () => source.services());
}

/** The configured weights of routed services as a gauge, so a dashboard can set a split's observed share (from
 *  the client histograms, labelled `destination_service`) against what the HTTPRoute asked for. */
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
