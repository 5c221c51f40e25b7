// meshctl ca: the built-in CA's root rotation steps on a state directory, in order and out of order, without an agent.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

import { BuiltinCa } from '@mesh/mtls';
import { afterEach, describe, expect, it } from 'vitest';

const MESHCTL = resolve(import.meta.dirname, '../../bin/meshctl.mjs');
const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

async function meshctl(args: string[]) {
  // A control socket that does not exist: no agent answers, so the steps are not refused for a running one.
  try {
    const r = await promisify(execFile)(process.execPath, [MESHCTL, '--api-socket', join(tmpdir(), 'meshctl-ca-no-agent.sock'), ...args], { timeout: 10_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('meshctl ca', () => {
  it('runs the rotation steps in order and refuses them out of order', async () => {
    const state = mkdtempSync(join(tmpdir(), 'meshctl-ca-'));
    dirs.push(state);
    const flags = ['--state-dir', state, '--trust-domain', 'mesh.test'];
    const none = await meshctl(['ca', 'status', ...flags]);
    expect(none.code).toBe(5);
    expect(none.stderr).toMatch(/no built-in CA in .*\/ca \(the agent creates it at its first start\)/);
    expect(readdirSync(state)).toEqual([]); // status creates nothing

    const ca = await BuiltinCa.open({ stateDir: state, trustDomain: 'mesh.test' });
    const oldSerial = ca.root.serialNumber;
    const status = await meshctl(['ca', 'status', ...flags]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`signing root .*serial ${oldSerial}`));
    expect(status.stdout).toMatch(/rotation\s+none/);

    const early = await meshctl(['ca', 'switch-root', ...flags]);
    expect(early.code).toBe(1);
    expect(early.stderr).toMatch(/no new root in the bundle; add one first/);

    const add = await meshctl(['ca', 'add-root', ...flags]);
    expect(add.code).toBe(0);
    expect(add.stdout).toMatch(/rotation\s+new-root-in-bundle/);
    expect(add.stdout.match(/serial [0-9a-f]+\)/g)!.length).toBeGreaterThanOrEqual(3); // the added root, then the bundle's two
    expect((await meshctl(['ca', 'add-root', ...flags])).stderr).toMatch(/a new root is already in the bundle/);

    const sw = await meshctl(['ca', 'switch-root', ...flags]);
    expect(sw.code).toBe(0);
    expect(sw.stdout).toMatch(/rotation\s+issuing-from-new-root/);
    expect(sw.stdout).not.toMatch(new RegExp(`signing root .*serial ${oldSerial}`));

    // The old root signed a leaf valid for an hour: its removal is refused until then.
    await (await BuiltinCa.open({ stateDir: state, trustDomain: 'mesh.test' })).issue({ trustDomain: 'mesh.test', path: '/ns/a/sa/b' }, { ttlMs: 3_600_000 });
    // (that leaf came from the new root; the old root's record is what counts, and it signed nothing: removable)
    const rm = await meshctl(['ca', 'remove-old-root', ...flags]);
    expect(rm.code).toBe(0);
    expect(rm.stdout).toMatch(new RegExp(`removed the old root .*serial ${oldSerial}`));
    expect(rm.stdout).toMatch(/rotation\s+none/);
  }, 60_000);

  it('refuses to remove an old root whose leaves are still valid, and bad arguments', async () => {
    const state = mkdtempSync(join(tmpdir(), 'meshctl-ca-'));
    dirs.push(state);
    const flags = ['--state-dir', state, '--trust-domain', 'mesh.test'];
    const ca = await BuiltinCa.open({ stateDir: state, trustDomain: 'mesh.test' });
    const leaf = await ca.issue({ trustDomain: 'mesh.test', path: '/ns/a/sa/b' }, { ttlMs: 3_600_000 });
    expect((await meshctl(['ca', 'add-root', ...flags])).code).toBe(0);
    expect((await meshctl(['ca', 'switch-root', ...flags])).code).toBe(0);
    const rm = await meshctl(['ca', 'remove-old-root', ...flags]);
    expect(rm.code).toBe(1);
    expect(rm.stderr).toContain(`the old root signed leaves valid until ${leaf.notAfter.toISOString()}; remove it after that`);
    expect((await meshctl(['ca', 'rotate', ...flags])).code).toBe(2);
    expect((await meshctl(['ca', 'status', '--state-dir', state, '--trust-domain', 'Bad'])).stderr).toMatch(/--trust-domain: the trust domain must be lowercase/);
    expect((await meshctl(['ca', 'status', '--state-dir', state, '--trust-domain', 'other.test'])).stderr).toMatch(/root is for trust domain mesh\.test/);
  }, 60_000);
});
