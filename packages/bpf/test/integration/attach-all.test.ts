// BpfObject.attachCgroup: every program at its section's attach type, all or nothing.
import { createCgroup, describePrivileged } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { liveHandles, queryCgroup } from '../../src/index.js';
import { testprog, testprogs } from '../programs.js';

describePrivileged('attach every program of an object', () => {
  it('attaches each program once at its own attach type; a failure leaves nothing attached', async () => {
    await using cg = await createCgroup('bpfall');
    using obj = testprog(testprogs.sock_redirect.name).load();
    const links = obj.attachCgroup(cg.path);
    expect(links.length).toBe(8);
    const ids = links.map((l) => l.info().programId);
    expect(queryCgroup(cg.path, 'cgroup_inet4_connect')).toEqual([ids[0]]);
    expect(queryCgroup(cg.path, 'cgroup_inet6_getpeername')).toEqual([ids[7]]);
    links.forEach((l) => l.close());
    expect(queryCgroup(cg.path, 'cgroup_inet4_connect')).toEqual([]);

    const handles = liveHandles();
    // The third program names a type that does not fit: the two before it are detached again.
    const names = [testprogs.sock_redirect.programs.redirect_connect4, testprogs.sock_redirect.programs.redirect_connect6, 'no_such_program'];
    expect(() => obj.attachCgroup(cg.path, names)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    expect(queryCgroup(cg.path, 'cgroup_inet4_connect')).toEqual([]);
    expect(queryCgroup(cg.path, 'cgroup_inet6_connect')).toEqual([]);
    expect(liveHandles()).toBe(handles + 0);
  });
});
