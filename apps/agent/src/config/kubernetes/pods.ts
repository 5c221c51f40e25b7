/**
 * Pods as the mesh sees them: which are in the mesh, and the Workload each becomes (the same kind the file
 * source reads, so the agent handles both sources alike).
 */
import type { V1Namespace, V1Pod } from '@kubernetes/client-node';

import { isDnsLabel, namespaceOf } from '@mesh/split';

import { WORKLOAD_API_VERSION, type Workload } from '../objects.js';
import { POD_UID, type QosClass } from './cgroups.js';

/** `true` on a namespace or a pod puts it in the mesh; `false` on a pod keeps the pod out. */
export const MESH_ENABLED_LABEL = 'mesh.dev/enabled';
/** Istio ambient's label, honoured for migration: `ambient` enrols, `none` on a pod opts out. */
export const ISTIO_DATAPLANE_MODE_LABEL = 'istio.io/dataplane-mode';

type Labels = Record<string, string> | undefined;

const enrols = (l: Labels) => l?.[MESH_ENABLED_LABEL] === 'true' || l?.[ISTIO_DATAPLANE_MODE_LABEL] === 'ambient';

/** Whether a pod is in the mesh: enrolled by its namespace or itself, and not opted out by itself. */
export function inMesh(pod: V1Pod, namespace: V1Namespace | undefined): boolean {
  const labels = pod.metadata?.labels;
  if (labels?.[MESH_ENABLED_LABEL] === 'false' || labels?.[ISTIO_DATAPLANE_MODE_LABEL] === 'none') return false;
  return enrols(labels) || enrols(namespace?.metadata?.labels);
}

/** Why an in-mesh pod cannot be a workload on this node, or undefined when it can. */
export function podProblem(pod: V1Pod): string | undefined {
  const m = pod.metadata;
  if (!m?.uid || !POD_UID.test(m.uid)) return `metadata.uid: ${JSON.stringify(m?.uid)} is not a UID`;
  if (!isDnsLabel(m.name)) return `metadata.name: ${JSON.stringify(m.name)} is not a DNS label, as a workload's name must be`;
  if (pod.spec?.hostNetwork) return 'spec.hostNetwork: the pod shares the node\'s network and cgroup traffic; the mesh leaves it alone';
  const sa = pod.spec?.serviceAccountName ?? 'default';
  if (!isDnsLabel(sa)) return `spec.serviceAccountName: ${JSON.stringify(sa)} is not a DNS label, as an identity's must be`;
  return undefined;
}

/** Finished pods keep their object for a while but have no processes and no cgroup. */
export function isFinished(pod: V1Pod): boolean {
  const phase = pod.status?.phase;
  return phase === 'Succeeded' || phase === 'Failed';
}

export function qosOf(pod: V1Pod): QosClass | undefined {
  const q = pod.status?.qosClass;
  return q === 'Guaranteed' || q === 'Burstable' || q === 'BestEffort' ? q : undefined;
}

export function isReady(pod: V1Pod): boolean {
  return (pod.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

/** The pod's addresses: status.podIPs, or status.podIP from servers that fill only that. */
export function podAddresses(pod: V1Pod): string[] {
  const ips = (pod.status?.podIPs ?? []).map((p) => p.ip).filter((ip): ip is string => typeof ip === 'string' && ip !== '');
  if (ips.length) return ips;
  return pod.status?.podIP ? [pod.status.podIP] : [];
}

/** The workload a pod is: a pod of this node with its cgroup (relative to the agent's cgroup root), another
 *  node's with that node's name. Labels and ports sorted, so the same pod always gives the same object. */
export function podToWorkload(pod: V1Pod, where: { cgroup: string } | { nodeName: string }): Workload {
  const m = pod.metadata!;
  const labels = Object.fromEntries(Object.entries(m.labels ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const ports = (pod.spec?.containers ?? [])
    .flatMap((c) => c.ports ?? [])
    .filter((p) => typeof p.name === 'string' && p.name !== '')
    .map((p) => ({ name: p.name!, port: p.containerPort, protocol: (p.protocol === 'UDP' ? 'UDP' : 'TCP') as 'TCP' | 'UDP' }));
  return {
    apiVersion: WORKLOAD_API_VERSION,
    kind: 'Workload',
    metadata: { name: m.name!, namespace: namespaceOf(m), labels },
    spec: {
      serviceAccount: pod.spec?.serviceAccountName ?? 'default',
      ...where,
      addresses: podAddresses(pod),
      ...(ports.length && { ports }),
      ready: isReady(pod),
    },
  };
}
