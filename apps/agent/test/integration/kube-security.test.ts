// Istio's PeerAuthentication and AuthorizationPolicy (security.istio.io/v1) through the Kubernetes source:
// the snapshot's securityPolicies hold them as the API server returns them (managedFields dropped), follow
// create, update and delete, and a write that changes neither spec nor labels delivers nothing.
import { setTimeout as sleep } from 'node:timers/promises';

import { afterEach, expect, it as vitestIt } from 'vitest';

import { describePrivileged, realCluster, type KubeObject } from '@mesh/testkit';

import { namespace, type Rig, startRig, WAIT_MS, waitFor } from './kube-harness.js';

/** Against a real cluster (MESH_TEST_KUBECONFIG) these are skipped: see the reason. */
const it: typeof vitestIt = realCluster() ? (((name: string, fn: () => Promise<void>, timeout?: number) => vitestIt.skip(`${name} (skipped: it compares every policy of the cluster, and a cluster may hold its own)`, fn, timeout)) as typeof vitestIt) : vitestIt;

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

const peerAuth = (ns: string, name: string, mode: string): KubeObject => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'PeerAuthentication',
  metadata: { name, namespace: ns },
  spec: { mtls: { mode } },
});

const authz = (ns: string, name: string, principals: string[]): KubeObject => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name, namespace: ns, labels: { team: 'shop' } },
  spec: { selector: { matchLabels: { app: 'reviews' } }, action: 'ALLOW', rules: [{ from: [{ source: { principals } }] }] },
});

const policies = (r: Rig) => (r.last()?.securityPolicies ?? []) as KubeObject[];
const names = (r: Rig) => policies(r).map((o) => `${o.kind} ${o.metadata.namespace}/${o.metadata.name}`);

describePrivileged('Kubernetes source: Istio security objects', () => {
  it('delivers PeerAuthentications and AuthorizationPolicies as the server returns them, and follows changes', async () => {
    rig = await startRig();
    const { server } = rig;
    await waitFor(() => rig!.updates.length === 1, WAIT_MS, 'the first snapshot');
    expect(policies(rig)).toEqual([]);

    server.create(namespace('istio-system'));
    server.create(namespace('shop'));
    server.create(peerAuth('istio-system', 'default', 'STRICT'));
    const created = server.create({ ...authz('shop', 'reviews-viewers', ['cluster.local/ns/shop/sa/web']), metadata: { ...authz('shop', 'x', []).metadata, name: 'reviews-viewers', managedFields: [{ manager: 'kubectl', operation: 'Apply' }] } });
    await waitFor(() => policies(rig!).length === 2, WAIT_MS, 'both objects in the snapshot');
    expect(names(rig)).toEqual(['PeerAuthentication istio-system/default', 'AuthorizationPolicy shop/reviews-viewers']);
    const ap = policies(rig).find((o) => o.kind === 'AuthorizationPolicy')!;
    expect(ap.apiVersion).toBe('security.istio.io/v1');
    expect(ap.spec).toEqual(created.spec);
    expect(ap.metadata).toMatchObject({ name: 'reviews-viewers', namespace: 'shop', labels: { team: 'shop' }, uid: created.metadata.uid });
    expect(ap.metadata.managedFields).toBeUndefined();

    // An update of the spec is delivered.
    server.replace(peerAuth('istio-system', 'default', 'PERMISSIVE'));
    await waitFor(() => (policies(rig!).find((o) => o.kind === 'PeerAuthentication')?.spec as any)?.mtls?.mode === 'PERMISSIVE', WAIT_MS, 'the new mode');

    // A write that changes nothing the policies say (an annotation) delivers nothing.
    const before = rig.updates.length;
    const cur = server.get(peerAuth('istio-system', 'default', ''))!;
    server.replace({ ...cur, metadata: { ...cur.metadata, annotations: { note: 'x' } } });
    await sleep(500);
    expect(rig.updates.length).toBe(before);

    // Deletes.
    server.delete(peerAuth('istio-system', 'default', ''));
    server.delete(authz('shop', 'reviews-viewers', []));
    await waitFor(() => policies(rig!).length === 0, WAIT_MS, 'both objects gone');
  });
});
