/**
 * Pinned objects, owned in one place (cilium/ebpf's pin/): the layout of a datapath's pins on bpffs, attaching
 * through pinned links (adopt, replace in place, attach, detach what is stale), loading with maps adopted from
 * pins, and walking or removing a pin tree. Under a pin root each family has `maps/<family>/<map>` and
 * `links/<family>/<program>`.
 */
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

import { BpfError } from './errors.js';
import { Link } from './link.js';
import { native } from './native.js';
import { Program } from './program.js';

/** What attachCgroupPinned() did for one program. */
export interface PinnedAttachment {
  program: string;
  path: string;
  /** attached: a new pinned link; adopted: a pinned link already ran this program with these maps; replaced:
   *  it ran another build, or this one with other maps (a map replaced since), and now runs this one. */
  outcome: 'attached' | 'adopted' | 'replaced';
  linkId: number;
}

const MAPS = 'maps';
const LINKS = 'links';

/** Where a pin root keeps each family's maps and links. */
export interface PinLayout {
  root: string;
  maps(family: string): string;
  links(family: string): string;
}

export function pinLayout(root: string): PinLayout {
  return {
    root,
    maps: (family) => join(root, MAPS, family),
    links: (family) => join(root, LINKS, family),
  };
}

/**
 * Attaches `programs` to a cgroup v2 directory through links pinned as `<linkDir>/<program>`, adopting what a
 * previous process pinned there: a pinned link that already runs this very program (`runsSame`) is kept, one
 * that runs another build or other maps is switched to this program in place (no moment without a program),
 * and a missing one is attached and pinned. Pinned links of programs not in `programs`, or attached to another
 * cgroup, are detached. Never makes a second attachment of a program; keeps no link open.
 */
export function attachCgroupPinned(
  cgroupPath: string,
  linkDir: string,
  programs: ReadonlyMap<string, Program>,
  runsSame: (running: Program, prog: Program) => boolean,
): PinnedAttachment[] {
  mkdirSync(linkDir, { recursive: true });
  const cgId = native.cgroupId(cgroupPath);
  for (const f of readdirSync(linkDir)) {
    if (programs.has(f)) continue;
    Link.openPinned(join(linkDir, f)).detach();
    rmSync(join(linkDir, f), { force: true });
  }
  const out: PinnedAttachment[] = [];
  for (const [name, prog] of programs) {
    const path = join(linkDir, name);
    if (existsSync(path)) {
      const link = Link.openPinned(path);
      const info = link.info();
      if (info.cgroupId !== undefined && info.cgroupId !== cgId) {
        link.detach();
        rmSync(path, { force: true });
      } else {
        try {
          const running = Program.openById(info.programId);
          let same: boolean;
          try {
            same = runsSame(running, prog);
          } finally {
            running.close();
          }
          if (!same) link.update(prog);
          out.push({ program: name, path, outcome: same ? 'adopted' : 'replaced', linkId: info.id ?? 0 });
        } finally {
          link.close(); // the pin holds the attachment
        }
        continue;
      }
    }
    const link = prog.attachCgroup(cgroupPath);
    try {
      link.pin(path);
      out.push({ program: name, path, outcome: 'attached', linkId: link.info().id ?? 0 });
    } finally {
      link.close(); // pinned: stays attached; not pinned (pin failed): detached
    }
  }
  return out;
}

/**
 * Loads with maps adopted from the pins in `dir`; pins of another layout (a build that changed a map) are
 * removed and the load tried once more. Only that: any other failure leaves the pins, and the counts in them,
 * alone. `onReplace` is told before the pins go.
 */
export function loadAdoptingPins<T>(dir: string, load: () => T, onReplace: (err: BpfError) => void = () => undefined): T {
  try {
    return load();
  } catch (err) {
    if (!(err instanceof BpfError && err.pinnedMapMismatch) || !existsSync(dir) || readdirSync(dir).length === 0) throw err;
    onReplace(err);
    rmSync(dir, { recursive: true, force: true });
    return load();
  }
}

/**
 * Removes from `dir` the pins of every group of maps in which one pinned map's capacity is not the one wanted
 * now (`maxEntries(name)`), so the next load makes those maps anew and adopts the rest. Maps that refer to
 * each other (a service table and the endpoint slots its entries number) form one group and go together; a
 * group whose capacities are unchanged keeps its contents (a connection table survives a resize of the
 * routing tables). Programs still attached keep the old maps until their links are switched. Returns the
 * names of the maps whose pins went.
 */
export function dropResizedPins(dir: string, groups: readonly (readonly string[])[], maxEntries: (map: string) => number): string[] {
  const pinnedSize = (name: string): number | undefined => {
    const path = join(dir, name);
    if (!existsSync(path)) return undefined;
    const h = native.MapHandle.openPinned(path);
    try {
      return h.info().maxEntries;
    } finally {
      h.close();
    }
  };
  const dropped: string[] = [];
  for (const group of groups) {
    if (!group.some((name) => { const n = pinnedSize(name); return n !== undefined && n !== maxEntries(name); })) continue;
    for (const name of group) {
      if (!existsSync(join(dir, name))) continue;
      rmSync(join(dir, name), { force: true });
      dropped.push(name);
    }
  }
  return dropped;
}

/** One pinned link as the kernel reports it now. */
export interface PinnedLink {
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

/** `links/<family>/<program>` pins under a pin root, sorted by family, then program. */
function linkPins(root: string): { family: string; program: string; pin: string }[] {
  const dir = join(root, LINKS);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .sort()
    .flatMap((family) => readdirSync(join(dir, family)).sort().map((program) => ({ family, program, pin: join(dir, family, program) })));
}

/** Every pinned link under a pin root, read from the kernel. */
export function pinnedLinks(root: string): PinnedLink[] {
  return linkPins(root).map(({ family, program, pin }) => {
    const link = Link.openPinned(pin);
    try {
      const info = link.info();
      const prog = Program.openById(info.programId);
      try {
        const p = prog.info();
        return {
          family,
          program,
          pin,
          linkId: info.id ?? 0,
          programId: info.programId,
          tag: p.tag,
          attachType: String(info.attachType ?? ''),
          runCount: p.runCount.toString(),
          runTimeNs: p.runTimeNs.toString(),
        };
      } finally {
        prog.close();
      }
    } finally {
      link.close();
    }
  });
}

/** Detaches every pinned link under a pin root (even if a process still holds it) and removes the whole tree.
 *  Programs go away with their last link and handle, maps with their last program and handle. */
export function removePins(root: string): { linksDetached: string[]; pinsRemoved: number } {
  const linksDetached: string[] = [];
  for (const { family, program, pin } of linkPins(root)) {
    try {
      Link.openPinned(pin).detach();
    } catch {
      // not a link (or already gone): the pin is removed below all the same
    }
    linksDetached.push(`${family}/${program}`);
  }
  const count = (d: string): number =>
    existsSync(d) ? readdirSync(d, { withFileTypes: true }).reduce((n, e) => n + (e.isDirectory() ? count(join(d, e.name)) : 1), 0) : 0;
  const pinsRemoved = count(root);
  rmSync(root, { recursive: true, force: true });
  return { linksDetached, pinsRemoved };
}
