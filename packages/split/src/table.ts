/**
 * Writes compiled services into the split maps as a difference against what is installed.
 *
 * No connect() ever sees a service without backends or a mix of two tables: a service's endpoints live under
 * (service id, version); a changed endpoint set is written under a new version first, then the service entry
 * (one map update, in place) switches to it, then the old version's slots are retired: deleted only after a
 * grace period (waitForPrograms), once no program run that read the entry before the switch can still be
 * reading them, many applies' retired slots by one grace period, off the event loop. Retired slots hold room in
 * the endpoint table until then: an apply that needs that room waits for the grace period. A weight change
 * alone rewrites only the service entry. Every write the kernel can refuse (a new element: slots,
 * new services) comes before the first switch, and a refused one undoes the apply: no mix of two configs stays.
 * docs/split.md, "A refused write".
 */
import { type BpfMap, waitForPrograms, waitForProgramsSync } from '@mesh/bpf';

import type { CompiledBackend, CompiledService } from './compile.js';
import { addr16, AF_INET, AF_INET6, BPF_F_LOCK, EpEntries, type EpKey, type EpValue, familyOf, fromAddr16, IPPROTO, MAX_BACKENDS, SvcEntries, svcCheck, type SvcKey, type SvcValue } from './maps.js';
import { every, runSteps, runStepsAsync, type Steps } from './steps.js';

export interface ApplyStats {
  /** Map element writes and deletes this apply made, per map. */
  serviceWrites: number;
  serviceDeletes: number;
  endpointWrites: number;
  /** Endpoint slots this apply took out of use (retired: deleted after a grace period, see ServiceTable). */
  endpointDeletes: number;
}

interface Installed {
  key: SvcKey;
  value: SvcValue;
  /** Endpoint lists per backend, as written under value.version. */
  endpoints: { addr: string; port: number }[][];
  /** The compiled service last applied here: when a Compiler hands the same object again, nothing changed. */
  compiled?: CompiledService;
  /** The highest version this service's slots may exist under (an apply undone or killed leaves a version no
   *  entry points at, retired until a grace period): a new version goes above it, never onto a retired key. */
  top: number;
}

// Entries per map batch: one batch is encoded and written between two turns of the caller's event loop.
const BATCH = 1024;

/** How service entries are written: in place (BPF_F_LOCK). A replaced element is recycled at once, under programs
 *  that may still read it, and a lookup racing with the move can miss the service. */
export const SERVICE_WRITE_FLAGS = BPF_F_LOCK;

export class ServiceTable {
  private readonly installed = new Map<string, Installed>();
  /** Endpoint slots of every installed service, kept as services are installed and removed: the capacity check
   *  does not walk 50,000 services to count them. */
  private slots = 0;
  /** The services the last apply installed, in order: a service at the same place in the next list as the same
   *  object (the Compiler's memo) is installed as it is, found without hashing its key (50,000 lookups and a set
   *  of 50,000 keys were most of a one-weight reload's diff). Cleared by adopt(). */
  private last: readonly CompiledService[] = [];
  private nextId = 1;
  /** Slots no service entry points at any more, still in the map: a program run that read an entry pointing at
   *  them before it switched may be reading them. Deleted after the next grace period. */
  private retired: EpKey[] = [];
  /** The retired slots a grace period is being waited for; `taken` once reclaimSync deleted them meanwhile. */
  private freeing?: { keys: EpKey[]; taken: boolean };
  private reclaiming?: Promise<void>;
  private reclaimError?: unknown;
  private closed = false;

  constructor(
    private readonly services: BpfMap<SvcKey, SvcValue>,
    private readonly endpoints: BpfMap<EpKey, EpValue>,
  ) {}

  /** Endpoint slots that no service entry pointed at, found (and retired) by the last adopt(). */
  orphansFound = 0;

  /**
   * Rebuilds what is installed from the maps themselves (a restarted agent adopting pinned maps, or after a
   * write the kernel refused). An apply killed between its batches leaves endpoint slots no service entry
   * points at (a new version written but not switched to, an old one not yet deleted): programs never read
   * them, but they fill the table, so they are retired here (deleted after a grace period: the slots of an old
   * version may be what a program is reading). New ids start above every id in either map, new versions above
   * every version of their service in the endpoint map.
   */
  adopt(): number {
    this.installed.clear();
    this.slots = 0;
    this.last = [];
    const slots = new Map<string, EpValue>();
    const top = new Map<number, number>();
    let maxId = 0;
    for (const [k, v] of this.endpoints.getBatch()) {
      slots.set(slotName(k), v);
      maxId = Math.max(maxId, k.svcId);
      top.set(k.svcId, Math.max(top.get(k.svcId) ?? 0, k.version));
    }
    const referenced = new Set<string>();
    for (const [key, value] of this.services.getBatch()) {
      const family = key.family;
      const endpoints: Installed['endpoints'] = [];
      for (let b = 0; b < value.nbackends; b++) {
        const list: { addr: string; port: number }[] = [];
        for (let i = 0; i < value.nendpoints[b]!; i++) {
          const name = slotName({ svcId: value.id, version: value.version, backend: b, index: i });
          const ep = slots.get(name);
          referenced.add(name);
          // A missing slot shortens the list: it differs from any config's, so the next apply rewrites it.
          if (ep) list.push({ addr: fromAddr16(ep.addr, family), port: ep.port });
        }
        endpoints.push(list);
      }
      const proto = key.proto === IPPROTO.UDP ? 'UDP' : 'TCP';
      this.installed.set(`${fromAddr16(key.addr, family)}|${key.port}|${proto}`, { key, value, endpoints, top: Math.max(value.version, top.get(value.id) ?? 0) });
      this.slots += slotCount(endpoints);
      maxId = Math.max(maxId, value.id);
    }
    // Every slot still retired is among the orphans; those a grace period is being waited for stay with it.
    const freeing = new Set(this.freeing && !this.freeing.taken ? this.freeing.keys.map(slotName) : []);
    this.retired = [];
    this.orphansFound = 0;
    for (const name of slots.keys()) {
      if (referenced.has(name)) continue;
      this.orphansFound++;
      if (!freeing.has(name)) this.retired.push(slotKey(name));
    }
    this.nextId = Math.max(this.nextId, maxId + 1);
    this.reclaim();
    return this.installed.size;
  }

  /** Retired slots not yet deleted: they hold room in the endpoint table until the grace period has passed. */
  get retiredSlots(): number {
    return this.retired.length + (this.freeing && !this.freeing.taken ? this.freeing.keys.length : 0);
  }

  /** Resolves once every slot retired so far is deleted (rejects with what stopped a deletion). */
  async reclaimed(): Promise<void> {
    for (;;) {
      this.reclaim();
      if (!this.reclaiming) break;
      await this.reclaiming;
      if (this.reclaimError !== undefined) {
        const err = this.reclaimError;
        this.reclaimError = undefined;
        throw err;
      }
    }
  }

  /** Stops deleting: the maps are about to close. What is still retired stays, for the next adopt(). */
  close(): void {
    this.closed = true;
  }

  /** Starts deleting the retired slots unless that is under way: a grace period, then their deletion, again
   *  while more were retired meanwhile (every slot retired during one grace period waits for the next). */
  private reclaim(): void {
    if (this.reclaiming || this.closed || this.retired.length === 0) return;
    this.reclaiming = this.reclaimLoop().finally(() => {
      this.reclaiming = undefined;
    });
  }

  private async reclaimLoop(): Promise<void> {
    while (this.retired.length > 0 && !this.closed) {
      const batch = { keys: this.retired, taken: false };
      this.retired = [];
      this.freeing = batch;
      try {
        await waitForPrograms();
        if (!batch.taken && !this.closed) await runStepsAsync(deleteBatches(this.endpoints, batch.keys));
      } catch (err) {
        // Kept retired (and counted) for the next attempt, after the next apply or reclaimed().
        if (!batch.taken) this.retired.unshift(...batch.keys);
        this.reclaimError = err;
        return;
      } finally {
        if (this.freeing === batch) this.freeing = undefined;
      }
    }
  }

  /** Deletes every retired slot now, after a grace period waited for on this thread (an apply that needs the
   *  room they hold and cannot wait asynchronously: apply()). */
  private reclaimSync(): void {
    const keys = [...this.retired, ...(this.freeing && !this.freeing.taken ? this.freeing.keys : [])];
    if (this.freeing) this.freeing.taken = true;
    this.retired = [];
    waitForProgramsSync();
    runSteps(deleteBatches(this.endpoints, keys));
  }

  /** Waits for the grace period of the retired slots when `desired` needs the room they hold (the agent's apply,
   *  before applySteps: the event loop turns meanwhile). */
  async makeRoom(desired: CompiledService[]): Promise<void> {
    if (this.retiredSlots === 0) return;
    const { epWrites } = await runStepsAsync(this.planSteps(desired));
    const free = this.endpoints.maxEntries - this.installedSlots();
    if (epWrites <= free && epWrites > free - this.retiredSlots) await this.reclaimed();
  }

  get size(): number {
    return this.installed.size;
  }

  /** Installs `desired` (the whole set of services, each key once, as compile() makes them) and removes what is
   *  no longer in it. */
  apply(desired: CompiledService[]): ApplyStats {
    return runSteps(this.applySteps(desired));
  }

  /** Throws the error apply() would throw before its first write (too many backends, a full table), writing
   *  nothing: the same plan as applySteps, counted only. */
  check(desired: CompiledService[]): void {
    runSteps(this.checkSteps(desired));
  }

  /** check() in steps (see runStepsAsync). */
  *checkSteps(desired: CompiledService[]): Steps<void> {
    const { added, epWrites } = yield* this.planSteps(desired);
    this.checkFits(desired.length, this.installed.size + added, epWrites, false);
  }

  /** How many service addresses `desired` adds and how many endpoint slots it writes. */
  private *planSteps(desired: CompiledService[]): Steps<{ added: number; epWrites: number }> {
    const tick = every();
    let added = 0;
    let epWrites = 0;
    const last = this.last;
    for (let i = 0; i < desired.length; i++) {
      const d = desired[i]!;
      if (tick()) yield;
      if (last[i] === d) continue;
      const old = this.installed.get(d.key);
      if (!old) added++;
      if (old?.compiled === d) continue;
      if (d.backends.length > MAX_BACKENDS) throw new RangeError(`${d.service}: ${d.backends.length} backends, at most ${MAX_BACKENDS}`);
      const lists = d.backends.map((b) => b.endpoints);
      if (old !== undefined && sameLists(old.endpoints, lists)) continue;
      for (const l of lists) epWrites += l.length;
    }
    return { added, epWrites };
  }

  private installedSlots(): number {
    return this.slots;
  }

  /** During the swap a changed service's old and new endpoint slots coexist, and removed services go after new
   *  ones are written, so both count at the peak. Retired slots are not refused for: they go after a grace
   *  period, which `makeRoom` (before the write) waits for; here it is waited for on this thread. */
  private checkFits(services: number, peakServices: number, epWrites: number, write = true): void {
    if (peakServices > this.services.maxEntries) {
      throw new RangeError(
        `${services} service addresses (${peakServices} while the old ones are replaced) do not fit the service table (${this.services.maxEntries} entries): raise maxServices (mesh-agent: --max-services, or a restart, which sizes the tables from the config)`,
      );
    }
    const slots = this.installedSlots();
    if (slots + epWrites > this.endpoints.maxEntries) {
      throw new RangeError(
        `${epWrites} new endpoint slots do not fit beside the ${slots} installed (endpoint table: ${this.endpoints.maxEntries} entries): raise maxEndpoints (mesh-agent: --max-endpoints, or a restart, which sizes the tables from the config)`,
      );
    }
    if (write && slots + this.retiredSlots + epWrites > this.endpoints.maxEntries) this.reclaimSync();
  }

  /** apply() in steps (see runStepsAsync); the caller runs one at a time. */
  *applySteps(desired: CompiledService[]): Steps<ApplyStats> {
    const tick = every();
    const stats: ApplyStats = { serviceWrites: 0, serviceDeletes: 0, endpointWrites: 0, endpointDeletes: 0 };
    const epWrites = new EpEntries();
    const svcWrites: [string, Installed][] = [];
    // The service entries to write, new ones (inserts) apart from changed ones (switches): see below.
    const inserts = new SvcEntries();
    const insertKeys: SvcKey[] = [];
    const switches = new SvcEntries();
    const epDeletes: EpKey[] = [];
    // How many of the desired services are installed: when all installed ones are, none is removed (keys are
    // unique: a validated snapshot's are), and no set of 50,000 keys is made to find them.
    let found = 0;
    const last = this.last;
    // Endpoint addresses repeat across services (a workload behind many): each one's bytes made once per apply.
    const addrs = new Map<string, { addr: Buffer; family: number }>();

    for (let i = 0; i < desired.length; i++) {
      const d = desired[i]!;
      if (tick()) yield;
      if (last[i] === d) {
        found++;
        continue;
      }
      const old = this.installed.get(d.key);
      if (old) found++;
      if (old?.compiled === d) continue;
      if (d.backends.length > MAX_BACKENDS) throw new RangeError(`${d.service}: ${d.backends.length} backends, at most ${MAX_BACKENDS}`);
      const lists = d.backends.map((b) => b.endpoints);
      const sameEndpoints = old !== undefined && sameLists(old.endpoints, lists);
      const id = old?.value.id ?? this.nextId++;
      const version = sameEndpoints ? old.value.version : (old?.top ?? 0) + 1;
      const key = old?.key ?? svcKeyOf(d);
      const value = svcValueOf(key, id, version, d.backends);
      if (!sameEndpoints) {
        for (let b = 0; b < lists.length; b++) {
          const list = lists[b]!;
          for (let index = 0; index < list.length; index++) {
            const ep = list[index]!;
            let a = addrs.get(ep.addr);
            if (!a) addrs.set(ep.addr, (a = { addr: addr16(ep.addr), family: familyOf(ep.addr) }));
            epWrites.push(id, version, b, index, a.addr, a.family, ep.port);
          }
        }
        if (old) epDeletes.push(...slotsOf(old));
      }
      // A new version always changes the value, so this also covers every endpoint change.
      if (!old || !sameValue(old.value, value)) {
        svcWrites.push([d.key, { key, value, endpoints: lists, compiled: d, top: Math.max(version, old?.top ?? 0) }]);
        if (old) switches.push(key, value);
        else {
          inserts.push(key, value);
          insertKeys.push(key);
        }
      } else {
        old.compiled = d;
      }
    }
    const removed: [string, Installed][] = [];
    if (found !== this.installed.size) {
      const wanted = new Set<string>();
      for (let i = 0; i < desired.length; i++) {
        if (tick()) yield;
        wanted.add(desired[i]!.key);
      }
      for (const e of this.installed) {
        if (tick()) yield;
        if (!wanted.has(e[0])) removed.push(e);
      }
    }

    // Capacity is checked before the first write, so a snapshot too big for the maps changes nothing.
    this.checkFits(desired.length, this.installed.size + inserts.count, epWrites.count);

    try {
      // 1. New endpoint slots (invisible until a service entry points at their version).
      stats.endpointWrites = yield* writeEncoded(this.endpoints, epWrites);
      // 2. New services' entries. These and the slots are the only writes that take a free element, so the only
      //    ones the kernel can refuse (E2BIG: the map is full of entries the capacity check did not count).
      stats.serviceWrites = yield* writeEncoded(this.services, inserts, SERVICE_WRITE_FLAGS);
    } catch (err) {
      // Nothing the previous config routes has changed yet: undo what was written, so no connect() sees part of
      // this config stay, and say so. The maps are then re-read (they hold what the table did not count).
      try {
        yield* deleteBatches(this.services, insertKeys);
        yield* deleteBatches(this.endpoints, epWrites.keyList());
      } finally {
        this.adopt();
      }
      const e = err as NodeJS.ErrnoException;
      throw Object.assign(new Error(`the kernel refused a routing table write (${e.message}); the apply was undone: the previous services stay in force`, { cause: err }), { code: e.code });
    }
    try {
      // 3. Changed services switch to their new slots, one update each, in place: no element is taken, so the
      //    kernel cannot refuse one for room.
      stats.serviceWrites += yield* writeEncoded(this.services, switches, SERVICE_WRITE_FLAGS);
      for (const [k, i] of svcWrites) {
        if (tick()) yield;
        const old = this.installed.get(k);
        this.slots += slotCount(i.endpoints) - (old ? slotCount(old.endpoints) : 0);
        this.installed.set(k, i);
      }
      // 4. Removed services disappear, then every slot no entry points at any more is retired: a program run that
      //    read an entry before its switch may still be reading them (deleted after a grace period).
      for (const [k, i] of removed) {
        if (tick()) yield;
        if (this.services.delete(i.key)) stats.serviceDeletes++;
        epDeletes.push(...slotsOf(i));
        this.slots -= slotCount(i.endpoints);
        this.installed.delete(k);
      }
      for (const k of epDeletes) this.retired.push(k);
      stats.endpointDeletes = epDeletes.length;
      // A copy: the caller's list may change after it.
      this.last = desired.slice();
      this.reclaim();
    } catch (err) {
      // Not for room (an update in place or a delete failed): what is installed is what the maps say now (and
      // the slots written for versions no entry switched to go), so the next apply is planned from the truth.
      this.adopt();
      throw err;
    }
    return stats;
  }
}

const slotName = (k: EpKey) => `${k.svcId}.${k.version}.${k.backend}.${k.index}`;

function slotKey(name: string): EpKey {
  const [svcId, version, backend, index] = name.split('.').map(Number) as [number, number, number, number];
  return { svcId, version, backend, index };
}

function slotCount(lists: readonly (readonly unknown[])[]): number {
  let n = 0;
  for (const l of lists) n += l.length;
  return n;
}

function slotsOf(i: Installed): EpKey[] {
  const out: EpKey[] = [];
  i.endpoints.forEach((list, b) => list.forEach((_, index) => out.push({ svcId: i.value.id, version: i.value.version, backend: b, index })));
  return out;
}

function svcKeyOf(d: CompiledService): SvcKey {
  return { addr: addr16(d.addr), port: d.port, proto: IPPROTO[d.proto], family: d.family === 4 ? AF_INET : AF_INET6 };
}

function svcValueOf(key: SvcKey, id: number, version: number, backends: CompiledBackend[]): SvcValue {
  const cumWeight = new Array<number>(MAX_BACKENDS).fill(0);
  const nendpoints = new Array<number>(MAX_BACKENDS).fill(0);
  let sum = 0;
  backends.forEach((b, i) => {
    sum += b.weight;
    cumWeight[i] = sum;
    nendpoints[i] = b.endpoints.length;
  });
  const v = { id, version, nbackends: backends.length, totalWeight: sum, cumWeight, nendpoints, check: 0 };
  v.check = svcCheck(key, v);
  return v;
}

function sameLists(a: { addr: string; port: number }[][], b: { addr: string; port: number }[][]): boolean {
  return a.length === b.length && a.every((la, i) => {
    const lb = b[i]!;
    return la.length === lb.length && la.every((e, j) => e.addr === lb[j]!.addr && e.port === lb[j]!.port);
  });
}

function sameValue(a: SvcValue, b: SvcValue): boolean {
  return a.id === b.id && a.version === b.version && a.nbackends === b.nbackends && a.totalWeight === b.totalWeight &&
    a.cumWeight.every((x, i) => x === b.cumWeight[i]) && a.nendpoints.every((x, i) => x === b.nendpoints[i]);
}

function* writeEncoded<K, V>(map: BpfMap<K, V>, entries: EpEntries | SvcEntries, flags = 0): Steps<number> {
  let n = 0;
  for (let i = 0; i < entries.count; i += BATCH) {
    const to = Math.min(entries.count, i + BATCH);
    const { keys, values } = entries.slice(i, to);
    n += map.setBatchEncoded(keys, values, to - i, flags);
    yield;
  }
  return n;
}

function* deleteBatches<K>(map: BpfMap<K, unknown>, keys: K[]): Steps<number> {
  let n = 0;
  for (let i = 0; i < keys.length; i += BATCH) {
    if (i) yield;
    const chunk = keys.slice(i, i + BATCH);
    try {
      n += map.deleteBatch(chunk);
    } catch (err) {
      // A slot already gone (ENOENT) stops the batch; delete the rest one by one.
      if ((err as { code?: string }).code !== 'ENOENT') throw err;
      for (const k of chunk) if (map.delete(k)) n++;
    }
  }
  return n;
}
