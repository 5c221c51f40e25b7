/** Workload identities on this node: the CA (built-in or external), one SVID per workload of the config kept
 *  fresh by the rotation, the trust bundle; their metrics and their view for /v1/certs. Keys stay in memory. */
import { BuiltinCa, ExternalCa, SvidRotator, workloadSpiffeId, type CertificateAuthority, type RotationEvent, type TrustBundle } from '@mesh/mtls';
import { Counter, Gauge, type Registry } from 'prom-client';

import type { ResolvedWorkload } from './config/objects.js';
import type { Logger } from './log.js';
import type { CertsView } from './views.js';

export interface IdentityOptions {
  trustDomain: string;
  stateDir: string;
  ca: { mode: 'builtin' } | { mode: 'external'; dir: string };
  svidTtlMs: number;
  log: Logger;
}

/** A workload's key in the rotation and in metrics: "<namespace>/<name>". */
const keyOf = (w: ResolvedWorkload) => `${w.namespace}/${w.name}`;

export class WorkloadIdentities {
  private bundle: TrustBundle | undefined;
  private constructor(
    private readonly opts: IdentityOptions,
    readonly ca: CertificateAuthority,
    private readonly rotator: SvidRotator,
  ) {}

  /** Opens the CA (creating the built-in root on first start); throws naming the file when its state is bad. */
  static async open(opts: IdentityOptions): Promise<WorkloadIdentities> {
    const ca = opts.ca.mode === 'builtin' ? await BuiltinCa.open({ stateDir: opts.stateDir, trustDomain: opts.trustDomain }) : new ExternalCa({ dir: opts.ca.dir, trustDomain: opts.trustDomain });
    const log = opts.log.with({ subsystem: 'identity' });
    let self: WorkloadIdentities | undefined;
    const rotator = new SvidRotator({ ca, ttlMs: opts.svidTtlMs, onEvent: (e) => self?.onEvent(e, log) });
    self = new WorkloadIdentities(opts, ca, rotator);
    await self.refreshBundle();
    return self;
  }

  private onEvent(e: RotationEvent, log: Logger): void {
    // Never the key: only what names and dates the certificate.
    if (e.type === 'issued') {
      log.info('svid issued', { workload: e.workload, id: e.svid.uri, serial: e.svid.serial, notAfter: e.svid.notAfter.toISOString(), issuer: e.svid.issuer, nextRenewal: new Date(e.nextRenewalAt).toISOString(), renewal: e.previous !== undefined });
      void this.refreshBundle();
    } else if (e.type === 'failed') {
      log.warn('svid renewal failed', { workload: e.workload, error: e.error, retryAt: new Date(e.retryAt).toISOString(), keptUntil: e.keptUntil ? new Date(e.keptUntil).toISOString() : undefined });
    } else {
      log.error('workload without identity', { workload: e.workload, expiredAt: new Date(e.notAfter).toISOString() });
    }
  }

  /** The bundle as the CA knows it now (an external CA's ca.crt may have changed). */
  private async refreshBundle(): Promise<void> {
    try {
      this.bundle = await this.ca.bundle();
    } catch (err) {
      this.opts.log.warn('trust bundle unreadable; the last one stays', { subsystem: 'identity', error: (err as Error).message });
    }
  }

  /** SVIDs for exactly these workloads: new ones are issued, gone ones dropped. */
  apply(workloads: readonly ResolvedWorkload[]): void {
    this.rotator.setWorkloads(new Map(workloads.map((w) => [keyOf(w), workloadSpiffeId(this.opts.trustDomain, w.namespace, w.serviceAccount)])));
  }

  register(registry: Registry): void {
    const rotator = this.rotator;
    const roots = () => this.bundle;
    new Gauge({
      name: 'mesh_svid_expiry_timestamp_seconds',
      help: "notAfter of the workload's SVID (of the last one when it expired: below time() means no identity; 0 before the first).",
      labelNames: ['workload'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of rotator.status()) this.set({ workload: s.workload }, (s.notAfter ?? 0) / 1000);
      },
    });
    new Counter({
      name: 'mesh_svid_renewals_total',
      help: 'SVID issuances (first ones included) by result.',
      labelNames: ['result'],
      registers: [registry],
      collect() {
        this.reset();
        this.inc({ result: 'success' }, rotator.renewals.success);
        this.inc({ result: 'failure' }, rotator.renewals.failure);
      },
    });
    const td = this.opts.trustDomain;
    new Gauge({
      name: 'mesh_trust_bundle_roots',
      help: 'Roots in the trust bundle (two during a root rotation).',
      labelNames: ['trust_domain'],
      registers: [registry],
      collect() {
        this.set({ trust_domain: td }, roots()?.roots.length ?? 0);
      },
    });
  }

  view(): CertsView {
    const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());
    return {
      trustDomain: this.opts.trustDomain,
      ca: {
        mode: this.ca.kind,
        ...(this.ca instanceof BuiltinCa ? { dir: this.ca.dir, rotationPhase: this.ca.rotationPhase } : { dir: (this.ca as ExternalCa).dir }),
        svidTtlSeconds: this.opts.svidTtlMs / 1000,
      },
      bundle: (this.bundle?.roots ?? []).map((r) => ({ subject: r.subject, serial: r.serialNumber, notAfter: r.notAfter.toISOString() })),
      workloads: this.rotator.status().map((s) => ({
        workload: s.workload,
        id: s.id,
        state: s.state,
        serial: s.serial,
        notAfter: iso(s.notAfter),
        nextRenewal: iso(s.nextRenewalAt),
        issuer: s.issuer,
        lastError: s.lastError,
      })),
    };
  }

  close(): Promise<void> {
    return this.rotator.close();
  }
}
