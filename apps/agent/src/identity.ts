/** Names for what the kernel knows by number: a socket's cgroup id is a workload, an address is a workload
 *  (by its addresses) and, for a client's destination, the Service that routed to it. */
import { join } from 'node:path';

import { cgroupId } from '@mesh/bpf';
import type { Identity, IdentityResolver } from '@mesh/metrics';
import { type CompiledService, every, type Steps } from '@mesh/split';

import type { ResolvedWorkload } from './config/objects.js';

export class ConfigResolver implements IdentityResolver {
  private readonly byCgroup = new Map<bigint, Identity>();
  private readonly byAddress = new Map<string, Identity>();
  /** "addr|port" of an endpoint → the Service clients dialled to reach it (the route's parent first). */
  private readonly serviceOf = new Map<string, string>();

  private constructor() {}

  /** The names of a config's workloads and services, built in steps (one syscall per workload's cgroup id). */
  static *build(cgroupRoot: string, workloads: ResolvedWorkload[], services: CompiledService[]): Steps<ConfigResolver> {
    const r = new ConfigResolver();
    const tick = every(64);
    for (const w of workloads) {
      if (tick()) yield;
      const id: Identity = { workload: w.name, namespace: w.namespace };
      try {
        r.byCgroup.set(cgroupId(join(cgroupRoot, w.cgroup)), id);
      } catch {
        // no such cgroup (yet): its sockets show as unknown until the next config apply
      }
      for (const a of w.addresses) r.byAddress.set(a, id);
    }
    // A routed service (one an HTTPRoute splits) names its endpoints before the backend Services do.
    for (const s of [...services.filter((x) => x.route !== undefined), ...services.filter((x) => x.route === undefined)]) {
      if (tick()) yield;
      for (const b of s.backends) {
        for (const ep of b.endpoints) {
          const k = `${ep.addr}|${ep.port}`;
          if (!r.serviceOf.has(k)) r.serviceOf.set(k, s.service.split('/')[1]!);
        }
      }
    }
    return r;
  }

  /** The addresses metrics may name a peer by: the workloads' and the endpoints' (others are "unknown"). */
  knownAddresses(): string[] {
    return [...new Set([...this.byAddress.keys(), ...[...this.serviceOf.keys()].map((k) => k.slice(0, k.lastIndexOf('|')))])];
  }

  local(id: bigint): Identity | undefined {
    return this.byCgroup.get(id);
  }

  peer(ip: string, port: number, direction: 'client' | 'server'): Identity | undefined {
    const w = this.byAddress.get(ip);
    const service = direction === 'client' ? this.serviceOf.get(`${ip}|${port}`) : undefined;
    if (!w) return service ? { workload: 'unknown', namespace: '', service } : undefined;
    return service ? { ...w, service } : w;
  }
}
