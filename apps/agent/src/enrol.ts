/** Which workloads are in mTLS, by label: apart from mtls.ts so that the page's graph can say it without
 *  loading the datapath (and the native addon) that mtls.ts brings. */
import type { ResolvedWorkload } from './config/objects.js';

/** Labels that enrol a workload (the first is the mesh's; the second is Istio ambient's, for migrating users). */
export const ENROL_LABELS: Readonly<Record<string, string>> = { 'mesh.dev/mtls': 'enabled', 'istio.io/dataplane-mode': 'ambient' };

export const enrolled = (w: Pick<ResolvedWorkload, 'labels'>): boolean => Object.entries(ENROL_LABELS).some(([k, v]) => w.labels[k] === v);
