/** Ownership. Every handle closes once (close() is idempotent, and [Symbol.dispose] calls it) and throws a
 *  TypeError when used after close. An object owns the maps, programs, ring buffers and links opened from it,
 *  and closes them before itself: links first (they hold programs and maps), then the rest. */
import { assertOpen } from './errors.js';

export interface Closable {
  close(): void;
}

export class Owner {
  private readonly links = new Set<Closable>();
  private readonly others = new Set<Closable>();

  adopt(c: Closable, kind: 'link' | 'other' = 'other'): void {
    (kind === 'link' ? this.links : this.others).add(c);
  }

  release(c: Closable): void {
    this.links.delete(c);
    this.others.delete(c);
  }

  closeAll(): void {
    for (const set of [this.links, this.others]) {
      for (const c of Array.from(set)) c.close();
      set.clear();
    }
  }
}

/** What every handle over a native resource shares. */
export abstract class Handle<N extends Closable> implements Disposable {
  #closed = false;
  #owner: Owner | undefined;
  /** @internal */
  protected readonly handle: N;

  protected constructor(handle: N) {
    this.handle = handle;
  }

  /** Registers with the owner; called by subclasses once construction can no longer fail. */
  protected adoptBy(owner: Owner | undefined, kind: 'link' | 'other' = 'other'): void {
    this.#owner = owner;
    owner?.adopt(this, kind);
  }

  /** What the handle is, for messages: "map verdicts", "link …". */
  protected abstract describe(): string;

  get isClosed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.handle.close();
    this.#owner?.release(this);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** For subclasses whose native call already released the resource (e.g. link detach). */
  protected markClosed(): void {
    this.#closed = true;
    this.#owner?.release(this);
  }

  protected check(): void {
    assertOpen(this.#closed, this.describe());
  }

  /** @internal the owner this handle registered with; what is made from the handle (a program's links) joins it. */
  adopter(): Owner | undefined {
    return this.#owner;
  }

  /** @internal the native handle, for calls that take one (attach, ring buffers). */
  nativeHandle(): N {
    this.check();
    return this.handle;
  }
}
