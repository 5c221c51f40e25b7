// One open watch: a chunked HTTP response carrying one JSON event per line, started from a resourceVersion
// (replayed from the store's history) or from the current state (synthetic ADDED events), filtered by the
// watch's namespace and selectors, with bookmarks when asked and the test switches to stall, end or cut it.
import type { ServerResponse } from 'node:http';
import type { Matcher } from './selectors.js';
import { groupVersion, type KubeObject, type ResourceType } from './resources.js';
import { failure, type Status } from './status.js';
import { table, type IncludeObject } from './table.js';
import type { ChangeEvent, ObjectStore } from './store.js';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

/** How a watch from a compacted resourceVersion is refused: HTTP 410, or HTTP 200 then an ERROR event (what real servers send). */
export type ExpiredForm = 'http' | 'event';

export interface WatchParams {
  resource: ResourceType;
  /** Only this namespace; undefined for all. */
  namespace?: string;
  matches: Matcher;
  /** The request's resourceVersion; '' or '0' start from the current state. */
  resourceVersion: string;
  allowBookmarks: boolean;
  /** sendInitialEvents=true: the current state, then a bookmark marked k8s.io/initial-events-end. */
  sendInitialEvents: boolean;
  timeoutSeconds?: number;
  /** Each object as a one-row Table (kubectl get -w), with this much of the object in the row. */
  table?: IncludeObject;
}

export interface WatchOptions {
  bookmarkIntervalMs: number;
  expiredForm: ExpiredForm;
  onClose: (w: Watch) => void;
}

export class Watch {
  #stalled = false;
  #closed = false;
  #tableColumnsSent = false;
  #unsubscribe: (() => void) | undefined;
  readonly #timers: NodeJS.Timeout[] = [];

  constructor(
    readonly params: WatchParams,
    readonly res: ServerResponse,
    readonly store: ObjectStore,
    readonly opts: WatchOptions,
  ) {
    res.once('close', () => this.#cleanup());
  }

  get stalled(): boolean {
    return this.#stalled;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Answer the request: 410 when its resourceVersion is compacted, else 200 and the event stream. */
  start(): void {
    const p = this.params;
    const from = p.resourceVersion === '' || p.resourceVersion === '0' ? undefined : Number(p.resourceVersion);
    const replay = from === undefined ? [] : this.store.eventsSince(from);
    if (replay === undefined) {
      const expired = failure(410, 'Expired', `too old resource version: ${from} (${this.store.compactedResourceVersion})`);
      if (this.opts.expiredForm === 'http') {
        this.res.writeHead(410, { 'content-type': 'application/json' }).end(JSON.stringify(expired));
      } else {
        this.#head();
        this.#write('ERROR', expired);
        this.end();
      }
      return;
    }
    this.#head();
    if (from === undefined) {
      for (const obj of this.store.list(p.resource, p.namespace)) if (p.matches(obj)) this.#write('ADDED', obj);
      if (p.sendInitialEvents && p.allowBookmarks) this.#bookmark({ 'k8s.io/initial-events-end': 'true' });
    }
    for (const e of replay) this.#deliver(e);
    // A resourceVersion ahead of the store's: changes up to it are not this watch's to see.
    this.#unsubscribe = this.store.subscribe((e) => {
      if (from === undefined || e.resourceVersion > from) this.#deliver(e);
    });
    if (p.allowBookmarks) this.#timers.push(setInterval(() => this.#bookmark(), this.opts.bookmarkIntervalMs));
    if (p.timeoutSeconds !== undefined) this.#timers.push(setTimeout(() => this.end(), p.timeoutSeconds * 1000));
  }

  /** Send a bookmark now (when the client asked for bookmarks). */
  bookmark(): void {
    if (this.params.allowBookmarks) this.#bookmark();
  }

  /** Stop sending anything, timeouts and bookmarks included, and keep the connection open. */
  stall(): void {
    this.#stalled = true;
    for (const t of this.#timers) clearTimeout(t);
  }

  /** End the response cleanly (the last chunk), as a server-side watch timeout does. */
  end(): void {
    if (this.#closed) return;
    this.#cleanup();
    this.res.end();
  }

  /** Cut the connection without ending the response, as a crashed server or a broken network does. */
  destroy(): void {
    if (this.#closed) return;
    this.#cleanup();
    this.res.destroy();
  }

  #head(): void {
    this.res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked', 'cache-control': 'no-cache, private' });
    this.res.flushHeaders();
  }

  #deliver(e: ChangeEvent): void {
    const p = this.params;
    if (e.resource !== p.resource || this.#stalled) return;
    if (p.namespace !== undefined && p.resource.namespaced && e.object.metadata.namespace !== p.namespace) return;
    const now = p.matches(e.object);
    if (e.type !== 'MODIFIED' || e.previous === undefined) {
      if (now) this.#write(e.type, e.object);
      return;
    }
    // An object that moved into or out of the selector is added or deleted as far as this watch can tell.
    const was = p.matches(e.previous);
    if (was && now) this.#write('MODIFIED', e.object);
    else if (now) this.#write('ADDED', e.object);
    else if (was) this.#write('DELETED', e.object);
  }

  #bookmark(annotations?: Record<string, string>): void {
    const r = this.params.resource;
    const metadata = { resourceVersion: String(this.store.resourceVersion), ...(annotations && { annotations }) };
    this.#write('BOOKMARK', { apiVersion: groupVersion(r), kind: r.kind, metadata });
  }

  #write(type: WatchEventType, object: KubeObject | Status): void {
    if (this.#closed || this.#stalled) return;
    const include = this.params.table;
    let out: object = object;
    if (include !== undefined && type !== 'ERROR' && type !== 'BOOKMARK') {
      const obj = object as KubeObject;
      out = table(this.params.resource, [obj], obj.metadata.resourceVersion!, include, !this.#tableColumnsSent);
      this.#tableColumnsSent = true;
    }
    this.res.write(`${JSON.stringify({ type, object: out })}\n`);
  }

  #cleanup(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe?.();
    for (const t of this.#timers) clearTimeout(t);
    this.opts.onClose(this);
  }
}
