/** The Kubernetes source's metrics, read from its health when scraped: whether the state in force can be
 *  vouched for (every informer listed and watching), and each watch's state and restarts. */
import { Counter, Gauge, type Registry } from 'prom-client';

import type { KubernetesHealth } from './source.js';

export function registerKubernetesMetrics(registry: Registry, health: () => KubernetesHealth): void {
  new Gauge({
    name: 'mesh_kubernetes_source_healthy',
    help: '1 when every informer has listed and its watch is up; 0 while the API server is unreachable or a watch is failing (the last state stays in force).',
    registers: [registry],
    collect() {
      const h = health();
      this.set(h.synced && h.healthy ? 1 : 0);
    },
  });
  new Gauge({
    name: 'mesh_kubernetes_watch_healthy',
    help: '1 while the resource\'s watch is up (an absent custom resource counts as up), by resource.',
    labelNames: ['resource'],
    registers: [registry],
    collect() {
      for (const [resource, i] of Object.entries(health().informers)) this.set({ resource }, i.healthy ? 1 : 0);
    },
  });
  new Counter({
    name: 'mesh_kubernetes_watch_restarts_total',
    help: 'Restarts of a resource\'s list-and-watch after an error, by resource.',
    labelNames: ['resource'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [resource, i] of Object.entries(health().informers)) this.inc({ resource }, i.restarts);
    },
  });
  new Counter({
    name: 'mesh_kubernetes_snapshots_total',
    help: 'Snapshots the Kubernetes source delivered (a change to what the mesh reads; a relist that changes nothing makes none).',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(health().updates);
    },
  });
}
