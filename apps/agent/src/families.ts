/**
 * The datapath families the agent runs, in order: each entry loads one package's datapath (see DatapathFamily
 * in @mesh/bpf) and makes its part of a resolved config. Adding a family is one entry here (or, for a test, in
 * AgentOptions.families); docs/architecture.md, "Datapath families", has the checklist.
 */
import type { DatapathFamily } from '@mesh/bpf';
import { MetricsDatapath, peerTableSizeFor } from '@mesh/metrics';
import { SplitDatapath, tableSizesFor } from '@mesh/split';
import type { Registry } from 'prom-client';

import type { ResolvedConfig } from './config/objects.js';
import { type ConfigResolver, knownAddressesOf } from './identity.js';

/** The agent's sizing options, handed to every family's load. */
export interface AgentSizes {
  maxServices?: number;
  maxEndpoints?: number;
  /** Live connections (and unconnected-UDP flows) the split keeps per-connection state for. */
  maxConnections?: number;
  /** Addresses the metrics may name a peer by (its known-peer table, http_peers). */
  maxPeers?: number;
}

/** What a family's load is handed: the sizes, and whom to tell of tables made anew for another capacity. */
export interface LoadContext extends AgentSizes {
  onResize?(maps: string[]): void;
}

/** Per-connection capacity when --max-connections is not given: ~2.7 MiB of kernel memory (split_orig and
 *  split_revnat), where 65,536 took 11 MiB. Enough for a node's live client connections to services; a node
 *  with more raises it (see docs/agent.md, "Table sizes"). */
export const DEFAULT_MAX_CONNECTIONS = 16_384;

/** The sizes the families load with: each flag as given; otherwise the routing tables and the known-peer table
 *  from the first config (tableSizesFor, peerTableSizeFor: twice its size, a floor, a power of two) and the
 *  connection tables' default. */
export function sizesFor(flags: AgentSizes, first: ResolvedConfig): Required<AgentSizes> {
  const fromConfig = tableSizesFor(first.compiled.services);
  return {
    maxServices: flags.maxServices ?? fromConfig.maxServices,
    maxEndpoints: flags.maxEndpoints ?? fromConfig.maxEndpoints,
    maxConnections: flags.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
    maxPeers: flags.maxPeers ?? peerTableSizeFor(knownAddressesOf(first.workloads, first.compiled.services).length),
  };
}

/** What a family's input is made from at each apply. */
export interface ApplyContext {
  config: ResolvedConfig;
  /** The names of this config's workloads and peers (their cgroups exist by then). Made once, when first
   *  asked for. */
  resolver(): Promise<ConfigResolver>;
}

/** A family's input type, from its datapath's applyPart. */
export type FamilyInput<D> = D extends DatapathFamily<infer I, Registry> ? I : never;

/** One datapath family as the agent runs it; `any` in the default: a list holds families of every input type. */
export interface Family<D extends DatapathFamily<any, Registry> = DatapathFamily<any, Registry>> {
  /** Names its pin directories (maps/<name>, links/<name>), its programs in status and its counters. */
  name: string;
  /** Put before its map names in the mesh's fill (status, mesh_map_* gauges); '' keeps them as they are. */
  mapPrefix: string;
  /** Loads with its maps pinned in (and adopted from) `pinDir`. */
  load(pinDir: string, sizes: LoadContext): D;
  /** Its part of a validated config. */
  input(ctx: ApplyContext): FamilyInput<D> | Promise<FamilyInput<D>>;
}

export const splitFamily: Family<SplitDatapath> = {
  name: 'split',
  mapPrefix: 'split_',
  load: (pinDir, s) =>
    SplitDatapath.load({ pinDir, maxServices: s.maxServices, maxEndpoints: s.maxEndpoints, maxConnections: s.maxConnections, maxUdpFlows: s.maxConnections, onResize: s.onResize }),
  input: (ctx) => ctx.config.compiled,
};

export const metricsFamily: Family<MetricsDatapath> = {
  name: 'metrics',
  mapPrefix: '',
  load: (pinDir, s) => MetricsDatapath.load({ pinDir, maxPeers: s.maxPeers, onResize: s.onResize }),
  input: (ctx) => ctx.resolver(),
};

/** Split first, metrics after it; every family's input is made and checked before the first write. */
export const FAMILIES: readonly Family[] = [splitFamily, metricsFamily];
