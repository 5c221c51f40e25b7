// deploy/kubernetes/ as the machine's kubectl renders it, checked against the agent's own code: the ClusterRole
// grants list and watch on exactly what the Kubernetes source watches, the DaemonSet mounts every path the agent
// opens by default, no container is privileged and each added capability has a reason (docs/kubernetes.md).
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { promisify } from 'node:util';

import { BPFFS, pinLayout } from '@mesh/bpf';
import { loadAll } from 'js-yaml';
import { beforeAll, describe, expect, it } from 'vitest';

import { WATCHED } from '../../src/config/kubernetes/resources.js';
import { DEFAULT_STATE_DIR, defaultSvidDir } from '../../src/identity-defaults.js';
import { LOCK_DIR } from '../../src/lock.js';
import { DEFAULT_DATAPLANE, defaultRunDir, MTLS_DEFAULTS } from '../../src/mtls.js';
import { DEFAULT_API, DEFAULT_PIN_ROOT, parseHostPort } from '../../src/paths.js';

const KUBECTL = '/usr/bin/kubectl';
const BASE = resolve(import.meta.dirname, '../../../../deploy/kubernetes');
const MTLS_OVERLAY = resolve(import.meta.dirname, '../../../../deploy/kubernetes-mtls');
// The cgroup2 mount of a cgroup v2 node; the agent finds it in /proc/mounts at run time (cgroup2Mount), so there
// is no constant to import. The kubepods directory below it is found the same way (--cgroup-root unset).
const CGROUP2 = '/sys/fs/cgroup';

// Each capability the DaemonSet may add, and what for (docs/kubernetes.md's table, measured with setpriv).
const ALLOWED_CAPS: Record<string, string> = {
  BPF: 'load programs, create maps, pin them',
  PERFMON: 'the verifier allows the programs\' pointer arithmetic (split_connect4 is refused without it)',
  NET_ADMIN: 'load cgroup sock_addr, cgroup_skb and sockops programs (network program types), query attachments',
  SYS_ADMIN: 'BPF_PROG_GET_FD_BY_ID / MAP_GET_FD_BY_ID when adopting a previous agent\'s pins; mounting bpffs if absent; --bpf-stats',
  SYS_RESOURCE: 'raise RLIMIT_MEMLOCK for maps on kernels before 5.11 (no memcg accounting)',
};

type Obj = { kind: string; apiVersion: string; metadata: { name: string; namespace?: string; annotations?: Record<string, string>; labels?: Record<string, string> }; [k: string]: unknown };
type Container = {
  name: string;
  args?: string[];
  command?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean; mountPropagation?: string }[];
  securityContext?: { privileged?: boolean; allowPrivilegeEscalation?: boolean; capabilities?: { add?: string[]; drop?: string[] } };
  livenessProbe?: { httpGet?: { path: string; port: number; host?: string } };
  readinessProbe?: { httpGet?: { path: string; port: number; host?: string } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
};

const hasKubectl = existsSync(KUBECTL);

describe.skipIf(!hasKubectl)('deploy/kubernetes', { timeout: 30_000 }, () => {
  let objs: Obj[] = [];
  const one = (kind: string) => {
    const found = objs.filter((o) => o.kind === kind);
    expect(found, kind).toHaveLength(1);
    return found[0]!;
  };
  const podSpec = () => (one('DaemonSet') as unknown as { spec: { template: { spec: Record<string, unknown> & { containers: Container[]; initContainers?: Container[]; volumes: { name: string; hostPath?: { path: string } }[] } } } }).spec.template.spec;
  const agent = () => podSpec().containers.find((c) => c.name === 'agent')!;

  beforeAll(async () => {
    // kustomize v5 (in kubectl 1.32) renders with no cluster: a base that does not render fails here.
    const { stdout } = await promisify(execFile)(KUBECTL, ['kustomize', BASE], { timeout: 20_000 });
    objs = (loadAll(stdout) as Obj[]).filter(Boolean);
  });

  it('renders a Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding and DaemonSet, namespaced in mesh-system', () => {
    expect(objs.map((o) => o.kind).sort()).toEqual(['ClusterRole', 'ClusterRoleBinding', 'DaemonSet', 'Namespace', 'ServiceAccount']);
    expect(one('Namespace').metadata.name).toBe('mesh-system');
    for (const k of ['ServiceAccount', 'DaemonSet']) expect(one(k).metadata.namespace, k).toBe('mesh-system');
    const binding = one('ClusterRoleBinding') as unknown as { roleRef: { kind: string; name: string }; subjects: { kind: string; name: string; namespace: string }[] };
    expect(binding.roleRef).toMatchObject({ kind: 'ClusterRole', name: one('ClusterRole').metadata.name });
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: one('ServiceAccount').metadata.name, namespace: 'mesh-system' }]);
    expect(podSpec().serviceAccountName).toBe(one('ServiceAccount').metadata.name);
  });

  it('the ClusterRole grants list and watch on exactly the resources the source watches, nothing else', () => {
    const rules = (one('ClusterRole') as unknown as { rules: { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[]; nonResourceURLs?: string[] }[] }).rules;
    const granted = new Set<string>();
    for (const r of rules) {
      expect(r.nonResourceURLs, 'non-resource URLs').toBeUndefined();
      expect([...r.verbs].sort(), `verbs of ${JSON.stringify(r)}`).toEqual(['list', 'watch']);
      for (const g of r.apiGroups) for (const res of r.resources) granted.add(`${g}/${res}`);
    }
    expect([...granted].sort()).toEqual(WATCHED.map((w) => `${w.group}/${w.name}`).sort());
  });

  it('the DaemonSet mounts, from the node, every path the agent opens by default', () => {
    const spec = podSpec();
    const c = agent();
    const hostPathOf = (mountPath: string) => {
      const m = c.volumeMounts?.find((v) => v.mountPath === mountPath);
      return spec.volumes.find((v) => v.name === m?.name)?.hostPath?.path;
    };
    // The pin root sits in the node's bpffs: the agent checks that BPFFS is one (mounting it otherwise) and pins
    // below it, so the node's own bpffs must be there for the pins to outlive the pod.
    expect(DEFAULT_PIN_ROOT.startsWith(`${BPFFS}/`)).toBe(true);
    for (const path of [BPFFS, CGROUP2, LOCK_DIR, DEFAULT_STATE_DIR]) expect(hostPathOf(path), path).toBe(path);
    for (const path of [BPFFS, CGROUP2, LOCK_DIR, DEFAULT_STATE_DIR]) {
      expect(c.volumeMounts!.find((v) => v.mountPath === path)!.readOnly ?? false, `${path} is written`).toBe(false);
    }
    // The agent's defaults are used: no flag moves a path away from what is mounted.
    for (const flag of ['--pin-root', '--cgroup-root', '--state-dir']) expect(c.args?.some((a) => a.startsWith(flag)) ?? false, flag).toBe(false);
  });

  it('no container is privileged or may escalate; each added capability is allowed with a reason; ALL others dropped', () => {
    const spec = podSpec();
    const containers = [...spec.containers, ...(spec.initContainers ?? [])];
    for (const c of containers) {
      const sc = c.securityContext ?? {};
      expect(sc.privileged ?? false, `${c.name} privileged`).toBe(false);
      expect(sc.capabilities?.drop, `${c.name} drops ALL`).toEqual(['ALL']);
      for (const cap of sc.capabilities?.add ?? []) expect(Object.keys(ALLOWED_CAPS), `${c.name} adds ${cap}`).toContain(cap);
      // Capabilities spelled without CAP_: the API server refuses allowPrivilegeEscalation: false with "CAP_SYS_ADMIN".
      expect(sc.allowPrivilegeEscalation, `${c.name} allowPrivilegeEscalation`).toBe(false);
    }
    expect(agent().securityContext?.capabilities?.add?.sort()).toEqual(['BPF', 'NET_ADMIN', 'PERFMON', 'SYS_ADMIN', 'SYS_RESOURCE']);
  });

  it('probes /healthz and /readyz on the listen address, on the node\'s loopback (hostNetwork)', () => {
    const c = agent();
    const { host, port } = parseHostPort(c.args?.find((a) => a.startsWith('--listen='))?.slice('--listen='.length) ?? DEFAULT_API);
    // The agent listens on loopback only; with hostNetwork that is the node's, where the kubelet's probes run.
    expect(podSpec().hostNetwork).toBe(true);
    expect(c.livenessProbe?.httpGet).toEqual({ path: '/healthz', port, host });
    expect(c.readinessProbe?.httpGet).toEqual({ path: '/readyz', port, host });
    // Prometheus scrapes the pod's address (the node's): /metrics alone is served there (--metrics-listen).
    const metricsListen = c.args?.find((a) => a.startsWith('--metrics-listen='))?.slice('--metrics-listen='.length);
    expect(metricsListen).toMatch(/^\$\(HOST_IP\):\d+$/);
    expect(c.env).toContainEqual({ name: 'HOST_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } });
    const annotations = (one('DaemonSet') as unknown as { spec: { template: { metadata: { annotations: Record<string, string> } } } }).spec.template.metadata.annotations;
    expect(annotations).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': metricsListen!.split(':').pop(), 'prometheus.io/path': '/metrics' });
  });

  it('selects the in-cluster Kubernetes source, names the node from the downward API, and runs everywhere', () => {
    const c = agent();
    expect(c.args).toContain('--kubernetes');
    expect(c.args?.some((a) => a.startsWith('--config') || a.startsWith('--kubeconfig'))).toBe(false);
    expect(c.env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    expect(c.resources?.requests).toHaveProperty('memory');
    expect(c.resources?.limits).toHaveProperty('memory');
    expect(podSpec().tolerations).toContainEqual({ operator: 'Exists' });
    expect((one('DaemonSet') as unknown as { spec: { updateStrategy: unknown } }).spec.updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
  });
});

// The mTLS overlay: the data plane as a container of its own beside the agent's (docs/kubernetes.md, "mTLS").
describe.skipIf(!hasKubectl)('deploy/kubernetes-mtls', { timeout: 30_000 }, () => {
  let objs: Obj[] = [];
  type PodSpec = Record<string, unknown> & { containers: Container[]; volumes: { name: string; hostPath?: { path: string } }[] };
  const podSpec = () => (objs.find((o) => o.kind === 'DaemonSet') as unknown as { spec: { template: { spec: PodSpec } } }).spec.template.spec;
  const container = (name: string) => podSpec().containers.find((c) => c.name === name)!;
  const hostPathOf = (c: Container, mountPath: string) => podSpec().volumes.find((v) => v.name === c.volumeMounts?.find((m) => m.mountPath === mountPath)?.name)?.hostPath?.path;

  beforeAll(async () => {
    const { stdout } = await promisify(execFile)(KUBECTL, ['kustomize', MTLS_OVERLAY], { timeout: 20_000 });
    objs = (loadAll(stdout) as Obj[]).filter(Boolean);
  });

  it('the base\'s objects, the agent with --mtls and --mtls-dataplane-external on the node\'s address, one process namespace', () => {
    expect(objs.map((o) => o.kind).sort()).toEqual(['ClusterRole', 'ClusterRoleBinding', 'DaemonSet', 'Namespace', 'ServiceAccount']);
    const spec = podSpec();
    expect(spec.shareProcessNamespace).toBe(true); // the agent finds, signals and reads the cgroup of the data plane's process
    expect(spec.hostPID).toBe(false);
    const agent = container('agent');
    expect(agent.args).toEqual(expect.arrayContaining(['--kubernetes', '--mtls', '--mtls-dataplane-external']));
    // A patch replaces the args list: the base's flags must all still be there.
    const base = (loadAll(execFileSync(KUBECTL, ['kustomize', BASE], { encoding: 'utf8' })) as Obj[]).find((o) => o.kind === 'DaemonSet') as unknown as { spec: { template: { spec: { containers: Container[] } } } };
    expect(agent.args).toEqual(expect.arrayContaining(base.spec.template.spec.containers.find((c) => c.name === 'agent')!.args!));
    // Reached from pods (outbound) and other nodes (tunnel): the node's address, not the loopback defaults.
    for (const flag of ['--mtls-outbound', '--mtls-tunnel', '--mtls-inbound-source']) expect(agent.args?.find((a) => a.startsWith(`${flag}=`)), flag).toMatch(/=\$\(HOST_IP\)(:\d+)?$/);
    expect(agent.env).toContainEqual({ name: 'HOST_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } });
    expect(agent.args?.some((a) => a.startsWith('--run-dir') || a.startsWith('--pin-root') || a.startsWith('--mtls-stats'))).toBe(false);
  });

  it('the data plane container runs what the agent looks for, on the config the agent writes, and mounts what that names', () => {
    const dp = container('dataplane');
    const agent = container('agent');
    const config = dp.env?.find((e) => e.name === 'DATAPLANE_CONFIG')?.value;
    // The agent writes its --run-dir default's dataplane.json and looks for `<binary name> --config <that file>`.
    expect(config).toBe(join(defaultRunDir(DEFAULT_PIN_ROOT), 'dataplane.json'));
    expect(dp.command?.join(' ')).toContain(`exec ${basename(DEFAULT_DATAPLANE)} --config "$DATAPLANE_CONFIG"`);
    // Files the data plane opens: its config and the SVID files (under the run directory), the pinned map of
    // original destinations (on bpffs) — from the node's paths the agent's container mounts too.
    const opened = [config!, join(defaultSvidDir(DEFAULT_PIN_ROOT), 'x'), join(pinLayout(DEFAULT_PIN_ROOT).maps('mtls'), 'mtls_orig')];
    for (const file of opened) {
      const mount = dp.volumeMounts!.find((m) => file.startsWith(`${m.mountPath}/`));
      expect(mount, file).toBeDefined();
      expect(hostPathOf(dp, mount!.mountPath), file).toBe(hostPathOf(agent, mount!.mountPath));
      expect(mount!.readOnly, `${file}: the data plane writes nothing there`).toBe(true);
    }
    const { port } = parseHostPort(MTLS_DEFAULTS.stats);
    expect(dp.livenessProbe?.httpGet).toEqual({ host: '127.0.0.1', port, path: '/metrics' });
    const sc = dp.securityContext!;
    expect(sc.privileged ?? false).toBe(false);
    expect(sc.allowPrivilegeEscalation).toBe(false);
    expect(sc.capabilities).toEqual({ drop: ['ALL'], add: ['BPF'] });
    expect(dp.resources?.limits).toHaveProperty('memory');
  });
});
