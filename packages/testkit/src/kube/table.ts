// Server-side printing: what `kubectl get` asks for (Accept: application/json;as=Table;v=v1;g=meta.k8s.io) and
// prints as columns. The columns are the apiserver's for the built-in kinds and the CRDs' printer columns.
import type { KubeObject, ResourceType } from './resources.js';

interface Column {
  name: string;
  type: 'string' | 'integer' | 'date';
  format?: 'name';
  /** 0: always shown; 1: with -o wide. */
  priority: number;
  cell(obj: KubeObject): string | number;
}

type Fields = Record<string, any>;

const spec = (o: KubeObject): Fields => (o.spec ?? {}) as Fields;
const status = (o: KubeObject): Fields => (o.status ?? {}) as Fields;
const col = (name: string, cell: Column['cell'], priority = 0, type: Column['type'] = 'string'): Column => ({ name, type, priority, cell });
const NAME: Column = { name: 'Name', type: 'string', format: 'name', priority: 0, cell: (o) => o.metadata.name ?? '' };
const AGE = col('Age', (o) => age(o.metadata.creationTimestamp));
const orNone = (s: string): string => (s === '' ? '<none>' : s);

const COLUMNS: Record<string, Column[]> = {
  Namespace: [NAME, col('Status', (o) => status(o).phase ?? 'Active'), AGE],
  Service: [
    NAME,
    col('Type', (o) => spec(o).type ?? ''),
    col('Cluster-IP', (o) => spec(o).clusterIP ?? '<none>'),
    col('External-IP', (o) => orNone((spec(o).externalIPs ?? []).join(','))),
    col('Port(s)', (o) => orNone(((spec(o).ports ?? []) as Fields[]).map((p) => `${p.port}/${p.protocol ?? 'TCP'}`).join(','))),
    AGE,
    col('Selector', (o) => orNone(Object.entries((spec(o).selector ?? {}) as Record<string, string>).map(([k, v]) => `${k}=${v}`).join(',')), 1),
  ],
  Pod: [
    NAME,
    col('Ready', (o) => `${((status(o).containerStatuses ?? []) as Fields[]).filter((c) => c.ready).length}/${(spec(o).containers ?? []).length}`),
    col('Status', (o) => status(o).phase ?? 'Pending'),
    col('Restarts', (o) => ((status(o).containerStatuses ?? []) as Fields[]).reduce((n, c) => n + (c.restartCount ?? 0), 0), 0, 'integer'),
    AGE,
    col('IP', (o) => status(o).podIP ?? '<none>', 1),
    col('Node', (o) => spec(o).nodeName ?? '<none>', 1),
  ],
  EndpointSlice: [
    NAME,
    col('AddressType', (o) => String(o.addressType ?? '')),
    col('Ports', (o) => orNone(((o.ports ?? []) as Fields[]).map((p) => p.port).join(','))),
    col('Endpoints', (o) => orNone(((o.endpoints ?? []) as Fields[]).flatMap((e) => e.addresses ?? []).join(','))),
    AGE,
  ],
  HTTPRoute: [NAME, col('Hostnames', (o) => (spec(o).hostnames ?? []).join(',')), AGE],
};

/** Whether an Accept header asks for a meta.k8s.io/v1 Table. */
export function wantsTable(accept: string | undefined): boolean {
  return (accept ?? '').split(',').some((t) => /;\s*as=Table/.test(t) && /;\s*g=meta\.k8s\.io/.test(t) && /;\s*v=v1(?:;|$)/.test(t));
}

export type IncludeObject = 'None' | 'Metadata' | 'Object';

/** A Table of `objects`; `withColumns` false for the watch events after the first, as the apiserver sends them. */
export function table(r: ResourceType, objects: KubeObject[], resourceVersion: string, include: IncludeObject, withColumns = true): object {
  const columns = COLUMNS[r.kind] ?? [NAME, AGE];
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: { resourceVersion },
    ...(withColumns && {
      columnDefinitions: columns.map((c) => ({ name: c.name, type: c.type, format: c.format ?? '', description: '', priority: c.priority })),
    }),
    rows: objects.map((o) => ({
      cells: columns.map((c) => c.cell(o)),
      ...(include !== 'None' && {
        object: include === 'Object' ? o : { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata },
      }),
    })),
  };
}

/** kubectl's AGE: 45s, 5m3s, 42m, 3h5m, 20h, 3d4h, 60d, 3y. */
export function age(since: string | undefined, now = Date.now()): string {
  if (since === undefined) return '<unknown>';
  const s = Math.max(0, Math.floor((now - Date.parse(since)) / 1000));
  const m = Math.floor(s / 60);
  const h = Math.floor(m / 60);
  const d = Math.floor(h / 24);
  const pair = (a: number, ua: string, b: number, ub: string): string => (b === 0 ? `${a}${ua}` : `${a}${ua}${b}${ub}`);
  if (s < 120) return `${s}s`;
  if (m < 10) return pair(m, 'm', s % 60, 's');
  if (h < 3) return `${m}m`;
  if (h < 8) return pair(h, 'h', m % 60, 'm');
  if (h < 48) return `${h}h`;
  if (d < 8) return pair(d, 'd', h % 24, 'h');
  if (d < 365 * 2) return `${d}d`;
  return `${Math.floor(d / 365)}y`;
}
