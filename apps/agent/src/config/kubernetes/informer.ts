/**
 * One informer kept alive: list (in pages), then watch from the list's resourceVersion, caching the objects by
 * namespace/name, as client-go's reflector does. What it does when the server misbehaves:
 *  - a watch the server ends is made again at once from the last resourceVersion (bookmarks asked for, so that
 *    stays recent); a watch that hears nothing for `silenceMs` is made again likewise;
 *  - an expired resourceVersion, as HTTP 410 or as HTTP 200 then an ERROR event whose Status has code 410 (what
 *    real servers send), relists;
 *  - any other error (a cut connection, an unreachable server, a failed list) marks it unhealthy and retries with
 *    backoff (1 s, doubling to 30 s, reset once a watch is open again), from the resourceVersion it had, so a
 *    short outage ends in a watch that resumes without a relist. Its cache stays as it was meanwhile;
 *  - an update whose resourceVersion equals the cached one is dropped.
 *
 * Memory: lists are read in pages, and every object, listed or watched, goes through `transform` before it is
 * cached (as client-go's SetTransform), so the cache holds what the source reads, not whole objects.
 */
import { setTimeout as sleep } from 'node:timers/promises';

import { ApiError, type KubeClient, type WatchEvent } from './client.js';
import type { ListFn } from './resources.js';

/** What an informer caches: an object with the metadata its cache is keyed and compared on. */
export interface KubernetesObject {
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
}

/** Items per list page (client-go's pager default). */
export const LIST_PAGE = 500;

export interface InformerOptions {
  /** First restart delay after an error; doubles per failed restart. Default 1,000 ms. */
  backoffMinMs?: number;
  /** Default 30,000 ms. */
  backoffMaxMs?: number;
  /** A watch that receives nothing for this long is made again (from its resourceVersion). Default 30,000 ms. */
  silenceMs?: number;
}

export interface InformerHealth {
  /** Listed at least once: the cache holds the server's objects (maybe stale while unhealthy). */
  synced: boolean;
  /** Its watch is up: false from an error until a restart succeeds. */
  healthy: boolean;
  /** When `healthy` took its value (ISO 8601). */
  since: string;
  /** A custom resource whose definition is not installed (HTTP 404 on list): empty, and looked for again later. */
  absent?: boolean;
  restarts: number;
  lastError?: { at: string; message: string };
}

/** A short message for an error: HTTP status and the Status message for an answer, else the error's own. */
export function errorText(err: unknown): string {
  const e = err as { code?: unknown; statusCode?: unknown; body?: unknown; message?: unknown; cause?: { code?: unknown; message?: unknown } };
  const status = typeof e?.code === 'number' ? e.code : typeof e?.statusCode === 'number' ? e.statusCode : undefined;
  if (status !== undefined) {
    let detail = '';
    try {
      const body = typeof e.body === 'string' ? JSON.parse(e.body) : e.body;
      detail = typeof body?.message === 'string' ? body.message : '';
    } catch {
      detail = '';
    }
    return `HTTP ${status}${detail ? `: ${detail}` : ''}`;
  }
  const cause = e?.cause?.code ?? e?.cause?.message;
  const msg = typeof e?.message === 'string' ? e.message : String(err);
  return cause && !msg.includes(String(cause)) ? `${msg} (${String(cause)})` : msg;
}

const statusOf = (err: unknown) => {
  const e = err as { code?: unknown; statusCode?: unknown };
  return typeof e?.code === 'number' ? e.code : typeof e?.statusCode === 'number' ? e.statusCode : undefined;
};

/** Why a watch loop turns to listing again. */
class Expired extends Error {}

export class SupervisedInformer<T extends KubernetesObject = KubernetesObject> {
  private readonly backoffMinMs: number;
  private readonly backoffMaxMs: number;
  private readonly silenceMs: number;
  private readonly keep: (o: KubernetesObject) => T;
  private backoff: number;
  private readonly cache = new Map<string, T>();
  /** Where the next watch starts; undefined: list first. */
  private resourceVersion: string | undefined;
  private abort: AbortController | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  /** Watches in a row the server ended without an event. */
  private quietEnds = 0;
  private state: InformerHealth = { synced: false, healthy: false, since: new Date().toISOString(), restarts: 0 };

  constructor(
    readonly name: string,
    private readonly client: KubeClient,
    private readonly path: string,
    private readonly listFn: ListFn,
    private readonly opts: InformerOptions & {
      fieldSelector?: string;
      optional?: boolean;
      /** What the cache keeps of an object; it must keep metadata.name, namespace and resourceVersion. */
      transform?: (obj: KubernetesObject) => T;
      /** Called when the cache changed (add, update, delete, or a list). */
      onChange: () => void;
      /** Called when health changed. */
      onHealth?: () => void;
    },
  ) {
    this.backoffMinMs = opts.backoffMinMs ?? 1000;
    this.backoffMaxMs = opts.backoffMaxMs ?? 30_000;
    this.silenceMs = opts.silenceMs ?? 30_000;
    this.backoff = this.backoffMinMs;
    this.keep = opts.transform ?? ((o: KubernetesObject) => o as T);
  }

  /** The cached objects ([] for an absent custom resource). */
  list(): readonly T[] {
    return this.state.absent ? [] : [...this.cache.values()];
  }

  health(): InformerHealth {
    return { ...this.state, ...(this.state.lastError && { lastError: { ...this.state.lastError } }) };
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.run();
  }

  /** Stops watching; resolves once a list or watch in flight has ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.abort?.abort();
    await this.running;
  }

  private run(): void {
    const abort = new AbortController();
    this.abort = abort;
    const attempt = (async () => {
      try {
        await this.loop(abort.signal);
      } catch (err) {
        if (!abort.signal.aborted) this.failed(err);
      }
    })();
    this.running = attempt.finally(() => {
      if (this.running === attempt) this.running = undefined;
    });
  }

  /** List when there is nothing to watch from, then watch, again and again, until an error or a stop. */
  private async loop(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      if (this.resourceVersion === undefined) {
        await this.relist(signal);
        if (signal.aborted) return;
      }
      let events = 0;
      try {
        const end = await this.client.watch(
          this.path,
          { resourceVersion: this.resourceVersion, allowWatchBookmarks: true, ...(this.opts.fieldSelector && { fieldSelector: this.opts.fieldSelector }) },
          { silenceMs: this.silenceMs, signal, onOpen: () => this.setHealthy(true), onEvent: (e) => (events++, this.event(e)) },
        );
        // A server that ends watches as soon as they are made (no event) is asked again with backoff, not in a spin.
        this.quietEnds = end === 'closed' && events === 0 ? this.quietEnds + 1 : 0;
        if (this.quietEnds > 1) await sleep(Math.min(this.backoffMinMs * 2 ** (this.quietEnds - 2), this.backoffMaxMs), undefined, { signal }).catch(() => undefined);
      } catch (err) {
        if (!(err instanceof Expired) && !(err instanceof ApiError && err.code === 410)) throw err;
        // The resourceVersion is older than the server's history: list again.
        this.resourceVersion = undefined;
      }
    }
  }

  private async relist(signal: AbortSignal): Promise<void> {
    const items: T[] = [];
    let page = await this.listFn({ limit: LIST_PAGE }, signal);
    for (;;) {
      for (const o of page.items) items.push(this.keep(o));
      const next = page.metadata?.continue;
      if (!next) break;
      try {
        page = await this.listFn({ limit: LIST_PAGE, _continue: next }, signal);
      } catch (err) {
        if (statusOf(err) !== 410) throw err;
        // The continue token expired (the list outlived the server's history): one consistent list, whole.
        items.length = 0;
        page = await this.listFn({ limit: 0 }, signal);
      }
    }
    if (signal.aborted) return;
    this.cache.clear();
    for (const o of items) this.cache.set(keyOf(o), o);
    this.resourceVersion = page.metadata?.resourceVersion ?? '';
    const first = !this.state.synced || this.state.absent;
    this.state.synced = true;
    this.state.absent = undefined;
    this.opts.onChange();
    if (first) this.opts.onHealth?.();
  }

  /** One watch event into the cache; 'stop' ends the watch (at an ERROR, after which the server closes it). */
  private event(e: WatchEvent): void | 'stop' {
    const rv = e.object?.metadata?.resourceVersion;
    switch (e.type) {
      case 'ADDED':
      case 'MODIFIED': {
        const kept = this.keep(e.object as KubernetesObject);
        const key = keyOf(kept);
        if (this.cache.get(key)?.metadata?.resourceVersion !== rv || rv === undefined) {
          this.cache.set(key, kept);
          this.opts.onChange();
        }
        break;
      }
      case 'DELETED':
        if (this.cache.delete(keyOf(e.object))) this.opts.onChange();
        break;
      case 'BOOKMARK':
        break;
      case 'ERROR': {
        const { code, message } = e.object ?? {};
        if (code === 410) throw new Expired(message ?? 'resourceVersion expired');
        throw new ApiError(typeof code === 'number' ? code : 500, JSON.stringify(e.object ?? {}), this.path);
      }
      default:
        return;
    }
    if (rv) this.resourceVersion = rv;
  }

  private setHealthy(healthy: boolean): void {
    if (healthy) this.backoff = this.backoffMinMs;
    if (this.state.healthy === healthy) return;
    this.state.healthy = healthy;
    this.state.since = new Date().toISOString();
    this.opts.onHealth?.();
  }

  private failed(err: unknown): void {
    if (this.stopped) return;
    let delay: number;
    if (this.opts.optional && statusOf(err) === 404) {
      // The resource's definition is not installed: nothing to watch, which is not an outage.
      const was = this.state.absent;
      this.state.absent = true;
      this.state.synced = true;
      this.state.lastError = undefined;
      this.resourceVersion = undefined;
      this.cache.clear();
      this.setHealthy(true);
      if (!was) {
        this.opts.onChange();
        this.opts.onHealth?.();
      }
      delay = this.backoffMaxMs;
    } else {
      this.state.lastError = { at: new Date().toISOString(), message: errorText(err) };
      this.setHealthy(false);
      this.opts.onHealth?.();
      delay = this.backoff;
      this.backoff = Math.min(this.backoff * 2, this.backoffMaxMs);
    }
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.stopped) return;
      this.state.restarts++;
      this.run();
    }, delay);
  }
}

/** namespace/name; join() makes a flat string (a template literal makes a cons string and a copy of "namespace/"
 *  per key, 24 bytes more per cached object). */
export const keyOf = (o: KubernetesObject): string => [o.metadata?.namespace ?? '', o.metadata?.name ?? ''].join('/');
