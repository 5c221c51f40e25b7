// A connect() to a service with no backend is refused. With bpf_set_retval (Linux 5.18) the error is
// ECONNREFUSED, what clients retry on; before 5.18 the programs drop that call (a CO-RE check at load) and the
// refusal is the EPERM a bare 0 gives. refuseWithEperm runs that fallback on this kernel.
import { embedded, Program } from '@mesh/bpf';
import { createCgroup, describePrivileged, run, type Cgroup } from '@mesh/testkit';
import { afterEach, expect, it } from 'vitest';

import { SplitDatapath } from '../../src/index.js';
import { dialScript, service, snapshot } from '../support.js';

const VIP = '127.0.0.120';

describePrivileged('refused connections', () => {
  let cg: Cgroup | undefined;
  let dp: SplitDatapath | undefined;
  afterEach(async () => {
    dp?.close();
    await cg?.close();
  });

  it.each([
    { opts: {}, error: 'ECONNREFUSED', retvalCalls: 1 },
    { opts: { refuseWithEperm: true }, error: 'EPERM', retvalCalls: 0 },
  ])('a service with no endpoints refuses with $error ($opts)', async ({ opts, error, retvalCalls }) => {
    cg = await createCgroup('refuse');
    dp = SplitDatapath.load(opts);
    const links = dp.attach(cg.path);
    dp.apply(snapshot({ services: [service('empty', VIP, 80)] }));
    const r = await cg.run(process.execPath, [dialScript, VIP, '80', '5', '5'], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).errors).toEqual({ [error]: 5 });
    expect(dp.counters().connect_no_backend).toBe(5n);
    // Without the call, the verifier never sees bpf_set_retval: what lets the programs load before 5.18.
    const id = links.map((l) => l.info().programId).find((pid) => {
      using p = Program.openById(pid);
      return p.name === embedded.split.programs.split_connect4;
    });
    const xlated = await run('bpftool', ['prog', 'dump', 'xlated', 'id', String(id)], { timeoutMs: 10_000 });
    expect(xlated.stdout.split('\n').filter((l) => /\bcall bpf_set_retval/.test(l))).toHaveLength(retvalCalls);
  });
});
