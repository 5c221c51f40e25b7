/**
 * The node's datapath as the agent owns it: every family's programs (see families.ts) attached to the mesh's
 * cgroup v2 subtree through pinned links, their maps pinned beside them. A starting agent adopts whatever a
 * previous one pinned (same build: kept; another build: replaced in place), so a restart never attaches a
 * second copy and never leaves a moment without programs; stopping the agent leaves the datapath running.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { readdir, rmdir } from 'node:fs/promises';
import { join, posix } from 'node:path';

import { type DatapathFamily, ensureBpffs, loadAdoptingPins, makeDirs, type MapFill, type PartApplied, type PinnedAttachment, type PinnedLink, pinLayout, pinnedLinks, removePins } from '@mesh/bpf';
import type { Registry } from 'prom-client';

import type { AgentSizes, ApplyContext, Family } from './families.js';
import { removeStaleLock } from './lock.js';
import type { Logger } from './log.js';

export interface DatapathOptions extends AgentSizes {
  /** bpffs directory holding the mesh's pins, e.g. /sys/fs/bpf/mesh. */
  pinRoot: string;
  /** cgroup v2 directory whose subtree is the mesh, e.g. /sys/fs/cgroup/mesh. */
  cgroupRoot: string;
  log: Logger;
  /** The families to run, in order (FAMILIES, and any a test adds). */
  families: readonly Family[];
}

export interface FamilyAttachment extends PinnedAttachment {
  family: string;
}

const sizesOf = (o: AgentSizes): AgentSizes => ({ maxServices: o.maxServices, maxEndpoints: o.maxEndpoints, maxConnections: o.maxConnections, maxPeers: o.maxPeers });

interface Loaded {
  family: Family;
  dp: DatapathFamily<unknown, Registry>;
}

/** A list the agent can run: each family a directory of its own on bpffs, and map names that cannot collide in
 *  the mesh's fill. Checked before anything is made or loaded. */
function checkFamilies(families: readonly Family[]): void {
  const seen = new Map<string, Family>();
  for (const f of families) {
    if (!/^[a-z][a-z0-9_-]*$/.test(f.name)) throw new TypeError(`family name ${JSON.stringify(f.name)}: expected a directory name of lower-case letters, digits, _ and -`);
    if (seen.has(f.name)) throw new TypeError(`families: ${JSON.stringify(f.name)} twice (a family's pins are maps/<name> and links/<name>)`);
    const same = [...seen.values()].find((g) => g.mapPrefix === f.mapPrefix);
    if (same) throw new TypeError(`families ${JSON.stringify(same.name)} and ${JSON.stringify(f.name)} both prefix their map names with ${JSON.stringify(f.mapPrefix)}`);
    seen.set(f.name, f);
  }
}

export class MeshDatapath implements Disposable {
  private attached: FamilyAttachment[] | undefined;

  private constructor(
    private readonly loaded: Loaded[],
    readonly cgroupRoot: string,
    readonly pinRoot: string,
  ) {}

  /** Loads every family with its maps pinned (adopting what is pinned); attaches nothing: see attach(). */
  static open(opts: DatapathOptions): MeshDatapath {
    const { log } = opts;
    checkFamilies(opts.families);
    const layout = pinLayout(opts.pinRoot);
    ensureBpffs();
    for (const f of opts.families) mkdirSync(layout.maps(f.name), { recursive: true });
    mkdirSync(opts.cgroupRoot, { recursive: true });
    const loaded: Loaded[] = [];
    try {
      for (const family of opts.families) {
        const dir = layout.maps(family.name);
        const onResize = (maps: string[]) =>
          log.warn('tables of another capacity made anew; the programs switch to them once the config is in them (their old contents are not carried)', { family: family.name, maps, sizes: sizesOf(opts) });
        const dp = loadAdoptingPins(dir, () => family.load(dir, { ...sizesOf(opts), onResize }), (err) =>
          log.warn('pinned maps do not fit this build; replacing them (their contents are lost)', { family: family.name, dir, err }),
        );
        loaded.push({ family, dp });
      }
      return new MeshDatapath(loaded, opts.cgroupRoot, opts.pinRoot);
    } catch (err) {
      for (const { dp } of loaded.reverse()) dp.close();
      throw err;
    }
  }

  /** Attaches every family's programs through their pinned links (adopting, or switching in place, what a
   *  previous agent attached). Called once the first config is in the maps: programs switched to maps made
   *  anew never run on empty tables. */
  attach(): FamilyAttachment[] {
    if (this.attached) return this.attached;
    const layout = pinLayout(this.pinRoot);
    this.attached = this.loaded.flatMap(({ family, dp }) =>
      dp.attachPinned(this.cgroupRoot, layout.links(family.name)).map((a) => ({ ...a, family: family.name })),
    );
    return this.attached;
  }

  /** What attach() did; empty before it. */
  get attachments(): readonly FamilyAttachment[] {
    return this.attached ?? [];
  }

  get isAttached(): boolean {
    return this.attached !== undefined;
  }

  /** The loaded datapath of one of the families it was opened with. */
  get<D extends DatapathFamily<any, Registry>>(family: Family<D>): D {
    const l = this.loaded.find((x) => x.family === family);
    if (!l) throw new Error(`family ${family.name} is not loaded`);
    return l.dp as unknown as D;
  }

  /** Hands each family its part of a validated config, in list order, once every family's check passed: a part
   *  a family refuses rejects the whole config before any family writes (the split never routes a config whose
   *  policy is refused). A part applied degraded (metrics that name fewer peers than the config has) comes back
   *  as warnings for the agent's log. */
  async apply(ctx: ApplyContext): Promise<{ mapWrites: number; log: Record<string, number | string>; warnings: NonNullable<PartApplied['warnings']> }> {
    // Made and checked in list order: a family whose input acts outside the kernel (mtls reloads its data plane)
    // is asked only once the families before it accepted their parts.
    const inputs: unknown[] = [];
    for (const { family, dp } of this.loaded) {
      const input = await family.input(ctx);
      await dp.check?.(input);
      inputs.push(input);
    }
    let mapWrites = 0;
    const log: Record<string, number | string> = {};
    const warnings: NonNullable<PartApplied['warnings']> = [];
    for (const [i, { family, dp }] of this.loaded.entries()) {
      const r = await dp.applyPart(inputs[i]);
      mapWrites += r.mapWrites ?? 0;
      Object.assign(log, r.log);
      for (const w of r.warnings ?? []) warnings.push({ msg: w.msg, fields: { family: family.name, ...w.fields } });
    }
    return { mapWrites, log, warnings };
  }

  /** Registers every family's metrics with the agent's registry. */
  registerMetrics(registry: Registry): void {
    for (const { dp } of this.loaded) dp.registerMetrics(registry, { fill: () => this.fill() });
  }

  /** Creates the cgroup directory of each workload (relative to the mesh's root) that does not exist yet. What
   *  exists is read with one readdir per parent directory, and the rest is made on one thread of the pool
   *  (makeDirs, 1,024 a call): the event loop stays free while the kernel makes 20,000 cgroups (one at a time,
   *  ~0.1 ms each), and pays for 20 requests, not one per cgroup. Returns the directories it made (parents it had to
   *  make included), for removeCgroups. */
  async ensureCgroups(relPaths: string[]): Promise<string[]> {
    const present = new Set<string>();
    const parents = new Set(relPaths.map((p) => posix.dirname(p)));
    await Promise.all(
      [...parents].map(async (d) => {
        const entries = await readdir(join(this.cgroupRoot, d), { withFileTypes: true }).catch(() => []);
        for (const e of entries) if (e.isDirectory()) present.add(d === '.' ? e.name : `${d}/${e.name}`);
      }),
    );
    const missing = relPaths.filter((p) => !present.has(p)).map((p) => join(this.cgroupRoot, p));
    if (missing.length === 0) return [];
    try {
      // Made one after the other on one pool thread (the kernel makes cgroups one at a time anyway), 1,024 a
      // call: the next chunk starts when the event loop has taken the last one, so a loop short of CPU (a
      // loaded machine) is not also raced by the thread that makes them.
      const made: string[] = [];
      for (let i = 0; i < missing.length; i += 1024) made.push(...(await makeDirs(missing.slice(i, i + 1024))));
      return made;
    } catch (err) {
      const e = err as Error & { subject?: string };
      const p = posix.relative(this.cgroupRoot, e.subject ?? '') || '?';
      throw new Error(`cannot make the workload cgroup ${p} under ${this.cgroupRoot}: ${e.message}`, { cause: err });
    }
  }

  /** Removes cgroups ensureCgroups made (for a config rejected after they were made), deepest first; one that
   *  holds a process or another cgroup by now stays. */
  async removeCgroups(made: string[]): Promise<void> {
    const byDepth = new Map<number, string[]>();
    for (const d of new Set(made)) {
      const depth = d.split('/').length;
      byDepth.set(depth, [...(byDepth.get(depth) ?? []), d]);
    }
    for (const depth of [...byDepth.keys()].sort((a, b) => b - a)) {
      const dirs = byDepth.get(depth)!;
      for (let i = 0; i < dirs.length; i += 16) await Promise.all(dirs.slice(i, i + 16).map((d) => rmdir(d).catch(() => undefined)));
    }
  }

  /** Entries in use and capacity of every map of the mesh, each family's names prefixed with its mapPrefix;
   *  families in the order of their names, as status lists their programs. */
  fill(): Record<string, MapFill> {
    const out: Record<string, MapFill> = {};
    const byName = [...this.loaded].sort((a, b) => (a.family.name < b.family.name ? -1 : a.family.name > b.family.name ? 1 : 0));
    for (const { family, dp } of byName) for (const [name, f] of Object.entries(dp.fill())) out[family.mapPrefix + name] = f;
    return out;
  }

  /** What each family's programs counted, by family. */
  counters(): Record<string, Record<string, number | bigint>> {
    return Object.fromEntries(this.loaded.map(({ family, dp }) => [family.name, dp.counters()]));
  }

  /** Programs as the kernel reports them now, through the pinned links (what `meshctl status` shows). */
  links(): LinkStatus[] {
    return pinnedLinks(this.pinRoot);
  }

  /** Waits for what the families' applies left for later (see DatapathFamily.settle); a failure is the
   *  family's to report at its next load, not a reason to stop otherwise. */
  async settle(): Promise<void> {
    await Promise.all(this.loaded.map(({ dp }) => dp.settle?.().catch(() => undefined)));
  }

  /** Closes the agent's handles, last family first; the pinned links and maps keep the datapath running. */
  close(): void {
    for (const { dp } of [...this.loaded].reverse()) dp.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** A pinned link as `meshctl status` shows it. */
export type LinkStatus = PinnedLink;
export { pinnedLinks };

export interface UninstallReport {
  linksDetached: string[];
  pinsRemoved: number;
  cgroupsRemoved: string[];
  /** cgroups that still hold processes: left in place (their processes are not the mesh's to kill). */
  cgroupsBusy: string[];
}

/** Detaches every pinned link (even if a process still holds it), removes every pin and the mesh's empty
 *  cgroups. Programs go away with their last link and handle. */
export function uninstall(pinRoot: string, cgroupRoot: string | undefined): UninstallReport {
  const report: UninstallReport = { ...removePins(pinRoot), cgroupsRemoved: [], cgroupsBusy: [] };
  removeStaleLock(pinRoot);

  if (cgroupRoot && existsSync(cgroupRoot)) {
    const removeTree = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) removeTree(join(d, e.name));
      const procs = readFileSync(join(d, 'cgroup.procs'), 'utf8').trim();
      if (procs !== '') return void report.cgroupsBusy.push(d);
      try {
        rmdirSync(d);
        report.cgroupsRemoved.push(d);
      } catch {
        report.cgroupsBusy.push(d);
      }
    };
    removeTree(cgroupRoot);
  }
  return report;
}
