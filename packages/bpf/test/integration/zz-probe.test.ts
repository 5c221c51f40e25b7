import { createCgroup } from '@mesh/testkit';
import { expect, it } from 'vitest';
import { embedded, ObjectSpec, queryCgroup } from '../../src/index.js';

it('probe legacy update', async () => {
  await using cg = await createCgroup('probe');
  const { name, programs } = embedded.sock_redirect;
  for (const flags of [0, 1, 2]) {
    using first = ObjectSpec.embedded(name).load();
    using second = ObjectSpec.embedded(name).load();
    const p1 = first.program(programs.redirect_connect4);
    const p2 = second.program(programs.redirect_connect4);
    const link = p1.attachCgroup(cg.path, { legacyFlags: flags });
    try { link.update(p2); console.log(flags, 'update ok', queryCgroup(cg.path, 'cgroup_inet4_connect'), p1.info().id, p2.info().id); }
    catch (e) { console.log(flags, 'update failed', String(e)); }
    link.close();
    console.log(flags, 'after close', queryCgroup(cg.path, 'cgroup_inet4_connect'));
  }
});
