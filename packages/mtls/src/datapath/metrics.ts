/** The mTLS family's Prometheus metrics: what its programs counted (capture, STRICT), read from the kernel at
 *  each scrape, and the fill of its tables. */
import { Counter, Gauge, type Registry } from 'prom-client';

import type { CounterName } from './maps.js';

export interface MtlsMetricsSource {
  counters(): Record<CounterName, bigint>;
  fill(): Record<string, { used: number; max: number }>;
}

export function registerMtlsMetrics(registry: Registry, source: MtlsMetricsSource): void {
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
  counter('mesh_mtls_captures_total', "connect() calls of enrolled workloads to mesh destinations: sent to the node's data plane, left alone as an allowed local pair (the same-node shortcut: a direct connection), or left alone because no data plane address is configured for the family.", (c) => [
    [{ result: 'captured' }, c.capture],
    [{ result: 'local_direct' }, c.local_direct],
    [{ result: 'no_dataplane' }, c.capture_no_dataplane],
  ], ['result']);
  counter('mesh_mtls_original_destinations_total', "Captured connections whose original destination was recorded for the data plane, or not (no socket storage).", (c) => [
    [{ result: 'recorded' }, c.orig_note],
    [{ result: 'no_storage' }, c.orig_no_storage],
  ], ['result']);
  counter('mesh_mtls_getpeername_rewrites_total', 'getpeername() of captured connections answered with what the application dialled.', (c) => [[{}, c.getpeername_rewrite]]);
  counter('mesh_mtls_strict_drops_total', "Packets to a STRICT port refused in the kernel, by reason: plaintext (a source other than the data plane's inbound source), malformed (headers that cannot be read).", (c) => [
    [{ reason: 'plaintext' }, c.strict_drop_plaintext],
    [{ reason: 'malformed' }, c.strict_drop_malformed],
  ], ['reason']);
  counter('mesh_mtls_strict_passes_total', "Packets to a STRICT port from the data plane's inbound source, let through.", (c) => [[{}, c.strict_pass_dataplane]]);
  counter('mesh_mtls_strict_local_passes_total', 'Packets to a STRICT port from a direct connection of an allowed local pair (the same-node shortcut), let through.', (c) => [[{}, c.strict_pass_local]]);
  counter('mesh_mtls_strict_unchecked_total', "TCP packets to a connected socket (not a listener) of an enrolled workload, let through unchecked: STRICT checks the packets to a listener (the SYN and the handshake's last ACK), so replies to a workload's own connections pass.", (c) => [[{}, c.strict_pass_connected]]);
  counter('mesh_mtls_bind_refusals_total', "bind() calls to the data plane's inbound source address (what a STRICT port accepts plaintext from) refused because they came from a cgroup other than the data plane's.", (c) => [[{}, c.bind_refused]]);
  new Gauge({
    name: 'mesh_mtls_local_pairs',
    help: 'Allowed local pairs (enrolled workload, destination of this node) whose connections skip the data plane: the same-node shortcut; 0 when it is off.',
    registers: [registry],
    collect() {
      this.set(source.fill().local_pairs?.used ?? 0);
    },
  });
  new Gauge({
    name: 'mesh_mtls_enrolled_workloads',
    help: 'Workload cgroups enrolled in mTLS (their outbound connections to mesh destinations are captured).',
    registers: [registry],
    collect() {
      this.set(source.fill().workloads?.used ?? 0);
    },
  });
}
