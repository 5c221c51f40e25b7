// The bind guard: the data plane's inbound source address is what a STRICT port accepts plaintext from, so no
// process of the mesh's cgroups but the data plane's may bind it. A process in an enrolled workload's cgroup, or
// in another cgroup of the subtree, gets EPERM (IPv4, IPv6, and IPv4-mapped on a dual-stack socket), counted;
// the data plane's cgroup binds it; other addresses are untouched.
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { capturedOutput, createCgroup, createNetns, describePrivileged, inNetns, type Cgroup, type Netns, vethPair } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { MtlsDatapath } from '../../src/datapath/index.js';

const bindScript = fileURLToPath(new URL('../fixtures/bind.py', import.meta.url));

// Inside the test's own namespace: the data plane's inbound source addresses and another address of the node.
const SOURCE4 = '10.232.0.6';
const SOURCE6 = 'fd32::6';
const OTHER4 = '10.232.0.7';
const ALL = [SOURCE4, SOURCE6, `::ffff:${SOURCE4}`, OTHER4];

describePrivileged('the bind guard of the inbound source address', () => {
  let root: Cgroup, wl: Cgroup, other: Cgroup, dp: Cgroup;
  let ns: Netns, peer: Netns;
  let mtls: MtlsDatapath;

  beforeAll(async () => {
    root = await createCgroup('mtlsbind');
    wl = await createCgroup('wl', { parent: root.path });
    other = await createCgroup('other', { parent: root.path });
    dp = await createCgroup('dp', { parent: root.path });
    ns = await createNetns('mtlsbind');
    peer = await createNetns('mtlsbindp');
    await vethPair(ns, peer, { addrA: [`${SOURCE4}/24`, `${OTHER4}/24`, `${SOURCE6}/64`], addrB: ['10.232.0.1/24'] });
    mtls = MtlsDatapath.load();
    mtls.attach(root.path);
    mtls.apply({
      dataplane: { outbound: { ipv4: '127.0.0.50', port: 15001 }, inboundSource: { ipv4: SOURCE4, ipv6: SOURCE6 }, cgroups: [dp.path] },
      enrolled: [{ cgroup: wl.path, mode: 'STRICT' }],
      destinations: [],
    });
  });
  afterAll(async () => {
    await wl?.close();
    await other?.close();
    await dp?.close();
    await ns?.close();
    await peer?.close();
    mtls?.close();
    await root?.close();
  });

  // Runs bind.py in `cg` (moved there first: `ip netns exec` mounts a fresh /sys) inside the namespace.
  async function binds(cg: Cgroup): Promise<Record<string, string>> {
    const [cmd, args] = inNetns(ns, 'python3', [bindScript, ...ALL]);
    const child: ChildProcess = cg.spawn(cmd, args);
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    const out = capturedOutput(child);
    expect(code, out.stderr).toBe(0);
    return Object.fromEntries(out.stdout.trim().split('\n').map((l) => l.split(' ') as [string, string]));
  }

  it('an enrolled workload and another cgroup of the subtree get EPERM binding it, counted', async () => {
    const before = mtls.counters().bind_refused;
    const want = { [SOURCE4]: 'EPERM', [SOURCE6]: 'EPERM', [`::ffff:${SOURCE4}`]: 'EPERM', [OTHER4]: 'ok' };
    expect(await binds(wl)).toEqual(want);
    expect(await binds(other)).toEqual(want);
    expect(mtls.counters().bind_refused - before).toBe(6n);
  });

  it("the data plane's cgroup binds it", async () => {
    const before = mtls.counters().bind_refused;
    expect(await binds(dp)).toEqual({ [SOURCE4]: 'ok', [SOURCE6]: 'ok', [`::ffff:${SOURCE4}`]: 'ok', [OTHER4]: 'ok' });
    expect(mtls.counters().bind_refused).toBe(before);
  });

  it('a snapshot with a cgroup that does not exist is refused whole, naming the field', () => {
    expect(() =>
      mtls.apply({
        dataplane: { outbound: { ipv4: '127.0.0.50', port: 15001 }, inboundSource: { ipv4: SOURCE4 }, cgroups: [`${root.path}/missing`] },
        enrolled: [],
        destinations: [],
      }),
    ).toThrow(/dataplane\.cgroups\[0\]: .*missing/);
    expect(mtls.enrolledMap.count()).toBe(1);
  });
});
