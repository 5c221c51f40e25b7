/**
 * The node's datapath as the agent owns it: the split and metrics programs attached to the mesh's cgroup v2
 * subtree through pinned links, their maps pinned beside them. A starting agent adopts whatever a previous one
 * pinned (same build: kept; another build: replaced in place), so a restart never attaches a second copy and
 * never leaves a moment without programs; stopping the agent leaves the datapath running.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import { join, posix } from 'node:path';

import { BpfError, ensureBpffs, Link, type PinnedAttachment, Program } from '@mesh/bpf';
import { MetricsDatapath } from '@mesh/metrics';
import { SplitDatapath } from '@mesh/split';

import { removeStaleLock } from './lock.js';
import type { Logger } from './log.js';
import { pinLayout } from './paths.js';

export interface DatapathOptions {
  /** bpffs directory holding the mesh's pins, e.g. /sys/fs/bpf/mesh. */
  pinRoot: string;
  /** cgroup v2 directory whose subtree is the mesh, e.g. /sys/fs/cgroup/mesh. */
  cgroupRoot: string;
  log: Logger;
  maxServices?: number;
  maxEndpoints?: number;
  maxConnections?: number;
}

export interface FamilyAttachment extends PinnedAttachment {
  family: 'split' | 'metrics';
}

/**
 * Loads with maps adopted from pins; pins of another layout (a build that changed a map) are replaced. Only
 * that: any other failure leaves the pins, and the counts in them, alone.
 */
function loadAdopting<T>(family: string, dir: string, log: Logger, load: () => T): T {
  try {
    return load();
  } catch (err) {
    if (!(err instanceof BpfError && err.pinnedMapMismatch) || !existsSync(dir) || readdirSync(dir).length === 0) throw err;
    log.warn('pinned maps do not fit this build; replacing them (their contents are lost)', { family, dir, err });
    rmSync(dir, { recursive: true, force: true });
    return load();
  }
}

export class MeshDatapath implements Disposable {
  private constructor(
    readonly split: SplitDatapath,
    readonly metrics: MetricsDatapath,
    readonly attachments: FamilyAttachment[],
    readonly cgroupRoot: string,
    readonly pinRoot: string,
  ) {}

  static open(opts: DatapathOptions): MeshDatapath {
    const { log } = opts;
    const layout = pinLayout(opts.pinRoot);
    ensureBpffs();
    mkdirSync(layout.maps('split'), { recursive: true });
    mkdirSync(layout.maps('metrics'), { recursive: true });
    mkdirSync(opts.cgroupRoot, { recursive: true });

    const split = loadAdopting('split', layout.maps('split'), log, () =>
      SplitDatapath.load({
        pinDir: layout.maps('split'),
        maxServices: opts.maxServices,
        maxEndpoints: opts.maxEndpoints,
        maxConnections: opts.maxConnections,
      }),
    );
    let metrics: MetricsDatapath | undefined;
    try {
      metrics = loadAdopting('metrics', layout.maps('metrics'), log, () => MetricsDatapath.load({ pinDir: layout.maps('metrics') }));
      const attachments: FamilyAttachment[] = [
        ...split.attachPinned(opts.cgroupRoot, layout.links('split')).map((a) => ({ ...a, family: 'split' as const })),
        ...metrics.attachPinned(opts.cgroupRoot, layout.links('metrics')).map((a) => ({ ...a, family: 'metrics' as const })),
      ];
      return new MeshDatapath(split, metrics, attachments, opts.cgroupRoot, opts.pinRoot);
    } catch (err) {
      metrics?.close();
      split.close();
      throw err;
    }
  }

  /** Creates the cgroup directory of each workload (relative to the mesh's root) that does not exist yet. What
   *  exists is read with one readdir per parent directory, and the rest is made in the thread pool: the event loop
   *  stays free while the kernel makes 20,000 cgroups (one at a time, ~0.1 ms each). */
  async ensureCgroups(relPaths: string[]): Promise<void> {
    const present = new Set<string>();
    const parents = new Set(relPaths.map((p) => posix.dirname(p)));
    await Promise.all(
      [...parents].map(async (d) => {
        const entries = await readdir(join(this.cgroupRoot, d), { withFileTypes: true }).catch(() => []);
        for (const e of entries) if (e.isDirectory()) present.add(d === '.' ? e.name : `${d}/${e.name}`);
      }),
    );
    const missing = relPaths.filter((p) => !present.has(p));
    for (let i = 0; i < missing.length; i += 16) {
      await Promise.all(missing.slice(i, i + 16).map((p) => mkdir(join(this.cgroupRoot, p), { recursive: true })));
    }
  }

  /** Entries in use and capacity of every map of the mesh (split's prefixed `split_`). */
  fill(): Record<string, { used: number; max: number }> {
    const out: Record<string, { used: number; max: number }> = { ...this.metrics.fill() };
    for (const [name, f] of Object.entries(this.split.fill())) out[`split_${name}`] = f;
    return out;
  }

  /** Programs as the kernel reports them now, through the pinned links (what `meshctl status` shows). */
  links(): LinkStatus[] {
    return pinnedLinks(this.pinRoot);
  }

  /** Closes the agent's handles; the pinned links and maps keep the datapath running. */
  close(): void {
    this.metrics.close();
    this.split.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

export interface LinkStatus {
  family: string;
  program: string;
  pin: string;
  linkId: number;
  programId: number;
  tag: string;
  attachType: string;
  runCount: string;
  runTimeNs: string;
}

/** Every pinned link under the pin root, read from the kernel. */
export function pinnedLinks(pinRoot: string): LinkStatus[] {
  const out: LinkStatus[] = [];
  const dir = join(pinRoot, 'links');
  if (!existsSync(dir)) return out;
  for (const family of readdirSync(dir).sort()) {
    for (const program of readdirSync(join(dir, family)).sort()) {
      const pin = join(dir, family, program);
      const link = Link.openPinned(pin);
      try {
        const info = link.info();
        const prog = Program.openById(info.programId);
        try {
          const p = prog.info();
          out.push({
            family,
            program,
            pin,
            linkId: info.id ?? 0,
            programId: info.programId,
            tag: p.tag,
            attachType: String(info.attachType ?? ''),
            runCount: p.runCount.toString(),
            runTimeNs: p.runTimeNs.toString(),
          });
        } finally {
          prog.close();
        }
      } finally {
        link.close();
      }
    }
  }
  return out;
}

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
  const report: UninstallReport = { linksDetached: [], pinsRemoved: 0, cgroupsRemoved: [], cgroupsBusy: [] };
  const links = join(pinRoot, 'links');
  if (existsSync(links)) {
    for (const family of readdirSync(links)) {
      for (const program of readdirSync(join(links, family))) {
        const pin = join(links, family, program);
        try {
          Link.openPinned(pin).detach();
        } catch {
          // not a link (or already gone): the pin is removed below all the same
        }
        report.linksDetached.push(`${family}/${program}`);
      }
    }
  }
  const count = (d: string): number =>
    existsSync(d) ? readdirSync(d, { withFileTypes: true }).reduce((n, e) => n + (e.isDirectory() ? count(join(d, e.name)) : 1), 0) : 0;
  report.pinsRemoved = count(pinRoot);
  rmSync(pinRoot, { recursive: true, force: true });
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
