// Keeps one SVID per name (the agent names each SPIFFE ID in use by itself): issued at once, renewed at half its
// lifetime ± jitter; when the CA fails, the last good SVID is kept and the renewal retried with backoff; an SVID
// is never handed out past its notAfter, and a name whose SVID expired is reported as without identity until the
// CA signs again. Issuances wait in a queue and run a few at a time, the event loop served between them: thousands
// due at once (a start, a root switch) must not starve the agent's other work.
import { formatSpiffeId, type SpiffeId } from './spiffe-id.js';
import { DEFAULT_SVID_TTL_MS, MIN_SVID_TTL_MS, type Svid } from './svid.js';
import type { CertificateAuthority } from './ca.js';
import { systemClock, type Clock } from './clock.js';

export type RotationEvent =
  | {
      type: 'issued';
      workload: string;
      svid: Svid;
      /** When the issuance started, and when it was scheduled (renewals only). */
      at: number;
      scheduledAt?: number;
      /** The SVID it replaces, if any. */
      previous?: Svid;
      nextRenewalAt: number;
    }
  | { type: 'failed'; workload: string; at: number; error: string; retryAt: number; keptUntil?: number }
  | { type: 'expired'; workload: string; at: number; notAfter: number };

/** `valid`: holds an SVID valid now; `pending`: none issued yet; `expired`: its SVID expired and no new one came. */
export type IdentityState = 'valid' | 'pending' | 'expired';

export interface IdentityStatus {
  workload: string;
  id: string;
  state: IdentityState;
  /** The SVID held, or the last one when `expired`. */
  serial?: string;
  notBefore?: number;
  notAfter?: number;
  issuer?: string;
  nextRenewalAt?: number;
  lastError?: string;
  consecutiveFailures: number;
}

export interface RotatorOptions {
  ca: CertificateAuthority;
  clock?: Clock;
  /** SVID lifetime; default 24 h. */
  ttlMs?: number;
  /** Renewal at lifetime × (0.5 ± jitter); default 0.1. */
  jitter?: number;
  random?: () => number;
  /** First retry after a failure, doubled per failure up to maxMs. Defaults: min(1 s, max); min(60 s, TTL/10). */
  retry?: { initialMs?: number; maxMs?: number };
  /** Issuances in flight at most; default 4 (key generation and signing run on libuv's 4 threads). */
  concurrency?: number;
  onEvent?: (e: RotationEvent) => void;
}

interface Entry {
  workload: string;
  id: SpiffeId;
  uri: string;
  svid?: Svid;
  expiredReported: boolean;
  timer?: unknown;
  expiryTimer?: unknown;
  nextAt?: number;
  scheduledAt?: number;
  failures: number;
  lastError?: string;
  removed: boolean;
  /** Waiting in the queue; holding an issuance slot; asking the CA (from then on, a renewal requested is one
   *  more: `again`, after this one). */
  queued: boolean;
  running: boolean;
  signing: boolean;
  again: boolean;
}

export class SvidRotator {
  readonly #ca: CertificateAuthority;
  readonly #clock: Clock;
  readonly #ttl: number;
  readonly #jitter: number;
  readonly #random: () => number;
  readonly #retryInitial: number;
  readonly #retryMax: number;
  readonly #onEvent: (e: RotationEvent) => void;
  readonly #entries = new Map<string, Entry>();
  readonly #inflight = new Set<Promise<void>>();
  readonly #concurrency: number;
  /** Entries due for issuance, in order; at most #concurrency of them issued at once. */
  readonly #queue = new Set<Entry>();
  #running = 0;
  #closed = false;
  /** Renewal outcomes since start, for `mesh_svid_renewals_total{result}`. */
  readonly renewals = { success: 0, failure: 0 };

  constructor(o: RotatorOptions) {
    this.#ca = o.ca;
    this.#clock = o.clock ?? systemClock;
    this.#ttl = o.ttlMs ?? DEFAULT_SVID_TTL_MS;
    if (!Number.isInteger(this.#ttl) || this.#ttl < MIN_SVID_TTL_MS) throw new RangeError(`ttlMs must be an integer ≥ ${MIN_SVID_TTL_MS}, got ${o.ttlMs}`);
    this.#jitter = o.jitter ?? 0.1;
    if (!(this.#jitter >= 0 && this.#jitter <= 0.4)) throw new RangeError(`jitter must be within [0, 0.4], got ${o.jitter}`);
    this.#random = o.random ?? Math.random;
    this.#retryMax = o.retry?.maxMs ?? Math.min(60_000, Math.max(100, Math.floor(this.#ttl / 10)));
    this.#retryInitial = o.retry?.initialMs ?? Math.min(1000, this.#retryMax);
    this.#onEvent = o.onEvent ?? (() => {});
    this.#concurrency = o.concurrency ?? 4;
    if (!Number.isInteger(this.#concurrency) || this.#concurrency < 1) throw new RangeError(`concurrency must be an integer ≥ 1, got ${o.concurrency}`);
  }

  /** Issuances waiting or in flight. */
  get pending(): number {
    return this.#queue.size + this.#running;
  }

  /** Makes the set of workloads exactly `wanted` (workload name → ID): new ones are issued, gone ones dropped. */
  setWorkloads(wanted: ReadonlyMap<string, SpiffeId>): void {
    for (const w of [...this.#entries.keys()]) if (!wanted.has(w)) this.remove(w);
    for (const [w, id] of wanted) {
      const e = this.#entries.get(w);
      if (e && e.uri === formatSpiffeId(id)) continue;
      if (e) this.remove(w);
      this.add(w, id);
    }
  }

  add(workload: string, id: SpiffeId): void {
    if (this.#closed) throw new TypeError('the rotator is closed');
    if (this.#entries.has(workload)) throw new RangeError(`workload ${workload} already has an identity`);
    const e: Entry = { workload, id, uri: formatSpiffeId(id), expiredReported: false, failures: 0, removed: false, queued: false, running: false, signing: false, again: false };
    this.#entries.set(workload, e);
    this.#run(e);
  }

  remove(workload: string): boolean {
    const e = this.#entries.get(workload);
    if (!e) return false;
    e.removed = true;
    this.#clearTimers(e);
    this.#queue.delete(e);
    this.#entries.delete(workload);
    return true;
  }

  /** The workload's SVID if it holds one valid now; never an expired one. */
  current(workload: string): Svid | undefined {
    const svid = this.#entries.get(workload)?.svid;
    if (!svid) return undefined;
    const now = this.#clock.now();
    return now >= svid.notBefore.getTime() && now < svid.notAfter.getTime() ? svid : undefined;
  }

  /** Renews every workload now (after a CA root switch, so leaves move to the new root without waiting). */
  renewAll(): void {
    for (const e of this.#entries.values()) {
      this.#clearTimer(e);
      this.#run(e);
    }
  }

  status(): IdentityStatus[] {
    return [...this.#entries.values()]
      .map((e) => {
        const valid = this.current(e.workload);
        const state: IdentityState = valid ? 'valid' : e.svid ? 'expired' : 'pending';
        const s: IdentityStatus = { workload: e.workload, id: e.uri, state, consecutiveFailures: e.failures };
        // An expired SVID is described too (its notAfter says since when the workload is without identity).
        const svid = e.svid;
        if (svid) Object.assign(s, { serial: svid.serial, notBefore: svid.notBefore.getTime(), notAfter: svid.notAfter.getTime(), issuer: svid.issuer });
        if (e.nextAt !== undefined) s.nextRenewalAt = e.nextAt;
        if (e.lastError !== undefined) s.lastError = e.lastError;
        return s;
      })
      // By code unit, not localeCompare: that loads ICU's collation data (~2.7 MiB of RSS) on the first status.
      .sort((a, b) => (a.workload < b.workload ? -1 : a.workload > b.workload ? 1 : 0));
  }

  /** Resolves when no issuance is in flight (for tests that drive a fake clock, and for shutdown). */
  async idle(): Promise<void> {
    while (this.#inflight.size) await Promise.allSettled([...this.#inflight]);
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const w of [...this.#entries.keys()]) this.remove(w);
    await this.idle();
  }

  #clearTimer(e: Entry): void {
    if (e.timer !== undefined) this.#clock.clearTimeout(e.timer);
    e.timer = undefined;
  }

  #clearTimers(e: Entry): void {
    this.#clearTimer(e);
    if (e.expiryTimer !== undefined) this.#clock.clearTimeout(e.expiryTimer);
    e.expiryTimer = undefined;
  }

  #schedule(e: Entry, at: number): void {
    this.#clearTimer(e);
    e.nextAt = at;
    e.scheduledAt = at;
    e.timer = this.#clock.setTimeout(() => {
      e.timer = undefined;
      this.#run(e);
    }, Math.max(0, at - this.#clock.now()));
  }

  /** Renewal point of an SVID: its lifetime × (0.5 ± jitter). */
  #renewAt(svid: Svid): number {
    const nb = svid.notBefore.getTime();
    const life = svid.notAfter.getTime() - nb;
    return nb + Math.round(life * (0.5 + this.#jitter * (2 * this.#random() - 1)));
  }

  /** Queues an issuance for `e` (once: a renewal already due or running is not doubled). */
  #run(e: Entry): void {
    if (e.removed) return;
    if (e.running) {
      // Already asking the CA: one more after it (after a root switch, a leaf of the new root); not yet: the
      // issuance about to start is the one wanted.
      if (e.signing) e.again = true;
      return;
    }
    if (e.queued) return;
    e.queued = true;
    this.#queue.add(e);
    this.#pump();
  }

  #pump(): void {
    while (this.#running < this.#concurrency && this.#queue.size) {
      const e = this.#queue.values().next().value as Entry;
      this.#queue.delete(e);
      e.queued = false;
      this.#running++;
      e.running = true;
      const p = this.#issue(e).finally(() => {
        this.#running--;
        e.running = false;
        e.signing = false;
        this.#inflight.delete(p);
        if (e.again && !e.removed) {
          e.again = false;
          this.#clearTimer(e);
          this.#run(e);
        }
        this.#pump();
      });
      this.#inflight.add(p);
    }
  }

  async #issue(e: Entry): Promise<void> {
    // A turn of the event loop before each issuance: what waits (requests, timers) is served between them.
    await new Promise((r) => setImmediate(r));
    if (e.removed || this.#closed) return;
    e.signing = true;
    const at = this.#clock.now();
    const scheduledAt = e.svid ? e.scheduledAt : undefined;
    let svid: Svid;
    try {
      svid = await this.#ca.issue(e.id, { ttlMs: this.#ttl });
    } catch (err) {
      if (e.removed) return;
      e.failures++;
      e.lastError = err instanceof Error ? err.message : String(err);
      this.renewals.failure++;
      const delay = Math.min(this.#retryMax, this.#retryInitial * 2 ** Math.min(e.failures - 1, 30));
      const retryAt = this.#clock.now() + delay;
      this.#schedule(e, retryAt);
      const kept = this.current(e.workload);
      this.#onEvent({ type: 'failed', workload: e.workload, at: this.#clock.now(), error: e.lastError, retryAt, ...(kept ? { keptUntil: kept.notAfter.getTime() } : {}) });
      return;
    }
    if (e.removed) return;
    const previous = e.svid;
    e.svid = svid;
    e.failures = 0;
    e.lastError = undefined;
    e.expiredReported = false;
    this.renewals.success++;
    const next = this.#renewAt(svid);
    this.#schedule(e, next);
    this.#watchExpiry(e, svid);
    this.#onEvent({ type: 'issued', workload: e.workload, svid, at, ...(scheduledAt !== undefined ? { scheduledAt } : {}), ...(previous ? { previous } : {}), nextRenewalAt: next });
  }

  /** Reports the moment an SVID expires with no successor: the workload is then without identity. */
  #watchExpiry(e: Entry, svid: Svid): void {
    if (e.expiryTimer !== undefined) this.#clock.clearTimeout(e.expiryTimer);
    const notAfter = svid.notAfter.getTime();
    e.expiryTimer = this.#clock.setTimeout(() => {
      e.expiryTimer = undefined;
      if (e.removed || e.svid !== svid || e.expiredReported) return;
      e.expiredReported = true;
      this.#onEvent({ type: 'expired', workload: e.workload, at: this.#clock.now(), notAfter });
    }, Math.max(0, notAfter - this.#clock.now()));
  }
}
