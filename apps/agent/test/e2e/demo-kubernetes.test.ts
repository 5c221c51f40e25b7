// `npm run demo:kubernetes` minus set-up and build: examples/kubernetes/demo.mjs runs to completion as a user
// runs it (the test API server, kubectl apply and patch, pods as network namespaces and kubelet cgroups, the
// agent in Kubernetes mode), the split moves with the patched HTTPRoute, and nothing is left behind. Its own
// pin root, cgroup root and port, so it cannot collide with a demo someone runs by hand.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { cgroup2Mount, describePrivileged, run, uniqueName } from '@mesh/testkit';
import { afterAll, expect, it } from 'vitest';

import { uninstall } from '../../src/datapath.js';
import { EXAMPLES, freePort } from './harness.js';

const DEMO = resolve(EXAMPLES, '../kubernetes/demo.mjs');
const name = uniqueName('kdemo-e2e', 40);
const pinRoot = `/sys/fs/bpf/${name}`;
const cgroupRoot = join(cgroup2Mount(), name);

describePrivileged('examples/kubernetes/demo.mjs (npm run demo:kubernetes)', () => {
  afterAll(() => {
    // Only after a failure is there anything left (the demo removes what it made).
    uninstall(pinRoot, cgroupRoot);
  });

  it('applies the manifests with kubectl, shows the split move when the HTTPRoute is patched, and cleans up', async () => {
    const listen = `127.0.0.1:${await freePort()}`;
    const r = await run(process.execPath, [DEMO], {
      env: { ...process.env, DEMO_SECONDS: '8', DEMO_RATE: '40', DEMO_LISTEN: listen, DEMO_PIN_ROOT: pinRoot, DEMO_CGROUP_ROOT: cgroupRoot },
      timeoutMs: 240_000,
    });
    const out = r.stdout + r.stderr;
    expect(r.code, out).toBe(0);
    expect(out).toMatch(/httproute\.gateway\.networking\.k8s\.io\/reviews created/);
    expect(out).toMatch(/httproute\.gateway\.networking\.k8s\.io\/reviews patched/);
    const before = Number(/before the patch \(90\/10\): v2 ([\d.]+)%/.exec(out)?.[1]);
    const after = Number(/after the patch {2}\(50\/50\): v2 ([\d.]+)%/.exec(out)?.[1]);
    expect(before).toBeLessThan(25);
    expect(after).toBeGreaterThan(30);
    expect(out).toMatch(/failed requests: 0\n/);
    expect(out).toMatch(/nothing left behind/);
    expect(existsSync(pinRoot)).toBe(false);
    expect(existsSync(cgroupRoot)).toBe(false);
  }, 300_000);
});
