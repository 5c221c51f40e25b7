// The addon when a dup of an fd fails (EMFILE): nothing is half-made. A BPF_PROG_ATTACH attachment is made only
// once its handle can hold it (before, the program stayed attached with no handle to detach it), an update()
// changes nothing (before, the program was replaced and the handle kept a closed fd number, which its close()
// later closed again: someone else's file). Run in a child under a low fd limit (prlimit).
import { createCgroup, describePrivileged, ensureTool, run, type Cgroup } from '@mesh/testkit';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

const fixture = fileURLToPath(new URL('../fixtures/dup-failure.mjs', import.meta.url));

describePrivileged('fd duplication failures', () => {
  let cg: Cgroup;
  beforeAll(async () => {
    cg = await createCgroup('dupfail');
  });
  afterAll(async () => cg?.close());

  it('a failed dup leaves nothing attached by a failed attach or update, and close() closes only its own fds', async () => {
    const r = await run(ensureTool('prlimit'), ['--nofile=1024:1024', '--', process.execPath, fixture, cg.path], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, unknown> & { updatePrograms: number[] };
    expect(out).toMatchObject({
      attach: 'EMFILE',
      attachedAfterAttach: [],
      update: 'EMFILE',
      // The update failed whole: the first program still runs, until the link is closed.
      attachedAfterUpdate: [out.updatePrograms[0]],
      filesClosedByLinkClose: 0,
      attachedAfterClose: [],
    });
  });
});
