/** Workload identities on this node: the CA (built-in or external), one SVID per SPIFFE ID in use here (every
 *  workload of a service account shares its ID's), kept fresh by the rotation, the trust bundle; the files the data
 *  plane reads them from; their metrics and their view for /v1/certs. Keys leave memory only for those files. */
import { createHash } from 'node:crypto';
import { chmodSync, closeSync, fchmodSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { join } from 'node:path';

import { BuiltinCa, ExternalCa, formatSpiffeId, SvidRotator, svidPem, toPem, workloadSpiffeId, type CertificateAuthority, type RotationEvent, type SpiffeId, type TrustBundle } from '@mesh/mtls';
import { Counter, Gauge, type Registry } from 'prom-client';

import type { ResolvedWorkload } from './config/objects.js';
export { defaultSvidDir } from './identity-defaults.js';
import type { Logger } from './log.js';
import type { CertsView } from './views.js';

export interface IdentityOptions {
  trustDomain: string;
  stateDir: string;
  ca: { mode: 'builtin' } | { mode: 'external'; dir: string };
  svidTtlMs: number;
  /** Where the data plane reads the SVIDs (a tmpfs: the keys are in it): made 0700, files 0600. */
  svidDir: string;
  /** Issuances at once (default 4): they run beside everything else the agent does. */
  concurrency?: number;
  log: Logger;
}

/** The files of a workload's SVID: its ID's leaf and intermediates (leaf first), its P-256 key (PKCS#8), the
 *  trust domain's roots; all PEM. */
export interface SvidFiles {
  id: string;
  cert: string;
  key: string;
  bundle: string;
}

/** What changed on disk in one batch of writes: the IDs whose files were written or removed, and the bundle. */
export interface SvidFilesChange {
  ids: string[];
  bundle: boolean;
}

/** A workload's key in the view and in metrics: "<namespace>/<name>". */
const keyOf = (w: ResolvedWorkload) => `${w.namespace}/${w.name}`;

const BUNDLE_FILE = 'bundle.pem';
/** Temporary files end so; no final name does (an ID has no '~'; final names end in .pem or .key). */
const TMP_SUFFIX = '~tmp';
/** Changes are signalled once writes pause; while issuances keep coming, at least this often. */
const SIGNAL_QUIET_MS = 50;
const SIGNAL_MAX_DELAY_MS = 1000;
/** IDs written between two syncs of the directory, at most. */
const SYNC_EVERY = 64;
/** Workload names in one log line about an ID, at most. */
const LOG_WORKLOADS = 10;

/**
 * A file name for an ID, the same for the same ID and different for different ones: "spiffe://td/ns/a/sa/b" →
 * "td+ns+a+sa+b" ('+' is not allowed in an ID); a long ID keeps a readable head and a hash after '~'.
 */
export function svidFileName(uri: string): string {
  const name = uri.replace(/^spiffe:\/\//, '').replaceAll('/', '+');
  if (name.length <= 200) return name;
  return `${name.slice(0, 150)}~${createHash('sha256').update(uri).digest('hex').slice(0, 32)}`;
}

export class WorkloadIdentities {
  private bundle: TrustBundle | undefined;
  /** Workload → the URI of its ID; ID → its workloads. */
  private idOf = new Map<string, string>();
  private workloadsOf = new Map<string, string[]>();
  /** IDs whose files are to be written (when held) or removed (when no longer used); the bundle to re-read. */
  private readonly dirty = new Set<string>();
  private bundleDirty = true;
  private bundlePem: string | undefined;
  /** IDs whose files are on disk. */
  private readonly written = new Set<string>();
  private writer: Promise<void> | undefined;
  /** Set and cleared by writeAll itself, with no turn between its last look at `dirty` and the clearing. */
  private writing = false;
  private readonly listeners = new Set<(c: SvidFilesChange) => void>();
  private unsignalled: { ids: Set<string>; bundle: boolean; since: number } | undefined;
  private signalTimer: NodeJS.Timeout | undefined;
  private firstApply = true;
  private closed = false;
  private readonly log: Logger;

  private constructor(
    private readonly opts: IdentityOptions,
    readonly ca: CertificateAuthority,
    private readonly rotator: SvidRotator,
  ) {
    this.log = opts.log.with({ subsystem: 'identity' });
  }

  /** Opens the CA (creating the built-in root on first start) and the SVID directory; throws naming the file or
   *  directory when either is unusable. */
  static async open(opts: IdentityOptions): Promise<WorkloadIdentities> {
    try {
      mkdirSync(opts.svidDir, { recursive: true, mode: 0o700 });
      chmodSync(opts.svidDir, 0o700);
    } catch (err) {
      throw new Error(`SVID directory ${opts.svidDir}: ${(err as Error).message}`);
    }
    const ca = opts.ca.mode === 'builtin' ? await BuiltinCa.open({ stateDir: opts.stateDir, trustDomain: opts.trustDomain }) : new ExternalCa({ dir: opts.ca.dir, trustDomain: opts.trustDomain });
    let self: WorkloadIdentities | undefined;
    const rotator = new SvidRotator({ ca, ttlMs: opts.svidTtlMs, concurrency: opts.concurrency, onEvent: (e) => self?.onEvent(e) });
    self = new WorkloadIdentities(opts, ca, rotator);
    await self.refreshBundle();
    return self;
  }

  /** Up to LOG_WORKLOADS names of the ID's workloads, and how many there are. */
  private workloadFields(uri: string): { workloads: string[]; workloadCount: number } {
    const all = this.workloadsOf.get(uri) ?? [];
    return { workloads: all.slice(0, LOG_WORKLOADS), workloadCount: all.length };
  }

  private onEvent(e: RotationEvent): void {
    const log = this.log;
    const id = e.workload;
    // Never the key: only what names and dates the certificate.
    if (e.type === 'issued') {
      log.info('svid issued', { id, serial: e.svid.serial, notAfter: e.svid.notAfter.toISOString(), issuer: e.svid.issuer, nextRenewal: new Date(e.nextRenewalAt).toISOString(), renewal: e.previous !== undefined, ...this.workloadFields(id) });
      this.bundleDirty = true;
      this.markDirty(id);
    } else if (e.type === 'failed') {
      log.warn('svid renewal failed', { id, error: e.error, retryAt: new Date(e.retryAt).toISOString(), keptUntil: e.keptUntil ? new Date(e.keptUntil).toISOString() : undefined, ...this.workloadFields(id) });
    } else {
      log.error('workload without identity', { id, expiredAt: new Date(e.notAfter).toISOString(), ...this.workloadFields(id) });
    }
  }

  /** The bundle as the CA knows it now (an external CA's ca.crt may have changed). */
  private async refreshBundle(): Promise<void> {
    try {
      this.bundle = await this.ca.bundle();
    } catch (err) {
      this.log.warn('trust bundle unreadable; the last one stays', { error: (err as Error).message });
    }
  }

  /** SVIDs for the IDs of exactly these workloads: new IDs are issued, IDs no workload uses any more dropped. */
  apply(workloads: readonly ResolvedWorkload[]): void {
    const idOf = new Map<string, string>();
    const workloadsOf = new Map<string, string[]>();
    const ids = new Map<string, SpiffeId>();
    // Thousands of workloads share a few service accounts: each ID is built and checked once.
    const uriOf = new Map<string, string>();
    for (const w of workloads) {
      const sa = `${w.namespace}/${w.serviceAccount}`;
      let uri = uriOf.get(sa);
      if (uri === undefined) {
        const id = workloadSpiffeId(this.opts.trustDomain, w.namespace, w.serviceAccount);
        uri = formatSpiffeId(id);
        uriOf.set(sa, uri);
        ids.set(uri, id);
      }
      idOf.set(keyOf(w), uri);
      const list = workloadsOf.get(uri);
      if (list) list.push(keyOf(w));
      else workloadsOf.set(uri, [keyOf(w)]);
    }
    const gone = [...this.workloadsOf.keys()].filter((uri) => !workloadsOf.has(uri));
    this.idOf = idOf;
    this.workloadsOf = workloadsOf;
    this.rotator.setWorkloads(ids);
    for (const uri of gone) this.markDirty(uri);
    if (this.firstApply) {
      // Files a previous agent left for IDs no longer used here.
      this.firstApply = false;
      this.removeStrays();
    }
  }

  /** The files of a workload's SVID once they are written; undefined before, or for an unknown workload. */
  files(workload: string): SvidFiles | undefined {
    const uri = this.idOf.get(workload);
    if (uri === undefined || !this.written.has(uri)) return undefined;
    const name = svidFileName(uri);
    return { id: uri, cert: join(this.opts.svidDir, `${name}.pem`), key: join(this.opts.svidDir, `${name}.key`), bundle: join(this.opts.svidDir, BUNDLE_FILE) };
  }

  /** Calls `listener` after each batch of file writes (the data plane is to re-read them); returns an unsubscribe. */
  onChange(listener: (c: SvidFilesChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private removeStrays(): void {
    const wanted = new Set([BUNDLE_FILE, ...[...this.workloadsOf.keys()].flatMap((uri) => [`${svidFileName(uri)}.pem`, `${svidFileName(uri)}.key`])]);
    let names: string[];
    try {
      names = readdirSync(this.opts.svidDir);
    } catch {
      return;
    }
    for (const n of names) {
      if (wanted.has(n) || !(n.endsWith('.pem') || n.endsWith('.key') || n.endsWith(TMP_SUFFIX))) continue;
      rmSync(join(this.opts.svidDir, n), { force: true });
    }
  }

  private markDirty(uri: string): void {
    this.dirty.add(uri);
    if (this.writing) return;
    this.writing = true;
    this.writer = this.writeAll();
  }

  /** Writes what is dirty until nothing is, one file at a time (the event loop is served between them); the
   *  directory is synced, then the change signalled, every SYNC_EVERY IDs and when nothing is left. */
  private async writeAll(): Promise<void> {
    let ids: string[] = [];
    let bundle = false;
    const flush = () => {
      if (ids.length || bundle) this.noteChange(ids, bundle);
      ids = [];
      bundle = false;
    };
    while (!this.closed && (this.dirty.size || this.bundleDirty)) {
      await nextTurn();
      if (this.closed) break;
      try {
        if (this.bundleDirty) {
          this.bundleDirty = false;
          await this.refreshBundle();
          const pem = this.bundle ? toPem(this.bundle.roots) : undefined;
          if (pem !== undefined && pem !== this.bundlePem) {
            writeWhole(join(this.opts.svidDir, BUNDLE_FILE), pem);
            this.bundlePem = pem;
            bundle = true;
          }
        }
        const uri = this.dirty.values().next().value;
        if (uri !== undefined) {
          this.dirty.delete(uri);
          const name = join(this.opts.svidDir, svidFileName(uri));
          // Never an expired SVID: one that expired stays as it was on disk (the data plane's peers refuse it).
          const svid = this.workloadsOf.has(uri) ? this.rotator.current(uri) : undefined;
          if (svid) {
            const { cert, key } = await svidPem(svid);
            writeWhole(`${name}.key`, key);
            writeWhole(`${name}.pem`, cert);
            this.written.add(uri);
            ids.push(uri);
          } else if (!this.workloadsOf.has(uri) && this.written.has(uri)) {
            rmSync(`${name}.pem`, { force: true });
            rmSync(`${name}.key`, { force: true });
            this.written.delete(uri);
            ids.push(uri);
          }
        }
        if ((ids.length || bundle) && (ids.length >= SYNC_EVERY || !(this.dirty.size || this.bundleDirty))) {
          syncDir(this.opts.svidDir);
          flush();
        }
      } catch (err) {
        // The next issuance or config change tries again; the files on disk are whole (old or new).
        this.log.error('cannot write the SVID files', { dir: this.opts.svidDir, error: (err as Error).message });
        flush();
      }
    }
    this.writing = false;
    flush();
  }

  /** Signals changes once writes pause (the data plane reloads everything at each signal), at the latest after
   *  SIGNAL_MAX_DELAY_MS while a burst of issuances goes on. */
  private noteChange(ids: string[], bundle: boolean): void {
    const u = (this.unsignalled ??= { ids: new Set(), bundle: false, since: Date.now() });
    for (const id of ids) u.ids.add(id);
    u.bundle ||= bundle;
    if (this.signalTimer) return;
    const check = () => {
      this.signalTimer = undefined;
      const busy = this.writing || this.rotator.pending > 0;
      if (busy && Date.now() - u.since < SIGNAL_MAX_DELAY_MS && !this.closed) {
        this.signalTimer = setTimeout(check, SIGNAL_QUIET_MS);
        return;
      }
      this.unsignalled = undefined;
      const change = { ids: [...u.ids], bundle: u.bundle };
      for (const l of this.listeners) {
        try {
          l(change);
        } catch (err) {
          this.log.error('SVID change listener failed', { error: (err as Error).message });
        }
      }
    };
    this.signalTimer = setTimeout(check, SIGNAL_QUIET_MS);
  }

  register(registry: Registry): void {
    const rotator = this.rotator;
    const byId = () => new Map(rotator.status().map((s) => [s.workload, s]));
    const idOf = () => this.idOf;
    new Gauge({
      name: 'mesh_svid_expiry_timestamp_seconds',
      help: "notAfter of the workload's SVID (of the last one when it expired: below time() means no identity; 0 before the first).",
      labelNames: ['workload'],
      registers: [registry],
      collect() {
        this.reset();
        const ids = byId();
        for (const [workload, uri] of idOf()) this.set({ workload }, (ids.get(uri)?.notAfter ?? 0) / 1000);
      },
    });
    new Gauge({
      name: 'mesh_svid_identity_expiry_timestamp_seconds',
      help: 'notAfter of the SVID of a SPIFFE ID in use on this node (shared by its workloads); as mesh_svid_expiry_timestamp_seconds, one series per ID.',
      labelNames: ['spiffe_id'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of rotator.status()) this.set({ spiffe_id: s.id }, (s.notAfter ?? 0) / 1000);
      },
    });
    new Counter({
      name: 'mesh_svid_renewals_total',
      help: 'SVID issuances (first ones included) by result; one per SPIFFE ID, not per workload.',
      labelNames: ['result'],
      registers: [registry],
      collect() {
        this.reset();
        this.inc({ result: 'success' }, rotator.renewals.success);
        this.inc({ result: 'failure' }, rotator.renewals.failure);
      },
    });
    const td = this.opts.trustDomain;
    const roots = () => this.bundle;
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
    // Per ID once: its workloads show the same certificate.
    const ids = new Map(
      this.rotator.status().map((s) => [
        s.workload,
        { state: s.state, serial: s.serial, notAfter: iso(s.notAfter), nextRenewal: iso(s.nextRenewalAt), issuer: s.issuer, lastError: s.lastError },
      ]),
    );
    const none = { state: 'pending', serial: undefined, notAfter: undefined, nextRenewal: undefined, issuer: undefined, lastError: undefined };
    return {
      trustDomain: this.opts.trustDomain,
      ca: {
        mode: this.ca.kind,
        ...(this.ca instanceof BuiltinCa ? { dir: this.ca.dir, rotationPhase: this.ca.rotationPhase } : { dir: (this.ca as ExternalCa).dir }),
        svidTtlSeconds: this.opts.svidTtlMs / 1000,
      },
      bundle: (this.bundle?.roots ?? []).map((r) => ({ subject: r.subject, serial: r.serialNumber, notAfter: r.notAfter.toISOString() })),
      workloads: [...this.idOf]
        .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
        .map(([workload, uri]) => ({ workload, id: uri, ...(ids.get(uri) ?? none) })),
    };
  }

  /** Resolves when no issuance or file write is under way (tests). */
  async idle(): Promise<void> {
    while (this.rotator.pending || this.writing) {
      await this.rotator.idle();
      await this.writer;
    }
  }

  /** Stops renewing; the files stay for the data plane, which outlives an agent restart. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.signalTimer) clearTimeout(this.signalTimer);
    await this.rotator.close();
    await this.writer;
  }
}

/** Writes `data` to `path`, mode 0600: to a temporary file, synced, then renamed over it, so that a reader sees
 *  the old file or the new one, whole, and a crash leaves one of them. Synchronous: on a tmpfs it takes
 *  microseconds, where each of the six steps through libuv's threads would wait behind the key generations and
 *  signatures queued there (2,000 IDs took 27 s to write that way, beside 16 s of issuance). */
function writeWhole(path: string, data: string): void {
  const tmp = `${path}${TMP_SUFFIX}`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    fchmodSync(fd, 0o600);
    writeFileSync(fd, data);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, path);
}

/** Makes the renames in `dir` durable. */
function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
