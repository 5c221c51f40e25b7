/**
 * Validation of whole snapshots: each object's checks (checks.ts), then what no two objects may share (a name
 * within a kind, a service address). validate() and a Validator hand back a ValidatedSnapshot, the only input
 * compile() takes: a snapshot is validated once, before it is compiled, and compiling never checks again.
 */
import { type CheckCache, checkCache, checkObject, type Finding } from './checks.js';
import type { EndpointSlice, HTTPRoute, Kind, Service, Snapshot } from './model.js';
import { SnapshotError } from './model.js';
import { every, runSteps, type Steps } from './steps.js';

export const KINDS: readonly Kind[] = ['Service', 'EndpointSlice', 'HTTPRoute'];

/** Objects by kind: what came or went between two snapshots (told apart by identity), or a snapshot's lists. */
export type ByKind = Record<Kind, readonly object[]>;

const listOf = (s: Snapshot, kind: Kind): unknown[] => (kind === 'Service' ? s.services : kind === 'EndpointSlice' ? s.endpointSlices : s.httpRoutes);
const none = (): Record<Kind, object[]> => ({ Service: [], EndpointSlice: [], HTTPRoute: [] });

/** Marks what validate() and a Validator made; compile() refuses anything else. Not exported by the package. */
export const VALIDATED = Symbol('validated');

/** What validating a snapshot learnt that compiling it uses. */
export interface Validation {
  /** This snapshot's number, and that of the snapshot its Validator validated before it (undefined: none). */
  id: number;
  base: number | undefined;
  /** What came and went since `base`; with no base, every object came. */
  added: ByKind;
  removed: ByKind;
}

/** A snapshot that passed validation: its lists (frozen copies, so the caller's later edits cannot reach
 *  what was checked) and what changed since the one validated before it. */
export interface ValidatedSnapshot {
  readonly services: readonly Service[];
  readonly endpointSlices: readonly EndpointSlice[];
  readonly httpRoutes: readonly HTTPRoute[];
  readonly [VALIDATED]: Validation;
}

let validations = 0;

function validated(lists: ByKind, base: number | undefined, added: ByKind, removed: ByKind): ValidatedSnapshot {
  return {
    services: lists.Service as Service[],
    endpointSlices: lists.EndpointSlice as EndpointSlice[],
    httpRoutes: lists.HTTPRoute as HTTPRoute[],
    [VALIDATED]: { id: ++validations, base, added, removed },
  };
}

const frozenLists = (s: Snapshot): ByKind => ({
  Service: Object.freeze(s.services.slice()),
  EndpointSlice: Object.freeze(s.endpointSlices.slice()),
  HTTPRoute: Object.freeze(s.httpRoutes.slice()),
});

/** Validates a snapshot on its own: SnapshotError naming every problem, or the snapshot ready for compile(). */
export function validate(s: Snapshot): ValidatedSnapshot {
  const problems = validateSnapshot(s);
  if (problems.length) throw new SnapshotError(problems);
  const lists = frozenLists(s);
  return validated(lists, undefined, lists, none());
}

/** Checks every object and returns the problems (empty when the snapshot is valid). */
export function validateSnapshot(s: Snapshot): string[] {
  return runSteps(validateSteps(s));
}

const isSnapshot = (s: Snapshot) => !!s && Array.isArray(s.services) && Array.isArray(s.endpointSlices) && Array.isArray(s.httpRoutes);
const NOT_A_SNAPSHOT = 'snapshot: services, endpointSlices and httpRoutes must be arrays';

/** validateSnapshot in steps; with `cache`, an object seen before is not checked again. */
export function validateSteps(s: Snapshot, cache?: CheckCache): Steps<string[]> {
  return problemSteps(s, cache);
}

/** Who holds each name (per kind, by "namespace/name") and each service address ("addr/proto/port"): the
 *  display name of the object. Keyed by the findings' own strings, so holding one makes no new string. */
interface Owners {
  names: Record<Kind, Map<string, string>>;
  vips: Map<string, string>;
}

const owners = (): Owners => ({ names: { Service: new Map(), EndpointSlice: new Map(), HTTPRoute: new Map() }, vips: new Map() });
const ownersOf = (o: Owners, f: Exclude<Finding, string>): [Map<string, string>, string] => ('unique' in f ? [o.names[f.unique], f.key] : [o.vips, f.vip]);

/** validateSteps, recording in `held` who holds each name and address (the later of two that share one), in
 *  snapshot order. Each object is checked once: findings are read from `cache` but not added to it. */
function* problemSteps(s: Snapshot, cache?: CheckCache, held: Owners = owners()): Steps<string[]> {
  if (!isSnapshot(s)) return [NOT_A_SNAPSHOT];
  const problems: string[] = [];
  const tick = every();
  for (const kind of KINDS) {
    for (const o of listOf(s, kind)) {
      if (tick()) yield;
      for (const f of checkObject(kind, o, cache, false)) {
        if (typeof f === 'string') problems.push(f);
        else if ('unique' in f) {
          // A name held twice within its kind; an address held by two Services (with both names).
          const names = held.names[f.unique];
          const size = names.size;
          if (names.set(f.key, f.obj).size === size) problems.push(`${f.obj}: metadata.name: appears twice in the snapshot`);
        } else {
          const owner = held.vips.get(f.vip);
          if (owner && owner !== f.obj) problems.push(`${f.obj}: ${f.field}: ${f.text} is already the address of ${owner}`);
          held.vips.set(f.vip, f.obj);
        }
      }
    }
  }
  return problems;
}

/**
 * validate() for a stream of snapshots, doing work in proportion to what changed (see Compiler, which it feeds).
 * Objects are told apart by identity: an object seen before is not checked again (an object a change removes is,
 * to release what it held; a whole revalidation after a problem checks all), and a new one's names and
 * addresses are checked against those the others hold. Any problem, or a change that is not a plain addition
 * and removal of objects: the whole snapshot is validated again, so problems come in validate()'s order.
 * Objects are values: a changed object is a new object; an object passed once is never changed in place.
 */
export class Validator {
  private readonly checks: CheckCache = checkCache();
  /** The lists of the last snapshot validated (shared with its ValidatedSnapshot), its objects with their
   *  kinds, and its number. */
  private lists: ByKind = none();
  private last = new Map<object, Kind>();
  private lastId: number | undefined;
  /** Who holds each name and address in the last snapshot (while `owned`): an object new in a snapshot is
   *  checked against these alone. */
  private readonly owners = owners();
  private owned = false;

  validate(snapshot: Snapshot): ValidatedSnapshot {
    return runSteps(this.steps(snapshot));
  }

  /** validate() in steps (see runStepsAsync). Throws SnapshotError; the Validator then still holds the last
   *  snapshot that passed. */
  *steps(snapshot: Snapshot): Steps<ValidatedSnapshot> {
    try {
      return yield* this.validateSteps(snapshot);
    } finally {
      // Findings serve one validation (claim() then, on a conflict, validateAll()); kept across snapshots they cost
      // ~400 bytes per object (7.7 MiB at 10,000 Services and EndpointSlices), to spare re-checking the objects
      // a change removes, which are few.
      for (const kind of KINDS) this.checks[kind].clear();
    }
  }

  private *validateSteps(snapshot: Snapshot): Steps<ValidatedSnapshot> {
    if (!isSnapshot(snapshot)) throw new SnapshotError([NOT_A_SNAPSHOT]);
    const diff = yield* this.diff(snapshot);
    const { added, removed, next, plain } = diff ?? (yield* this.fullDiff(snapshot));
    if (!(this.owned && plain && (yield* this.claim(removed, added)))) yield* this.validateAll(snapshot);

    if (next) this.last = next;
    else {
      // In steps: the first config after the idle one adds every object (100,000 Map inserts: ~40 ms at once).
      const tick = every();
      for (const kind of KINDS) {
        for (const o of removed[kind]) {
          if (tick()) yield;
          this.last.delete(o);
        }
      }
      for (const kind of KINDS) {
        for (const o of added[kind]) {
          if (tick()) yield;
          this.last.set(o, kind);
        }
      }
    }
    this.lists = frozenLists(snapshot);
    const v = validated(this.lists, this.lastId, added, removed);
    this.lastId = v[VALIDATED].id;
    return v;
  }

  /** The difference from the last snapshot when each list kept its head and tail and changed in one stretch
   *  between them (an edit, an addition, a removal); undefined otherwise. */
  private *diff(snapshot: Snapshot): Steps<{ added: ByKind; removed: ByKind; next?: undefined; plain: true } | undefined> {
    if (this.last.size === 0) return undefined;
    const tick = every();
    const added = none();
    const removed = none();
    for (const kind of KINDS) {
      const prev = this.lists[kind];
      const cur = listOf(snapshot, kind);
      let head = 0;
      while (head < prev.length && head < cur.length && prev[head] === cur[head]) head++;
      let tail = 0;
      while (tail < prev.length - head && tail < cur.length - head && prev[prev.length - 1 - tail] === cur[cur.length - 1 - tail]) tail++;
      // The sets made in steps too: the stretch is the whole list when a config replaces the idle one.
      const gone = new Set<object>();
      for (let i = head; i < prev.length - tail; i++) {
        if (tick()) yield;
        gone.add(prev[i]!);
      }
      const came = cur.slice(head, cur.length - tail);
      const cameSet = new Set<unknown>();
      for (const o of came) {
        if (tick()) yield;
        if (cameSet.has(o)) return undefined; // twice in the stretch
        cameSet.add(o);
      }
      for (const o of came) {
        if (tick()) yield;
        if (typeof o !== 'object' || o === null) return undefined;
        if (gone.has(o)) continue; // moved within the stretch
        if (this.last.has(o)) return undefined; // also outside the stretch (twice), or in another list
        added[kind].push(o);
      }
      for (const o of gone) if (!cameSet.has(o)) removed[kind].push(o);
    }
    return { added, removed, plain: true };
  }

  /** The difference from the last snapshot in a full pass; `plain` is false when an entry is not an object or
   *  is there twice (the snapshot then fails validation). */
  private *fullDiff(snapshot: Snapshot): Steps<{ added: ByKind; removed: ByKind; next: Map<object, Kind>; plain: boolean }> {
    const tick = every();
    const next = new Map<object, Kind>();
    const added = none();
    let plain = true;
    const first = this.last.size === 0;
    for (const kind of KINDS) {
      for (const o of listOf(snapshot, kind)) {
        if (tick()) yield;
        const size = next.size;
        // An object twice (its kind then the later one's: the snapshot fails validation, `next` is not kept).
        if (typeof o !== 'object' || o === null || next.set(o, kind).size === size) {
          plain = false;
          continue;
        }
        if (first || this.last.get(o) !== kind) added[kind].push(o);
      }
    }
    const removed = none();
    for (const [o, kind] of this.last) {
      if (tick()) yield;
      if (next.get(o) !== kind) removed[kind].push(o);
    }
    return { added, removed, next, plain };
  }

  /** Claims the names and addresses of new objects (the gone ones' released first); false when an object has
   *  a problem of its own or claims what another holds. */
  private *claim(removed: ByKind, added: ByKind): Steps<boolean> {
    const tick = every();
    for (const kind of KINDS) {
      for (const o of removed[kind]) {
        if (tick()) yield;
        for (const f of checkObject(kind, o, this.checks)) {
          if (typeof f === 'string') continue;
          const [held, k] = ownersOf(this.owners, f);
          if (held.get(k) === f.obj) held.delete(k);
        }
      }
    }
    for (const kind of KINDS) {
      for (const o of added[kind]) {
        if (tick()) yield;
        for (const f of checkObject(kind, o, this.checks)) {
          if (typeof f === 'string') return false;
          const [held, k] = ownersOf(this.owners, f);
          const owner = held.get(k);
          // Two objects of one name share their display name: a name is held at most once, an address by one Service.
          if (owner !== undefined && ('unique' in f || owner !== f.obj)) return false;
          held.set(k, f.obj);
        }
      }
    }
    return true;
  }

  private clearOwners(): void {
    for (const kind of KINDS) this.owners.names[kind].clear();
    this.owners.vips.clear();
  }

  /** Validates every object (SnapshotError on any problem) and records who holds each name and address. */
  private *validateAll(snapshot: Snapshot): Steps<void> {
    this.owned = false;
    this.clearOwners();
    const problems = yield* problemSteps(snapshot, this.checks, this.owners);
    if (problems.length) {
      this.clearOwners();
      throw new SnapshotError(problems);
    }
    this.owned = true;
  }
}
