// What the apiserver fills in or refuses for the built-in kinds whose fields the mesh reads: a Service gets
// its type, port protocols and targetPorts, and a cluster IP that it keeps for life.
import type { KubeObject, ResourceType } from './resources.js';
import { ApiError } from './status.js';

interface ClusterIPs {
  serviceClusterIPRange: string;
  list(r: ResourceType): KubeObject[];
}

type Spec = Record<string, unknown>;

export function applyDefaults(r: ResourceType, obj: KubeObject, store: ClusterIPs): void {
  if (r.group !== '' || r.plural !== 'services') return;
  const spec = (obj.spec ??= {}) as Spec;
  spec.type ??= 'ClusterIP';
  spec.sessionAffinity ??= 'None';
  if (Array.isArray(spec.ports)) {
    for (const p of spec.ports as Spec[]) {
      p.protocol ??= 'TCP';
      p.targetPort ??= p.port;
    }
  }
  if (spec.type === 'ExternalName') return;
  spec.clusterIP ??= allocate(r, store);
  spec.clusterIPs ??= [spec.clusterIP];
  if (spec.clusterIP !== 'None') {
    spec.ipFamilies ??= [String(spec.clusterIP).includes(':') ? 'IPv6' : 'IPv4'];
    spec.ipFamilyPolicy ??= 'SingleStack';
  }
  spec.internalTrafficPolicy ??= 'Cluster';
}

/** An update keeps a Service's cluster IP when it names none, and may not change it. */
export function checkUpdate(r: ResourceType, old: KubeObject, obj: KubeObject, store: ClusterIPs): void {
  if (r.group !== '' || r.plural !== 'services') return;
  const was = (old.spec ?? {}) as Spec;
  const spec = (obj.spec ??= {}) as Spec;
  if (spec.clusterIP === undefined || spec.clusterIP === '') {
    spec.clusterIP = was.clusterIP;
    spec.clusterIPs ??= was.clusterIPs;
  }
  if (spec.clusterIP !== was.clusterIP) {
    throw ApiError.invalid(r.kind, old.metadata.name!, r.group, 'spec.clusterIPs[0]', `Invalid value: ${JSON.stringify(spec.clusterIP)}: may not change once set`);
  }
  applyDefaults(r, obj, store);
}

// Test traffic may only reach loopback, so the default range is in 127.0.0.0/8: a Service VIP that no hook
// rewrites never leaves the machine.
function allocate(r: ResourceType, store: ClusterIPs): string {
  const { base, size } = parseRange(store.serviceClusterIPRange);
  const used = new Set(store.list(r).map((s) => (s.spec as Spec | undefined)?.clusterIP));
  for (let i = 1; i < size - 1; i++) {
    const n = (base + i) >>> 0;
    const ip = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
    if (!used.has(ip)) return ip;
  }
  throw ApiError.invalid('Service', '', '', 'spec.clusterIP', `Internal error: range ${store.serviceClusterIPRange} is full`);
}

/** An IPv4 CIDR as its first address and size; a TypeError naming the option otherwise. */
export function parseRange(cidr: string): { base: number; size: number } {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  const octets = m ? m.slice(1, 5).map(Number) : [];
  const bits = m ? Number(m[5]) : -1;
  if (!m || octets.some((o) => o > 255) || bits > 30) {
    throw new TypeError(`serviceClusterIPRange must be an IPv4 CIDR of at most /30 (e.g. 127.96.0.0/16), got ${JSON.stringify(cidr)}`);
  }
  const size = 2 ** (32 - bits);
  const address = octets.reduce((n, o) => n * 256 + o, 0);
  return { base: address - (address % size), size };
}
