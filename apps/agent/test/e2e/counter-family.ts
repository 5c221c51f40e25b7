/**
 * A datapath family that lives in the test tree, to show that a family plugs into the agent with no change to
 * the agent's files: skb_guard (bpf/testprogs) counts the packets of the mesh's sockets per direction and
 * drops those to the ports its input lists. It implements DatapathFamily like @mesh/split and @mesh/metrics.
 */
import { type BpfMap, type BpfObject, codec as c, type DatapathFamily, type MapFill, ObjectSpec, type PartApplied, type PerCpuMap, type PinnedAttachment } from '@mesh/bpf';
import { testprogFile, testprogs } from '@mesh/testkit/testprogs';
import { Counter, type Registry } from 'prom-client';

import type { Family } from '../../src/families.js';

const names = testprogs.skb_guard;
const DIRECTIONS = ['ingress', 'egress'] as const; // skb_stats slots 0 and 1
const skbCounters = c.struct({ packets: c.u64n, bytes: c.u64n });

export class CounterDatapath implements DatapathFamily<number[], Registry> {
  private readonly stats: PerCpuMap<number, { packets: number; bytes: number }>;
  private readonly blocked: BpfMap<number, number>;

  private constructor(private readonly obj: BpfObject) {
    this.stats = obj.perCpuMap(names.maps.skb_stats, { key: c.u32, value: skbCounters });
    this.blocked = obj.map(names.maps.blocked_ports, { key: c.u16, value: c.u64n });
  }

  static load(opts: { pinDir?: string }): CounterDatapath {
    // A test program: not embedded in the addon users get, loaded from the build tree.
    const spec = ObjectSpec.file(testprogFile(names.name));
    if (opts.pinDir !== undefined) spec.pinMaps(opts.pinDir);
    return new CounterDatapath(spec.load());
  }

  attachPinned(cgroupPath: string, linkDir: string): PinnedAttachment[] {
    return this.obj.attachCgroupPinned(cgroupPath, linkDir);
  }

  /** Its part of the snapshot: the ports to block (what is blocked and not listed is let through again). */
  async applyPart(ports: number[]): Promise<PartApplied> {
    const want = new Set(ports);
    let mapWrites = 0;
    for (const p of this.blocked.keys()) if (!want.has(p) && this.blocked.delete(p)) mapWrites++;
    for (const p of want) if (this.blocked.get(p) === undefined) (this.blocked.set(p, 0), mapWrites++);
    return { mapWrites, log: { blockedPorts: want.size } };
  }

  fill(): Record<string, MapFill> {
    return { blocked_ports: { used: this.blocked.count(), max: this.blocked.maxEntries } };
  }

  counters(): Record<string, number> {
    return Object.fromEntries(DIRECTIONS.map((d, i) => [`${d}_packets`, (this.stats.get(i) ?? []).reduce((a, v) => a + v.packets, 0)]));
  }

  registerMetrics(registry: Registry): void {
    const read = () => this.counters();
    new Counter({
      name: 'mesh_test_counter_packets_total',
      help: 'Packets of the mesh sockets, by direction (the test family).',
      labelNames: ['direction'],
      registers: [registry],
      collect() {
        this.reset();
        const n = read();
        for (const d of DIRECTIONS) this.inc({ direction: d }, n[`${d}_packets`]!);
      },
    });
  }

  close(): void {
    this.obj.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** The list entry: blocks `ports` (give ports nothing in the test uses), whatever the config. */
export const counterFamily = (ports: number[]): Family<CounterDatapath> => ({
  name: 'counter',
  mapPrefix: 'counter_',
  load: (pinDir) => CounterDatapath.load({ pinDir }),
  input: () => ports,
});
