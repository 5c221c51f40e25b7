// A restarted agent adopts what the last one left: maps pinned under pinDir keep their entries (the data plane
// keeps reading the same mtls_orig), and links pinned under linkDir are adopted, not attached a second time.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { BPFFS } from '@mesh/bpf';
import { createCgroup, describePrivileged, uniqueName, type Cgroup } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { MtlsDatapath, type MtlsSnapshot } from '../../src/datapath/index.js';

describePrivileged('MtlsDatapath across restarts', () => {
  let root: Cgroup, wl: Cgroup;
  const pinDir = join(BPFFS, uniqueName('mtlspin', 40));
  const linkDir = join(pinDir, 'links');

  beforeAll(async () => {
    root = await createCgroup('mtlspin');
    wl = await createCgroup('wl', { parent: root.path });
  });
  afterAll(async () => {
    rmSync(pinDir, { recursive: true, force: true }); // unpinning the links detaches them
    await wl?.close();
    await root?.close();
  });

  const snap = (): MtlsSnapshot => ({
    dataplane: { outbound: { ipv4: '127.0.0.50', port: 15001 }, inboundSource: { ipv4: '10.0.0.3' } },
    enrolled: [{ cgroup: wl.path, mode: 'STRICT' }],
    destinations: ['10.1.0.7'],
  });

  it('the second load adopts the maps and the pinned links as they are', () => {
    let first: ReturnType<MtlsDatapath['attachPinned']>;
    {
      using dp = MtlsDatapath.load({ pinDir });
      first = dp.attachPinned(root.path, linkDir);
      expect(dp.apply(snap()).written).toBeGreaterThan(0);
    }
    expect(first.map((a) => a.outcome)).toEqual(Array(8).fill('attached')); // connect, getpeername, bind (4 and 6 each), sockops, ingress
    using dp = MtlsDatapath.load({ pinDir });
    expect(dp.apply(snap())).toEqual({ written: 0, deleted: 0 });
    const second = dp.attachPinned(root.path, linkDir);
    expect(Object.fromEntries(second.map((a) => [a.program, a.outcome]))).toEqual(Object.fromEntries(first.map((a) => [a.program, 'adopted'])));
  });
});
