// Istio's PeerAuthentication (security.istio.io/v1, v1beta1), read as it is: spec.mtls.mode, spec.portLevelMtls,
// spec.selector.matchLabels. Which policy applies to a workload is decided in compile.ts.
import { isRecord, onlyFields, readEnvelope, readSelector, type Fail, type ObjectMeta } from './object.js';

export const MTLS_MODES = ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'] as const;
export type MtlsMode = (typeof MTLS_MODES)[number];

export interface PeerAuthentication extends ObjectMeta {
  readonly selector?: Readonly<Record<string, string>>;
  readonly mode: MtlsMode;
  /** Per workload port (targetPort); UNSET inherits the workload's mode. */
  readonly portLevel: ReadonlyMap<number, MtlsMode>;
}

function readMode(v: unknown, where: string, fail: Fail): MtlsMode {
  if (v === undefined || v === null) return 'UNSET';
  if (!isRecord(v)) fail(where, 'expected an object');
  const o = v as Record<string, unknown>;
  onlyFields(o, ['mode'], where, fail);
  if (o.mode === undefined || o.mode === null) return 'UNSET';
  if (!MTLS_MODES.includes(o.mode as MtlsMode)) fail(`${where}.mode`, `expected one of ${MTLS_MODES.join(', ')}, got ${JSON.stringify(o.mode)}`);
  return o.mode as MtlsMode;
}

/** Parses one PeerAuthentication object; throws PolicyError naming the field. */
export function parsePeerAuthentication(obj: unknown): PeerAuthentication {
  const { meta, spec, fail } = readEnvelope(obj, 'PeerAuthentication');
  onlyFields(spec, ['selector', 'mtls', 'portLevelMtls'], 'spec', fail);
  const selector = readSelector(spec, fail);
  const mode = readMode(spec.mtls, 'spec.mtls', fail);
  const portLevel = new Map<number, MtlsMode>();
  if (spec.portLevelMtls !== undefined && spec.portLevelMtls !== null) {
    if (!isRecord(spec.portLevelMtls)) fail('spec.portLevelMtls', 'expected an object of port: { mode }');
    for (const [k, v] of Object.entries(spec.portLevelMtls as Record<string, unknown>)) {
      const port = Number(k);
      if (!/^[0-9]+$/.test(k) || port < 1 || port > 65535) fail(`spec.portLevelMtls.${k}`, 'expected a port from 1 to 65535');
      portLevel.set(port, readMode(v, `spec.portLevelMtls.${k}`, fail));
    }
    // Istio's own validation: port-level settings name a workload's ports, so they need a workload selector.
    if (portLevel.size > 0 && !selector) fail('spec.portLevelMtls', 'needs spec.selector (a namespace- or mesh-wide policy has no ports of its own)');
  }
  return { ...meta, ...(selector ? { selector } : {}), mode, portLevel };
}
