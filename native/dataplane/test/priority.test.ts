// CPU priority (--nice): every thread of the data plane runs at the nice value given, and so does its session's
// autogroup where the kernel schedules by autogroup (a session of its own, as the agent starts it), so that busy
// sessions beside it cannot starve the process every tunnelled connection of the node waits on. A value out of
// range is refused at start, naming it.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, expect, it } from 'vitest';
import { autogroupNice, capturedOutput, describePrivileged, ProcessTracker, threadsOf, waitForExit, waitForLine } from '@mesh/testkit';

import { DATAPLANE, loopbackNet, missingDataplane } from './harness.js';

const missing = missingDataplane();

describePrivileged('mesh-dataplane --nice', () => {
  const tracker = new ProcessTracker('dp-nice');
  const ip = loopbackNet();
  let dir: string;
  let path: string;

  beforeAll(() => {
    if (missing) throw new Error(missing);
    dir = mkdtempSync(join(tmpdir(), 'dp-nice-'));
    path = join(dir, 'dp.json');
    writeFileSync(path, JSON.stringify({ tunnel: `${ip(1)}:0`, stats: `${ip(1)}:0`, workers: 3, workloads: [] }));
  });
  afterAll(async () => {
    await tracker.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('runs the main thread, every worker and its session\'s autogroup at the nice value given', async () => {
    // The tracker starts it in a session of its own (as the agent does): the autogroup written is its alone.
    const child = tracker.spawn(DATAPLANE, ['--config', path, '--nice', '-7']);
    await waitForLine(child, /listening outbound=\S+ tunnel=\S+ stats=\S+ workers=3/, 30_000);
    expect(threadsOf(child.pid!).map((t) => t.nice)).toEqual([-7, -7, -7, -7]);
    const group = autogroupNice(child.pid!);
    if (group !== undefined) expect(group).toBe(-7);
  });

  it('refuses a value out of range or not a number, naming it', async () => {
    for (const bad of ['20', '-21', 'high', '']) {
      const child = tracker.spawn(DATAPLANE, ['--config', path, '--nice', bad]);
      await waitForExit(child, 20_000);
      expect(child.exitCode).toBe(2);
      expect(capturedOutput(child).stderr).toContain(`--nice "${bad}": expected an integer from -20 to 19`);
    }
  });
});
