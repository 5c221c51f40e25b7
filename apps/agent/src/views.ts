/**
 * The control API's JSON documents (/v1/status, /v1/services, /v1/workloads, /v1/stat, /v1/certs): built here for
 * the agent, typed here for meshctl. Type imports only: meshctl imports this file's types without loading what
 * the agent runs (the native addon among it).
 */
import type { DataplaneHealth } from './dataplane.js';
import type { MapFill } from '@mesh/bpf';
import type { CompiledService, RouteStatus } from '@mesh/split';

import type { ResolvedWorkload } from './config/objects.js';
import type { ConfigSource } from './config/source.js';
import type { LinkStatus } from './datapath.js';
import type { PairStats } from './stats.js';
import { VERSION } from './version.js';

/** A document as it crosses the socket: the server writes bigints as decimal strings (server.ts). */
export type Wire<T> = T extends bigint ? string : T extends readonly (infer U)[] ? Wire<U>[] : T extends object ? { [K in keyof T]: Wire<T[K]> } : T;

/** The config in force: what status, services and workloads show of it. */
export interface Applied {
  generation: number;
  revision: string;
  at: string;
  workloads: ResolvedWorkload[];
  services: CompiledService[];
  routes: RouteStatus[];
  writes: number;
  /** What the apply wrote only in part, and what to do (e.g. peers beyond the metrics' known-peer table). */
  warnings: string[];
}

/** The last config the agent rejected. */
export interface LastError {
  at: string;
  revision?: string | undefined;
  message: string;
  problems: string[];
}

/** What status reads of the open datapath. */
export interface DatapathStatus {
  links(): LinkStatus[];
  fill(): Record<string, MapFill>;
  /** Each family's kernel counters. */
  counters(): Record<string, Record<string, number | bigint>>;
}

export interface StatusInput {
  source: Pick<ConfigSource, 'description' | 'health'>;
  listen: string;
  pinRoot: string;
  cgroupRoot: string;
  /** Undefined when ready; otherwise why not. */
  notReady: string | undefined;
  metrics: { serving: boolean; error: string | undefined };
  /** --metrics-listen's listener, when given. */
  metricsOnly?: { address: string; serving: boolean; error: string | undefined };
  applied: Applied | undefined;
  lastError: LastError | undefined;
  datapath: DatapathStatus | undefined;
  /** The mTLS data plane, when mTLS is on. */
  dataplane?: DataplaneHealth;
  /** The same-node shortcut's switch, when mTLS is on. */
  mtlsLocalShortcut?: boolean;
}

export interface StatusView {
  version: string;
  pid: number;
  ready: boolean;
  notReady: string | undefined;
  source: string;
  sourceHealth: unknown;
  metrics: { address: string; serving: boolean; error: string | undefined };
  /** /metrics alone on another address (--metrics-listen); absent when not given. */
  metricsOnly?: { address: string; serving: boolean; error: string | undefined };
  cgroupRoot: string;
  pinRoot: string;
  config: { generation: number; revision: string; appliedAt: string; mapWrites: number; warnings: string[] } | undefined;
  lastError: LastError | undefined;
  programs: LinkStatus[];
  maps: Record<string, MapFill>;
  counters: Record<string, Record<string, number | bigint>>;
  /** The mTLS data plane (absent: mTLS off). */
  dataplane?: DataplaneHealth;
  /** The same-node shortcut (absent: mTLS off). */
  mtlsLocal?: MtlsLocalView;
}

export function statusView(s: StatusInput): StatusView {
  const dp = s.datapath;
  return {
    version: VERSION,
    pid: process.pid,
    ready: s.notReady === undefined,
    notReady: s.notReady,
    source: s.source.description,
    sourceHealth: s.source.health?.(),
    metrics: { address: s.listen, serving: s.metrics.serving, error: s.metrics.error },
    ...(s.metricsOnly ? { metricsOnly: s.metricsOnly } : {}),
    cgroupRoot: s.cgroupRoot,
    pinRoot: s.pinRoot,
    config: s.applied ? { generation: s.applied.generation, revision: s.applied.revision, appliedAt: s.applied.at, mapWrites: s.applied.writes, warnings: s.applied.warnings } : undefined,
    lastError: s.lastError,
    programs: dp?.links() ?? [],
    maps: dp?.fill() ?? {},
    counters: dp ? dp.counters() : {},
    ...(s.dataplane ? { dataplane: s.dataplane } : {}),
    ...(s.mtlsLocalShortcut !== undefined ? { mtlsLocal: localShortcutView(s.mtlsLocalShortcut, dp) } : {}),
  };
}

/** The same-node shortcut: on or off, the pairs it allows, and what its programs counted. */
export interface MtlsLocalView {
  enabled: boolean;
  pairs: number;
  /** Connects left alone as allowed local pairs (direct connections), since the programs were loaded. */
  direct: number;
  /** Packets a STRICT port took from direct connections. */
  strictPasses: number;
}

function localShortcutView(enabled: boolean, dp: StatusInput['datapath']): MtlsLocalView {
  const c = (dp?.counters().mtls ?? {}) as Record<string, number | bigint>;
  return { enabled, pairs: dp?.fill().mtls_local_pairs?.used ?? 0, direct: Number(c.local_direct ?? 0), strictPasses: Number(c.strict_pass_local ?? 0) };
}

export interface ServiceView {
  service: string;
  /** addr:port, [addr]:port for IPv6. */
  address: string;
  protocol: CompiledService['proto'];
  route: string | undefined;
  backends: { ref: string; weight: number; share: number; endpoints: string[] }[];
}

export interface ServicesView {
  generation: number;
  services: ServiceView[];
  routes: RouteStatus[];
}

export function servicesView(applied: Applied | undefined): ServicesView {
  return {
    generation: applied?.generation ?? 0,
    services: (applied?.services ?? []).map((s) => {
      const total = s.backends.reduce((a, b) => a + b.weight, 0);
      return {
        service: s.service,
        address: s.family === 6 ? `[${s.addr}]:${s.port}` : `${s.addr}:${s.port}`,
        protocol: s.proto,
        route: s.route,
        backends: s.backends.map((b) => ({ ref: b.ref, weight: b.weight, share: total ? b.weight / total : 0, endpoints: b.endpoints.map((e) => `${e.addr}:${e.port}`) })),
      };
    }),
    routes: applied?.routes ?? [],
  };
}

export interface WorkloadsView {
  cgroupRoot: string;
  workloads: (ResolvedWorkload & { cgroupPath: string })[];
}

export function workloadsView(cgroupRoot: string, applied: Applied | undefined): WorkloadsView {
  return {
    cgroupRoot,
    workloads: (applied?.workloads ?? []).map((w) => ({ ...w, cgroupPath: `${cgroupRoot}/${w.cgroup}` })),
  };
}

/** /v1/stat?window=SECONDS. */
export type StatView = ReturnType<PairStats['query']>;

export interface CertsView {
  trustDomain: string;
  ca: { mode: string; dir?: string | undefined; rotationPhase?: string | undefined; svidTtlSeconds: number };
  bundle: { subject: string; serial: string; notAfter: string }[];
  workloads: {
    workload: string;
    id: string;
    state: string;
    serial: string | undefined;
    notAfter: string | undefined;
    nextRenewal: string | undefined;
    issuer: string | undefined;
    lastError: string | undefined;
  }[];
}

/** /v1/certs: the identities' view, or why there is none. */
export type CertsAnswer = CertsView | { error: string };

export const certsView = (identities: { view(): CertsView } | undefined): CertsAnswer => identities?.view() ?? { error: 'workload identities are off' };
