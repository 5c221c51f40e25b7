/** A config source produces snapshots of the mesh's objects: the file source on one machine, the Kubernetes
 *  source (Services, EndpointSlices, HTTPRoutes from the API server) across machines. Same snapshot type. */
import type { Registry } from 'prom-client';

import type { ConfigSnapshot } from './objects.js';

export type ConfigUpdate =
  /** A new set of objects; `revision` identifies it in logs and status (a content hash, a resourceVersion). */
  | { snapshot: ConfigSnapshot; revision: string; error?: undefined; readMs?: number }
  /** The source could not produce a snapshot (unreadable, bad syntax…): the agent keeps what it has. */
  | { error: Error; revision?: string; snapshot?: undefined };

export interface ConfigSource {
  /** Human-readable, for logs: "file /etc/mesh/mesh.yaml". */
  readonly description: string;
  /** Starts watching; the first update is delivered before start() returns or soon after. */
  start(onUpdate: (u: ConfigUpdate) => void): void;
  stop(): void;
  /** false when something else makes and removes workloads' cgroups (kubelet, for the Kubernetes source). */
  readonly managesCgroups?: boolean;
  /** The source's own state (watches, last error), shown by status. */
  health?(): unknown;
  /** Why the source cannot vouch for the state in force (its server unreachable, its watches not synced),
   *  for /readyz; undefined when it can. The datapath keeps the last state either way. */
  notReady?(): string | undefined;
  /** Registers the source's own metrics. */
  register?(registry: Registry): void;
}
