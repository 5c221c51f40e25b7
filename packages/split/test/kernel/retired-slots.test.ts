// A replaced version's endpoint slots outlive every program run that may have read the service entry pointing at
// them: an apply retires them, and they are deleted only after a grace period (waitForPrograms). Before, an apply
// deleted them at once, and a connect() slowed between its two lookups across a few applies found every version
// it read gone and was refused (ECONNREFUSED during a config change). A test program (split_hold) stands for
// that connect(): it reads the service entry, holds it HOLD_MS, then looks up the slot. Retired slots hold room
// in the endpoint table until deleted: an apply that needs it waits for the grace period rather than refusing.
import { BPFFS } from '@mesh/bpf';
import { describePrivileged, uniqueName, waitForExit } from '@mesh/testkit';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { compile, SplitDatapath, validate } from '../../src/index.js';
import { svcKey } from '../../src/maps.js';
import { holdRun, now } from '../hold.js';
import { service, slice, snapshot } from '../support.js';

const HOLD_MS = 1000;
const snap = (eps: string[]) => snapshot({ services: [service('a', '127.0.70.1', 80)], endpointSlices: [slice('a', eps, 8080)] });

describePrivileged('retired endpoint slots', () => {
  const dirs: string[] = [];
  const opened: SplitDatapath[] = [];
  /** A datapath with its maps pinned in a fresh directory (the held run adopts them). */
  function load(opts: { maxEndpoints?: number } = {}): { dp: SplitDatapath; dir: string } {
    const dir = join(BPFFS, uniqueName('retired', 40));
    mkdirSync(dir, { recursive: true });
    dirs.push(dir);
    const dp = SplitDatapath.load({ ...opts, pinDir: dir });
    opened.push(dp);
    return { dp, dir };
  }
  const version = (dp: SplitDatapath) => dp.servicesMap.getBatch()[0]![1].version;
  const slots = (dp: SplitDatapath) => dp.endpointsMap.getBatch().map(([k]) => `${k.version}.${k.index}`).sort();
  const keyHex = (dp: SplitDatapath) => {
    const b = Buffer.alloc(svcKey.size);
    svcKey.encode(dp.servicesMap.getBatch()[0]![0], b, 0);
    return b.toString('hex');
  };

  let shared: { dp: SplitDatapath; dir: string };
  beforeAll(() => {
    shared = load();
  });
  afterAll(() => {
    for (const dp of opened) dp.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it(`a program run that read the service entry before an apply finds the slot it points at (held ${HOLD_MS} ms across the apply)`, async () => {
    const { dp, dir } = shared;
    dp.apply(snap(['127.0.71.1']));
    const v = version(dp);
    const { child, state, result } = await holdRun(dir, keyHex(dp), HOLD_MS);
    try {
      dp.apply(snap(['127.0.71.2']));
      const applied = now();
      const r = await result;
      // The apply switched the entry and returned while the run held the version it read.
      expect(BigInt(r.read)).toBeLessThan(applied);
      expect(BigInt(r.ended)).toBeGreaterThan(applied);
      expect({ version: r.version, found: r.found }).toEqual({ version: v, found: 1 });
      await waitForExit(child, 30_000);
    } finally {
      state.close();
    }
    await dp.reclaimed();
    expect(slots(dp)).toEqual([`${v + 1}.0`]);
  }, 120_000);

  it('after an apply returns, the replaced slots stay, counted in the endpoint table, until a grace period has passed', async () => {
    const { dp } = shared;
    await dp.reclaimed();
    dp.apply(snap(['127.0.71.3', '127.0.71.4']));
    await dp.reclaimed();
    const v = version(dp);
    dp.apply(snap(['127.0.71.5']));
    expect(slots(dp)).toEqual([`${v}.0`, `${v}.1`, `${v + 1}.0`]);
    expect(dp.retiredSlots).toBe(2);
    expect(dp.fill().endpoints.used).toBe(3);
    await dp.reclaimed();
    expect(slots(dp)).toEqual([`${v + 1}.0`]);
    expect(dp.retiredSlots).toBe(0);
    expect(dp.fill().endpoints.used).toBe(1);
  }, 60_000);

  it('an endpoint table full of retired slots: the apply waits for their grace period and writes (agent and synchronous apply); a config too big is still refused', async () => {
    const { dp, dir } = load({ maxEndpoints: 4 });
    const part = (eps: string[]) => compile(validate(snap(eps)));
    dp.apply(snap(['127.0.72.1', '127.0.72.2']));
    // A run holds the grace period open, so the retired slots cannot go before it ends.
    const first = await holdRun(dir, keyHex(dp), HOLD_MS);
    try {
      dp.apply(snap(['127.0.72.3', '127.0.72.4']));
      expect({ used: dp.fill().endpoints.used, retired: dp.retiredSlots }).toEqual({ used: 4, retired: 2 });
      // 2 installed + 3 new > 4: refused, and the message counts what is installed (retired slots go anyway).
      await expect(dp.check(part(['127.0.72.5', '127.0.72.6', '127.0.72.7']))).rejects.toThrow(
        /3 new endpoint slots do not fit beside the 2 installed \(endpoint table: 4 entries\): raise maxEndpoints/,
      );
      // 2 installed + 2 new fit once the 2 retired are gone: the agent's apply waits for that.
      await dp.check(part(['127.0.72.5', '127.0.72.6']));
      await dp.applyPart(part(['127.0.72.5', '127.0.72.6']));
      const applied = now();
      // The slots it replaced are retired in turn.
      const v = version(dp);
      expect(slots(dp)).toEqual([`${v - 1}.0`, `${v - 1}.1`, `${v}.0`, `${v}.1`]);
      const r = await first.result;
      expect(applied).toBeGreaterThan(BigInt(r.ended));
      await waitForExit(first.child, 30_000);
    } finally {
      first.state.close();
    }
    const v = version(dp);

    // The synchronous apply waits on its own thread: a run holds the grace period open again, one apply fills the
    // table with retired slots, the next needs their room.
    await dp.reclaimed();
    const second = await holdRun(dir, keyHex(dp), HOLD_MS);
    try {
      dp.apply(snap(['127.0.72.7', '127.0.72.8']));
      expect({ used: dp.fill().endpoints.used, retired: dp.retiredSlots }).toEqual({ used: 4, retired: 2 });
      dp.apply(snap(['127.0.72.9', '127.0.72.10']));
      const applied = now();
      const r = await second.result;
      expect(applied).toBeGreaterThan(BigInt(r.ended));
      await waitForExit(second.child, 30_000);
    } finally {
      second.state.close();
    }
    await dp.reclaimed();
    expect(slots(dp)).toEqual([`${v + 2}.0`, `${v + 2}.1`]);
  }, 120_000);
});
