// A second kernel (Debian's 6.1, in qemu through ../shared/tools/guest-kernel): every embedded program passes
// that kernel's verifier, the probes report what 6.1 lacks (TCX, sockmap links) and that the agent's programs
// lack nothing, those attach to a cgroup there, and attachment falls back to clsact and BPF_PROG_ATTACH.
import { describePrivileged, run } from '@mesh/testkit';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const repo = fileURLToPath(new URL('../../../../', import.meta.url));
const guest = fileURLToPath(new URL('../../../../../shared/tools/guest-kernel', import.meta.url));

describePrivileged('on a second kernel (6.1 guest)', () => {
  it('loads every object, probes 6.1 features and attaches through the fallbacks', async () => {
    expect(existsSync(guest), `${guest} (DEVELOPERS.md, Tests: the qemu route to a second kernel)`).toBe(true);
    // The result comes back through a file in the shared repository directory (the guest's only writable share).
    const dir = mkdtempSync(join(repo, 'build', 'guest-'));
    const result = join(dir, 'result.json');
    try {
      // Module autoloading does not reach the guest's modules: load the tc ones by hand.
      const r = await run(
        guest,
        ['--', '/bin/sh', '-c', `modprobe sch_ingress; modprobe cls_bpf; exec node packages/bpf/test/fixtures/second-kernel.mjs ${result}`],
        { cwd: repo, timeoutMs: 240_000 },
      );
      expect(existsSync(result), `${r.stdout}\n${r.stderr}`).toBe(true);
      check(JSON.parse(readFileSync(result, 'utf8')));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});

function check(out: Record<string, unknown>): void {
  expect(out.kernel).toMatch(/^6\.1\./);
  expect(out.attach).toEqual({ tcx: false, sockmapLink: false, cgroupLink: true, stats: true });
  expect(out.loaded).toEqual({ skb_guard: 2, skb_noop: 2, skb_sk_state: 3, sock_redirect: 8, sock_track: 3, http: 3, mtls: 8, split: 9, split_hold: 1, tc_filter: 1 }); // mtls: capture, STRICT and the bind guard (bind4/6)
  expect(out.retval).toBe(0);
  expect(out.tcLinkKind).toBe('tc');
  expect(out.sockmapLinkKind).toBe('attach');
  // The agent's programs: 6.1 has every feature they use (bpf_set_retval since 5.18), and each attaches.
  expect(out.missing).toEqual({ split: [], 'split (refuse_eperm)': [], http: [] });
  expect(out.setRetval).toBe(true);
  expect(out.agentAttached).toEqual({ split: 9, 'split (refuse_eperm)': 9, http: 3 });
}
