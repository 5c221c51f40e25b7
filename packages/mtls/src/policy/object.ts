// What PeerAuthentication and AuthorizationPolicy share: the Kubernetes envelope (apiVersion, kind, metadata),
// workload selectors, and errors that name the object and the field.

/** The API versions of security.istio.io the mesh reads; both carry the same schema. */
export const ISTIO_SECURITY_VERSIONS = ['security.istio.io/v1', 'security.istio.io/v1beta1'] as const;

/** A policy the mesh refuses: `<Kind> <namespace>/<name>: <field path>: <reason>`. */
export class PolicyError extends Error {
  constructor(
    readonly kind: string,
    readonly ref: string,
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${kind} ${ref}: ${field}: ${reason}`);
    this.name = 'PolicyError';
  }
}

export interface ObjectMeta {
  readonly namespace: string;
  readonly name: string;
  /** metadata.creationTimestamp (RFC 3339), when given: among equals, the oldest policy wins. */
  readonly createdAt?: string;
}

/** A workload the policies are compiled for. */
export interface WorkloadRef {
  readonly namespace: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  /** The workload's ports (targetPorts): each gets its mode in the compiled view. */
  readonly ports?: readonly number[];
}

export type Fail = (field: string, reason: string) => never;

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Checks the envelope and returns the metadata, the spec and a `fail` naming the object. Unknown top-level or
 * spec fields are the caller's to check (`onlyFields`).
 */
export function readEnvelope(obj: unknown, kind: string): { meta: ObjectMeta; spec: Record<string, unknown>; fail: Fail } {
  const name = isRecord(obj) && isRecord(obj.metadata) && typeof obj.metadata.name === 'string' ? obj.metadata.name : '?';
  const namespace =
    isRecord(obj) && isRecord(obj.metadata) && typeof obj.metadata.namespace === 'string' ? obj.metadata.namespace : '?';
  const fail: Fail = (field, reason) => {
    throw new PolicyError(kind, `${namespace}/${name}`, field, reason);
  };
  if (!isRecord(obj)) fail('(object)', 'expected an object');
  const o = obj as Record<string, unknown>;
  if (o.kind !== kind) fail('kind', `expected ${JSON.stringify(kind)}, got ${JSON.stringify(o.kind)}`);
  if (!ISTIO_SECURITY_VERSIONS.includes(o.apiVersion as (typeof ISTIO_SECURITY_VERSIONS)[number]))
    fail('apiVersion', `expected one of ${ISTIO_SECURITY_VERSIONS.join(', ')}, got ${JSON.stringify(o.apiVersion)}`);
  if (!isRecord(o.metadata)) fail('metadata', 'expected an object');
  const m = o.metadata as Record<string, unknown>;
  if (typeof m.name !== 'string' || m.name === '') fail('metadata.name', 'expected a non-empty string');
  if (typeof m.namespace !== 'string' || m.namespace === '') fail('metadata.namespace', 'expected a non-empty string');
  if (m.creationTimestamp !== undefined && (typeof m.creationTimestamp !== 'string' || Number.isNaN(Date.parse(m.creationTimestamp))))
    fail('metadata.creationTimestamp', 'expected an RFC 3339 time');
  const spec = o.spec ?? {};
  if (!isRecord(spec)) fail('spec', 'expected an object');
  const meta: ObjectMeta = {
    namespace: m.namespace as string,
    name: m.name as string,
    ...(typeof m.creationTimestamp === 'string' ? { createdAt: m.creationTimestamp } : {}),
  };
  return { meta, spec: spec as Record<string, unknown>, fail };
}

/**
 * Rejects fields outside `known`. A field the mesh does not know may be a restriction (a newer Istio's), so it
 * is an error rather than ignored.
 */
export function onlyFields(obj: Record<string, unknown>, known: readonly string[], where: string, fail: Fail): void {
  for (const k of Object.keys(obj)) if (!known.includes(k)) fail(`${where}.${k}`, 'unknown field, not understood by the mesh');
}

/** `selector.matchLabels`; undefined when absent or empty (which Istio reads as: every workload in scope). */
export function readSelector(spec: Record<string, unknown>, fail: Fail): Readonly<Record<string, string>> | undefined {
  const sel = spec.selector;
  if (sel === undefined || sel === null) return undefined;
  if (!isRecord(sel)) fail('spec.selector', 'expected an object');
  const s = sel as Record<string, unknown>;
  onlyFields(s, ['matchLabels'], 'spec.selector', fail);
  if (s.matchLabels === undefined || s.matchLabels === null) return undefined;
  if (!isRecord(s.matchLabels)) fail('spec.selector.matchLabels', 'expected an object of label: value');
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(s.matchLabels as Record<string, unknown>)) {
    if (typeof v !== 'string') fail(`spec.selector.matchLabels.${k}`, 'expected a string');
    labels[k] = v as string;
  }
  return Object.keys(labels).length === 0 ? undefined : labels;
}

export function selects(selector: Readonly<Record<string, string>> | undefined, w: WorkloadRef): boolean {
  if (!selector) return true;
  return Object.entries(selector).every(([k, v]) => w.labels[k] === v);
}

/** Oldest first (creationTimestamp), then by name: Istio's tie-break among policies of one level. */
export function oldestFirst(a: ObjectMeta, b: ObjectMeta): number {
  const ta = a.createdAt ? Date.parse(a.createdAt) : Number.POSITIVE_INFINITY;
  const tb = b.createdAt ? Date.parse(b.createdAt) : Number.POSITIVE_INFINITY;
  if (ta !== tb) return ta < tb ? -1 : 1;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

export function refOf(m: ObjectMeta): string {
  return `${m.namespace}/${m.name}`;
}
