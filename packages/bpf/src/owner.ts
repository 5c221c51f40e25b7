/** Ownership: an object owns the maps, programs, ring buffers and links opened from it, and closes them
 *  before itself: links first (they hold programs and maps), then the rest. */

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
