/**
 * One client-node informer (list, then watch from the list's resourceVersion) kept alive. client-node relists
 * by itself after a 410 and re-makes a watch the server ended or that stayed silent past its inactivity bound,
 * but on any other error (a cut connection, an unreachable server, a failed list) it reports the error and
 * STOPS: this wrapper restarts it with backoff (1 s, doubling to 30 s), from the resourceVersion it had, so a
 * short outage ends in a watch that resumes without a relist. Its cache stays as it was meanwhile.
 *
 * Memory: lists are read in pages, and every object, listed or watched, goes through `transform` before
 * client-node caches it (as client-go's SetTransform), so the cache holds what the source reads, not whole objects.
 */
import { type KubeConfig, type KubernetesObject, ListWatch, Watch } from '@kubernetes/client-node';

import type { ListFn } from './resources.js';

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

/** A short message for an error of client-node's (its ApiException message carries the headers and body). */
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

export class SupervisedInformer<T extends KubernetesObject = KubernetesObject> {
  private readonly lw: ListWatch<T>;
  private readonly backoffMinMs: number;
  private readonly backoffMaxMs: number;
  private backoff: number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  private errors = 0;
  private state: InformerHealth = { synced: false, healthy: false, since: new Date().toISOString(), restarts: 0 };

  constructor(
    readonly name: string,
    kc: KubeConfig,
    path: string,
    listFn: ListFn,
    private readonly opts: InformerOptions & {
      fieldSelector?: string;
      optional?: boolean;
      /** What the cache keeps of an object; it must keep metadata.name, namespace and resourceVersion. */
      transform?: (obj: KubernetesObject) => T;
      /** Called when the cache changed (add, update, delete, or the first list). */
      onChange: () => void;
      /** Called when health changed. */
      onHealth?: () => void;
    },
  ) {
    this.backoffMinMs = opts.backoffMinMs ?? 1000;
    this.backoffMaxMs = opts.backoffMaxMs ?? 30_000;
    this.backoff = this.backoffMinMs;
    const watch = new Watch(kc);
    // The inactivity bound is a plain field at run time (private in the typings).
    (watch as unknown as { requestTimeoutMs: number }).requestTimeoutMs = opts.silenceMs ?? 30_000;
    const keep = opts.transform ?? ((o: KubernetesObject) => o as T);
    const list = async () => {
      const items: T[] = [];
      let page = await listFn({ limit: LIST_PAGE });
      for (;;) {
        for (const o of page.items) items.push(keep(o));
        // Typed lists name it _continue; custom objects come as sent.
        const next = page.metadata?._continue ?? (page.metadata as { continue?: string } | undefined)?.continue;
        if (!next) break;
        try {
          page = await listFn({ limit: LIST_PAGE, _continue: next });
        } catch (err) {
          if (statusOf(err) !== 410) throw err;
          // The continue token expired (the list outlived the server's history): one consistent list, whole.
          items.length = 0;
          page = await listFn({ limit: 0 });
        }
      }
      // client-node fills its cache from this right after; the change callback runs later (debounced).
      this.listed();
      return { metadata: page.metadata, items } as never;
    };
    // Watched objects go through the same transform before client-node caches them (not ERROR's Status,
    // whose code it reads, nor a BOOKMARK's bare metadata).
    const watchFn = watch.watch.bind(watch);
    watch.watch = (path, query, callback, done) =>
      watchFn(path, query, (phase, obj, raw) => callback(phase, phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED' ? keep(obj as KubernetesObject) : obj, raw), done);
    this.lw = new ListWatch<T>(path, watch, list, false, undefined, opts.fieldSelector);
    for (const verb of ['add', 'update', 'delete'] as const) this.lw.on(verb, () => opts.onChange());
    this.lw.on('error', (err) => this.failed(err));
  }

  /** The cached objects ([] for an absent custom resource). */
  list(): readonly T[] {
    return this.state.absent ? [] : this.lw.list();
  }

  health(): InformerHealth {
    return { ...this.state, ...(this.state.lastError && { lastError: { ...this.state.lastError } }) };
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.run();
  }

  /** Stops watching; resolves once a start in flight has finished (and been stopped). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.lw.stop();
    await this.running;
  }

  private run(): void {
    const before = this.errors;
    const attempt = (async () => {
      try {
        await this.lw.start();
      } catch (err) {
        this.failed(err);
      }
      // A stop during the list: client-node would go on to watch, so stop it again now.
      if (this.stopped) return void (await this.lw.stop());
      if (this.errors === before) this.setHealthy(true);
    })();
    this.running = attempt.finally(() => {
      if (this.running === attempt) this.running = undefined;
    });
  }

  private listed(): void {
    const first = !this.state.synced || this.state.absent;
    this.state.synced = true;
    this.state.absent = undefined;
    if (first) {
      this.opts.onChange();
      this.opts.onHealth?.();
    }
  }

  private setHealthy(healthy: boolean): void {
    if (healthy) this.backoff = this.backoffMinMs;
    if (this.state.healthy === healthy) return;
    this.state.healthy = healthy;
    this.state.since = new Date().toISOString();
    this.opts.onHealth?.();
  }

  private failed(err: unknown): void {
    this.errors++;
    if (this.stopped) return;
    let delay: number;
    if (this.opts.optional && statusOf(err) === 404) {
      // The resource's definition is not installed: nothing to watch, which is not an outage.
      const was = this.state.absent;
      this.state.absent = true;
      this.state.synced = true;
      this.state.lastError = undefined;
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
