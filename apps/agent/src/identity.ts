/** Names for what the kernel knows by number: a socket's cgroup id is a workload, an address is a workload
 *  (by its addresses) and, for a client's destination, the Service that routed to it. */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';

import { cgroupId, subdirInodes } from '@mesh/bpf';
import type { Identity, IdentityResolver } from '@mesh/metrics';
import { type CompiledService, every, runStepsAsync, type Steps } from '@mesh/split';

import type { ResolvedWorkload } from './config/objects.js';

export class ConfigResolver implements IdentityResolver {
  private readonly byCgroup = new Map<bigint, Identity>();
  private readonly byAddress = new Map<string, Identity>();
  /** "addr|port" of an endpoint → the Service clients dialled to reach it (the route's parent first). */
  private readonly serviceOf = new Map<string, string>();

  private constructor(
    /** What the names were made from: a config that names the same (kept()) keeps them. */
    private readonly ids: (bigint | undefined)[],
    private readonly workloads: readonly ResolvedWorkload[],
    private readonly services: readonly CompiledService[],
  ) {}

  /** The names of a config's workloads and services. The event loop is served meanwhile: cgroup ids are read
   *  from the parent directories (cgroupIds), the maps built in steps. `previous` (the names in use) is handed
   *  back when the config names the same (kept()): a reload that changes a weight does not make 20,000
   *  workloads' and 50,000 services' names again (~0.3 s of the event loop's CPU). */
  static async create(cgroupRoot: string, workloads: ResolvedWorkload[], services: CompiledService[], previous?: ConfigResolver): Promise<ConfigResolver> {
    const ids = await cgroupIds(cgroupRoot, workloads.map((w) => w.cgroup));
    if (previous && (await runStepsAsync(previous.kept(ids, workloads, services)))) return previous;
    return runStepsAsync(ConfigResolver.build(ids, workloads, services));
  }

  /** Whether these names are a config's: the same cgroup ids (a cgroup made anew has a new one), workloads
   *  (name, namespace, addresses) and, per service in order, its name, whether a route made it and its
   *  endpoints; weights do not matter. Unchanged objects are the same objects (the Compiler's memo), so most
   *  are compared by identity. */
  private *kept(ids: (bigint | undefined)[], workloads: readonly ResolvedWorkload[], services: readonly CompiledService[]): Steps<boolean> {
    if (ids.length !== this.ids.length || workloads.length !== this.workloads.length || services.length !== this.services.length) return false;
    const tick = every(1024);
    for (let i = 0; i < ids.length; i++) {
      if (tick()) yield;
      const a = workloads[i]!;
      const b = this.workloads[i]!;
      if (ids[i] !== this.ids[i]) return false;
      if (a === b) continue;
      if (a.name !== b.name || a.namespace !== b.namespace || a.addresses.length !== b.addresses.length || a.addresses.some((x, j) => x !== b.addresses[j])) return false;
    }
    for (let i = 0; i < services.length; i++) {
      if (tick()) yield;
      const a = services[i]!;
      const b = this.services[i]!;
      if (a === b) continue;
      if (a.service !== b.service || (a.route === undefined) !== (b.route === undefined) || a.backends.length !== b.backends.length) return false;
      for (let j = 0; j < a.backends.length; j++) {
        const x = a.backends[j]!.endpoints;
        const y = b.backends[j]!.endpoints;
        if (x === y) continue;
        if (x.length !== y.length || x.some((e, k) => e.addr !== y[k]!.addr || e.port !== y[k]!.port)) return false;
      }
    }
    return true;
  }

  private static *build(ids: (bigint | undefined)[], workloads: ResolvedWorkload[], services: CompiledService[]): Steps<ConfigResolver> {
    const r = new ConfigResolver(ids, workloads, services);
    const tick = every();
    for (const [i, w] of workloads.entries()) {
      if (tick()) yield;
      const id: Identity = { workload: w.name, namespace: w.namespace };
      // No id: no such cgroup (yet); its sockets show as unknown until the next config apply.
      if (ids[i] !== undefined) r.byCgroup.set(ids[i]!, id);
      for (const a of w.addresses) r.byAddress.set(a, id);
    }
    // A routed service (one an HTTPRoute splits) names its endpoints before the backend Services do: two passes,
    // not two filter()s and a copy of 50,000 in one step.
    for (const routed of [true, false]) {
      for (const s of services) {
        if (tick()) yield;
        if ((s.route !== undefined) !== routed) continue;
        // One name per Service, shared by its endpoints' entries (not a copy per endpoint).
        const name = s.service.split('/')[1]!;
        for (const b of s.backends) {
          for (const ep of b.endpoints) {
            // join() makes a flat string; a template literal this long is a cons string, 32 bytes more per key kept.
            const k = [ep.addr, ep.port].join('|');
            if (!r.serviceOf.has(k)) r.serviceOf.set(k, name);
          }
        }
      }
    }
    return r;
  }

  /** The addresses metrics may name a peer by: the workloads' and the endpoints' (others are "unknown"); the
   *  same set as knownAddressesOf the config. Made from the maps when asked (once per apply), not kept beside
   *  them: every endpoint's address is in a serviceOf key. */
  *knownAddresses(): Generator<string, void, void> {
    // Lazily: the metrics' check takes them a slice of time at a time (some 100,000 keys at scale).
    const seen = new Set<string>();
    for (const a of this.byAddress.keys()) {
      seen.add(a);
      yield a;
    }
    for (const k of this.serviceOf.keys()) {
      const a = k.slice(0, k.lastIndexOf('|'));
      if (seen.has(a)) continue;
      seen.add(a);
      yield a;
    }
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

/** Per cgroup root: whether its cgroups' ids are their inode numbers (see cgroupIds). */
const idsAreInodes = new Map<string, boolean>();

/**
 * The cgroup id of each path (relative to the root; undefined where there is none). A cgroup's id is its
 * directory's inode number on 64-bit kernels since 5.5; when the mesh's root shows that, the ids are read from
 * the parent directories' entries (one getdents per parent: 20,000 workloads in 10 namespaces take ~30 ms, where
 * a stat() of each took ~0.5-2 s of kernel time to look up and instantiate every inode), else one
 * name_to_handle_at() each. In steps either way.
 */
async function cgroupIds(root: string, paths: string[]): Promise<(bigint | undefined)[]> {
  let byInode = idsAreInodes.get(root);
  if (byInode === undefined) {
    byInode = await stat(root, { bigint: true }).then((st) => st.ino === cgroupId(root), () => false);
    // Known once the root exists (the kernel's, for the process's life); asked again while it does not.
    if (byInode) idsAreInodes.set(root, byInode);
  }
  const out = new Array<bigint | undefined>(paths.length);
  const dirs = new Map<string, Map<string, bigint> | undefined>();
  return runStepsAsync(
    (function* () {
      const tick = every(64);
      for (const [i, p] of paths.entries()) {
        if (tick()) yield;
        if (!byInode) {
          try {
            out[i] = cgroupId(join(root, p));
          } catch {
            out[i] = undefined;
          }
          continue;
        }
        // Paths are normalized and relative (validateWorkloads): the parent is what comes before the last "/".
        const cut = p.lastIndexOf('/');
        const dir = cut < 0 ? '' : p.slice(0, cut);
        let inodes = dirs.get(dir);
        if (inodes === undefined && !dirs.has(dir)) {
          yield;
          try {
            inodes = subdirInodes(dir === '' ? root : `${root}/${dir}`);
          } catch {
            inodes = undefined;
          }
          dirs.set(dir, inodes);
        }
        out[i] = inodes?.get(cut < 0 ? p : p.slice(cut + 1));
      }
      return out;
    })(),
  );
}

/** The addresses metrics may name a peer by in a config, made from the config alone (the known-peer table's size
 *  at start-up): its workloads' and its endpoints'. */
export function knownAddressesOf(workloads: readonly ResolvedWorkload[], services: readonly CompiledService[]): string[] {
  const out = new Set<string>();
  for (const w of workloads) for (const a of w.addresses) out.add(a);
  for (const s of services) for (const b of s.backends) for (const ep of b.endpoints) out.add(ep.addr);
  return [...out];
}
