/**
 * Transparent mTLS on this node (docs/mtls.md, "Running mTLS"): which workloads are enrolled, the kernel's part
 * (the mtls family: capture to the data plane, STRICT per port) and the data plane's config (the workloads'
 * SVID files, the mesh destinations with their tunnel and SPIFFE ID, the compiled AuthorizationPolicies), made
 * from one resolved config and kept in step: the data plane learns a workload before the kernel sends it
 * anything, and learns new SVID files (a renewal) by a reload.
 */
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { BpfMap, codec as c, pinLayout } from '@mesh/bpf';
import { authorize } from '@mesh/mtls/policy';
import { MtlsDatapath, mtlsTableSizesFor, type EnrolledWorkload, type MtlsSnapshot } from '@mesh/mtls/datapath';

import type { ResolvedConfig, ResolvedWorkload } from './config/objects.js';
import { type DataplaneConfig, DataplaneSupervisor } from './dataplane.js';
import type { Family } from './families.js';
import type { SvidFiles } from './identities.js';
import { enrolled } from './enrol.js';
import type { Logger } from './log.js';
import { nodeTunnel } from './mtls-topology.js';
import { parseHostPort, RUN_DIR } from './paths.js';

/** The data plane built in this tree (scripts/build.sh). */
export const DEFAULT_DATAPLANE = fileURLToPath(new URL('../../../native/dataplane/build/mesh-dataplane', import.meta.url));

/** The mTLS flags' defaults (mesh-agent --help): loopback addresses for one machine. */
export const MTLS_DEFAULTS = { outbound: '127.0.0.1:15001', tunnel: '127.0.0.1:15008', inboundSource: '127.0.0.6', stats: '127.0.0.1:15020' };

/** --run-dir's default: the data plane's config, pid file and log, one directory per pin root. */
export const defaultRunDir = (pinRoot: string) => join(RUN_DIR, `${basename(pinRoot)}-dataplane`);

export { ENROL_LABELS, enrolled } from './enrol.js';

/** This node's data plane addresses (the topology of docs/mtls.md). */
export interface MtlsNodeOptions {
  /** The outbound listener, reachable from the workloads: where the kernel sends their captured connects. */
  outbound: string;
  /** The tunnel listener, reachable from other nodes: where mesh peers' TLS connections arrive. */
  tunnel: string;
  /** The source address(es) the data plane connects to workloads from: the only source a STRICT port takes. */
  inboundSource: { ipv4?: string; ipv6?: string };
  /** The data plane's stats endpoint (Prometheus text; a scrape target of its own). */
  stats: string;
  /** The mesh-dataplane executable. */
  dataplane: string;
  /** Where its config, pid file and log live. */
  runDir: string;
  /** The data plane is started and restarted by something else (a container beside the agent's): DataplaneOptions.external. */
  externalDataplane?: boolean;
  workers?: number;
  /** Outbound connections as streams over pooled tunnel connections (true) or one TLS connection each (false);
   *  absent: the data plane chooses, pooled unless the kernel takes the record layer (kTLS). */
  pool?: boolean;
  /** The same-node shortcut (docs/mtls.md, "Same-node connections"): a connection between two enrolled workloads
   *  of this node that the destination's policies allow is made directly, not through the tunnel. Default on. */
  localShortcut?: boolean;
  /** Capacity of the allowed local pair table; from the first config when not given (sizeFrom). */
  maxLocalPairs?: number;
  /** Other nodes' tunnel listeners, by node name: where their workloads (spec.nodeName) are reached. */
  peers?: Record<string, string>;
  /** Capacities of the enrolled-workload, port-mode and destination tables; from the first config when not
   *  given (sizeFrom). */
  maxWorkloads?: number;
  maxPorts?: number;
  maxDestinations?: number;
}

/** The entries a config can make in the mtls tables, at most (a workload enrolled before its SVID exists counts). */
export function mtlsCountsOf(config: ResolvedConfig, nodeName: string | undefined): { workloads: number; ports: number; destinations: number; localPairs: number } {
  let workloads = 0, ports = 0, destinations = 0, localDestinations = 0;
  for (const w of config.workloads) {
    if (!enrolled(w)) continue;
    destinations += w.addresses.length * (w.ports?.length ?? 0);
    if (w.nodeName !== undefined && w.nodeName !== nodeName) continue;
    workloads++;
    localDestinations += w.addresses.length * (w.ports?.length ?? 0);
    ports += 1 + Object.keys(config.policies.get(`${w.namespace}/${w.name}`)?.mtls.ports ?? {}).length;
  }
  // At most every local workload to every local destination (the policies allow fewer).
  return { workloads, ports, destinations, localPairs: workloads * localDestinations };
}

/** What the mTLS part needs of the identities (WorkloadIdentities): each workload's SVID files once written,
 *  and a call after each batch of writes. */
export interface SvidFileSource {
  files(workload: string): SvidFiles | undefined;
  onChange(listener: () => void): () => void;
}

interface Plan {
  kernel: MtlsSnapshot;
  dataplane: DataplaneConfig;
}

export class MtlsNode {
  readonly supervisor: DataplaneSupervisor;
  readonly family: Family<MtlsDatapath>;
  private svids: SvidFileSource | undefined;
  private unsubscribe: (() => void) | undefined;
  private last: ResolvedConfig | undefined;
  private datapath: MtlsDatapath | undefined;
  /** Files a previous agent's data plane config named, by workload address: kept until the identities have
   *  written this agent's (a restart does not drop a workload from the tunnel meanwhile). */
  private inherited = new Map<string, DataplaneConfig['workloads'][number]>();
  private queue: Promise<unknown> = Promise.resolve();
  private warned: Set<string> | undefined;
  private readonly log: Logger;
  private sizes: { maxWorkloads: number; maxPorts: number; maxDestinations: number; maxLocalPairs: number } | undefined;

  constructor(
    private readonly opts: MtlsNodeOptions,
    private readonly mesh: { pinRoot: string; cgroupRoot: string; log: Logger; nodeName?: string; trustDomain: string },
  ) {
    parseHostPort(opts.outbound);
    parseHostPort(opts.tunnel);
    parseHostPort(opts.stats);
    this.log = mesh.log.with({ subsystem: 'mtls' });
    this.supervisor = new DataplaneSupervisor({
      binary: opts.dataplane,
      runDir: opts.runDir,
      log: mesh.log,
      external: opts.externalDataplane,
      // Its cgroup (another container's) may bind the inbound source only once the kernel's part names it.
      onFound: () => void this.refresh(),
    });
    const layout = pinLayout(mesh.pinRoot);
    this.family = {
      name: 'mtls',
      mapPrefix: 'mtls_',
      load: (pinDir, sizes) => {
        // Capture must show getpeername the service address the split rewrote: it reads the split's table.
        const path = join(layout.maps('split'), 'split_orig');
        const m = BpfMap.openPinned(path, { key: c.u32, value: c.bytes(48) });
        const slots = m.maxEntries;
        m.close();
        const dp = MtlsDatapath.load({ pinDir, maxConnections: sizes.maxConnections, ...this.sizes, splitOrig: { path, slots } });
        this.datapath = dp;
        return dp;
      },
      input: (ctx) => this.prepare(ctx.config),
    };
  }

  /** Sizes the tables (unless flags pinned them) from the first config: call before the datapath opens. */
  sizeFrom(first: ResolvedConfig): { maxWorkloads: number; maxPorts: number; maxDestinations: number; maxLocalPairs: number } {
    const fromConfig = mtlsTableSizesFor(mtlsCountsOf(first, this.mesh.nodeName));
    this.sizes = {
      maxWorkloads: this.opts.maxWorkloads ?? fromConfig.maxWorkloads,
      maxPorts: this.opts.maxPorts ?? fromConfig.maxPorts,
      maxDestinations: this.opts.maxDestinations ?? fromConfig.maxDestinations,
      maxLocalPairs: this.opts.maxLocalPairs ?? fromConfig.maxLocalPairs,
    };
    return this.sizes;
  }

  /** Whether same-node connections between enrolled workloads skip the tunnel (--no-mtls-local-shortcut). */
  get localShortcut(): boolean {
    return this.opts.localShortcut !== false;
  }

  private get origMapPath(): string {
    return join(pinLayout(this.mesh.pinRoot).maps('mtls'), 'mtls_orig');
  }

  /** Starts (or adopts) the data plane; call after the datapath is open (its config names the pinned map). */
  async start(svids: SvidFileSource | undefined): Promise<void> {
    this.svids = svids;
    const prev = this.supervisor.previousConfig();
    for (const w of prev?.workloads ?? []) this.inherited.set(w.address, w);
    await this.supervisor.start(prev && this.sameNode(prev) ? prev : this.dataplaneBase([], []));
    // New SVID files (first issue, renewal): the data plane re-reads them, newly identified workloads enrol.
    this.unsubscribe = svids?.onChange(() => void this.refresh());
  }

  /** A previous config the node's addresses still match (else the data plane starts with the new ones). */
  private sameNode(prev: DataplaneConfig): boolean {
    const base = this.dataplaneBase([], []);
    return prev.outbound === base.outbound && prev.tunnel === base.tunnel && prev.stats === base.stats && prev.workers === base.workers;
  }

  private dataplaneBase(workloads: DataplaneConfig['workloads'], destinations: DataplaneConfig['destinations']): DataplaneConfig {
    return {
      outbound: this.opts.outbound,
      tunnel: this.opts.tunnel,
      stats: this.opts.stats,
      ...(this.opts.workers !== undefined ? { workers: this.opts.workers } : {}),
      // The pooled tunnel frames its streams in user space: no kTLS hand-over on this node's connections.
      ...(this.opts.pool === true ? { pool: true, ktls: false } : this.opts.pool === false ? { pool: false } : {}),
      inboundSource: this.opts.inboundSource,
      workloads,
      destinations,
      originalDst: { map: this.origMapPath },
    };
  }

  /** Both parts for a config: the workloads enrolled here that have an identity, with their modes and policies. */
  private plan(config: ResolvedConfig): Plan {
    const out = parseHostPort(this.opts.outbound);
    const v4 = !out.host.includes(':');
    const kernel: MtlsSnapshot = {
      dataplane: {
        outbound: { port: out.port, ...(v4 ? { ipv4: out.host } : { ipv6: out.host }) },
        inboundSource: this.opts.inboundSource,
        cgroups: this.supervisor.cgroups(),
      },
      enrolled: [],
      destinations: [],
      localPairs: [],
    };
    const workloads: DataplaneConfig['workloads'] = [];
    const destinations: DataplaneConfig['destinations'] = [];
    // The enrolled workloads of this node (cgroup, SPIFFE ID) and their destinations with the policies that guard
    // them: the same-node shortcut's pairs are made from both below.
    const sources: { cgroup: string; id: string }[] = [];
    const targets: { destination: string; port: number; policies: NonNullable<ReturnType<ResolvedConfig['policies']['get']>>['policies'] | undefined }[] = [];
    for (const w of config.workloads) {
      if (!enrolled(w)) continue;
      if (w.nodeName !== undefined && w.nodeName !== this.mesh.nodeName) {
        this.remote(w, config, kernel, destinations);
        continue;
      }
      const key = `${w.namespace}/${w.name}`;
      const files = this.svids?.files(key);
      const policy = config.policies.get(key);
      const pol = policy && {
        ...(policy.policies.deny.length ? { deny: [...policy.policies.deny] } : {}),
        ...(policy.policies.allow.length ? { allow: [...policy.policies.allow] } : {}),
      };
      let id: string | undefined;
      for (const address of w.addresses) {
        const entry = files
          ? { address, spiffeId: files.id, cert: files.cert, key: files.key, bundle: files.bundle }
          : this.inherited.get(address);
        if (!entry) continue;
        id = entry.spiffeId;
        workloads.push({ ...entry, address, ...(pol && Object.keys(pol).length ? { policies: pol } : {}) });
        for (const port of w.ports ?? []) {
          const dst = address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
          kernel.destinations.push(dst);
          destinations.push({ address: dst, tunnel: this.opts.tunnel, spiffeId: entry.spiffeId });
          targets.push({ destination: dst, port, policies: policy?.policies });
        }
      }
      // Enrolled only with an identity: without one the data plane could neither send nor receive for it.
      if (id === undefined) continue;
      sources.push({ cgroup: join(this.mesh.cgroupRoot, w.cgroup), id });
      // The workload-wide mode goes to the kernel too: ports the workload serves without declaring them are
      // covered (the kernel checks only packets to a listener, so replies to its own connections pass).
      const e: EnrolledWorkload = { cgroup: join(this.mesh.cgroupRoot, w.cgroup), mode: policy?.mtls.mode ?? 'PERMISSIVE' };
      if (policy && Object.keys(policy.mtls.ports).length) e.ports = { ...policy.mtls.ports };
      kernel.enrolled.push(e);
    }
    // The same-node shortcut: a pair is allowed when the destination's policies, evaluated as its data plane
    // inbound would for the source's SPIFFE ID (DENY first, then ALLOW), let the connection in. Every other
    // connection keeps going to the data plane, which refuses it as it would any tunnelled one.
    if (this.localShortcut) {
      for (const src of sources) {
        for (const t of targets) {
          if (t.policies && !authorize(t.policies, src.id, t.port).allowed) continue;
          kernel.localPairs!.push({ cgroup: src.cgroup, destination: t.destination });
        }
      }
    }
    return { kernel, dataplane: this.dataplaneBase(workloads, destinations) };
  }

  /** A workload of another node: its ports are tunnelled to that node's data plane, which must present its
   *  service account's ID. Not enrolled here (its processes are not on this node). */
  private remote(w: ResolvedWorkload, config: ResolvedConfig, kernel: MtlsSnapshot, destinations: DataplaneConfig['destinations']): void {
    const tunnel = nodeTunnel(w.nodeName!, config, { tunnel: this.opts.tunnel, peers: this.opts.peers });
    if (tunnel === undefined) {
      this.warned ??= new Set();
      if (!this.warned.has(w.nodeName!)) this.log.warn('no tunnel known for a node: its workloads are not reached through mTLS', { node: w.nodeName, workload: `${w.namespace}/${w.name}` });
      this.warned.add(w.nodeName!);
      return;
    }
    const spiffeId = `spiffe://${this.mesh.trustDomain}/ns/${w.namespace}/sa/${w.serviceAccount}`;
    for (const address of w.addresses) {
      for (const port of w.ports ?? []) {
        const dst = address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
        kernel.destinations.push(dst);
        destinations.push({ address: dst, tunnel, spiffeId });
      }
    }
  }

  /** The family's input: the data plane gets its config first (a workload is known there before the kernel
   *  sends its connections), then the kernel's part is returned for the family to write. */
  prepare(config: ResolvedConfig, svidFilesChanged = false): Promise<MtlsSnapshot> {
    const run = async () => {
      this.last = config;
      const p = this.plan(config);
      // The kernel's part is checked whole before the data plane hears of it, and the local pairs the new policies
      // refuse are dropped first: from here on such a connect goes to the data plane, reloaded next.
      this.datapath?.dropLocalPairs(p.kernel);
      await this.supervisor.reload(p.dataplane, svidFilesChanged);
      return p.kernel;
    };
    const next = this.queue.then(run, run);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** After SVID files changed: the data plane re-reads them, and workloads that now have one are enrolled. */
  private async refresh(): Promise<void> {
    if (!this.last || !this.datapath) return;
    try {
      const kernel = await this.prepare(this.last, true);
      const r = this.datapath.apply(kernel);
      this.log.info('svid files changed: data plane reloaded', { workloads: kernel.enrolled.length, mapWrites: r.written + r.deleted });
    } catch (err) {
      this.log.error('applying new svid files failed', { error: (err as Error).message });
    }
  }

  close(): void {
    this.unsubscribe?.();
    this.supervisor.close();
  }
}
