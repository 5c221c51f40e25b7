// Done-when 2 of the agent, checked with the kernel's own view (bpftool): 20 restarts in a row (SIGTERM and
// SIGKILL alternately) leave exactly one attachment per hook; a pinned link running another build's program
// is switched in place; `meshctl uninstall` leaves no pin, link or program of the mesh behind.
import { existsSync } from 'node:fs';

import { embedded, Link, ObjectSpec } from '@mesh/bpf';
import { describePrivileged, run, signalChild, waitForExit } from '@mesh/testkit';
import { testprogFile, testprogs } from '@mesh/testkit/testprogs';
import { expect, it } from 'vitest';

import { AGENT_BIN, freePort, meshEnvPerTest, runLoad, splitConfig, startBackends, testNet } from './harness.js';

const NET = testNet();
/** The hooks the mesh attaches to its cgroup root, as bpftool names them. */
const HOOKS = [
  'cgroup_inet4_connect', 'cgroup_inet6_connect', 'cgroup_udp4_sendmsg', 'cgroup_udp6_sendmsg', 'cgroup_udp4_recvmsg',
  'cgroup_udp6_recvmsg', 'cgroup_inet4_getpeername', 'cgroup_inet6_getpeername', 'cgroup_inet_sock_release',
  'cgroup_inet_egress', 'cgroup_inet_ingress', 'cgroup_sock_ops',
].sort();

interface Attached {
  id: number;
  attach_type: string;
  name: string;
}

async function attached(cgroup: string): Promise<Attached[]> {
  const r = await run('bpftool', ['-j', 'cgroup', 'show', cgroup], { timeoutMs: 10_000 });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout || '[]') as Attached[];
}

async function bpftoolIds(kind: 'prog' | 'link'): Promise<Set<number>> {
  const r = await run('bpftool', ['-j', kind, 'show'], { timeoutMs: 10_000, maxBuffer: 64 << 20 });
  expect(r.code, r.stderr).toBe(0);
  return new Set((JSON.parse(r.stdout) as { id: number }[]).map((x) => x.id));
}

describePrivileged('agent attachments across restarts', () => {
  const newEnv = meshEnvPerTest();

  it('20 restarts leave one attachment per hook; uninstall leaves nothing', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [1, 1]));
    let agent = await env.startAgent();
    const firstIds = (await attached(env.cgroupRoot)).map((a) => a.id).sort();
    expect((await attached(env.cgroupRoot)).map((a) => a.attach_type).sort()).toEqual(HOOKS);

    for (let i = 0; i < 20; i++) {
      signalChild(agent.child, i % 2 === 0 ? 'SIGTERM' : 'SIGKILL');
      const code = await waitForExit(agent.child, 10_000);
      if (i % 2 === 0) expect(code).toBe(0);
      // Between agents the datapath keeps running from its pins.
      expect((await attached(env.cgroupRoot)).map((a) => a.attach_type).sort()).toEqual(HOOKS);
      agent = await env.startAgent();
      const now = await attached(env.cgroupRoot);
      expect(now.map((a) => a.attach_type).sort(), `after restart ${i + 1}`).toEqual(HOOKS);
      // The very same programs: adopted, not attached again.
      expect(now.map((a) => a.id).sort()).toEqual(firstIds);
      const ready = agent.logs().find((l) => l.msg === 'datapath ready')!;
      expect(ready.adopted).toBe(HOOKS.length);
    }

    // Traffic still follows the config after all that.
    await startBackends(env);
    const load = await runLoad(env, NET, 100, 1);
    expect(load.failed).toBe(0);
    expect(Object.keys(load.byBody).sort()).toEqual(['a', 'b']);

    // What the kernel has of ours, by id (other suites load programs with the same names meanwhile).
    const status = JSON.parse((await env.meshctl(['status', '--json'])).stdout) as { programs: { linkId: number; programId: number }[] };
    expect(status.programs).toHaveLength(HOOKS.length);
    const ourProgs = status.programs.map((p) => p.programId);
    const ourLinks = status.programs.map((p) => p.linkId);

    // Refused while the agent runs, then done once it stopped.
    const refused = await env.meshctl(['uninstall', '--pin-root', env.pinRoot, '--cgroup-root', env.cgroupRoot]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/stop it first/);
    signalChild(agent.child, 'SIGTERM');
    expect(await waitForExit(agent.child, 10_000)).toBe(0);
    await env.stopWorkloads(); // their cgroups can go only once they are empty
    const r = await env.meshctl(['uninstall', '--pin-root', env.pinRoot, '--cgroup-root', env.cgroupRoot]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/detached 12 links/);
    expect(existsSync(env.pinRoot)).toBe(false);
    expect(existsSync(env.cgroupRoot)).toBe(false);
    // The SVID files the data plane read (keys among them) go with the mesh; the CA's state directory stays.
    expect(existsSync(env.svidDir)).toBe(false);
    expect(r.stdout).toContain(`removed SVID files under ${env.svidDir}`);
    const progs = await bpftoolIds('prog');
    const links = await bpftoolIds('link');
    expect(ourProgs.filter((id) => progs.has(id))).toEqual([]);
    expect(ourLinks.filter((id) => links.has(id))).toEqual([]);
  });

  it('a pinned link running another build is switched in place, keeping its link', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [1, 1]));
    const agent = await env.startAgent();
    signalChild(agent.child, 'SIGTERM');
    await waitForExit(agent.child, 10_000);

    // Another build: a different connect4 program, swapped into the pinned link as an older agent would have left it.
    const pin = `${env.pinRoot}/links/split/${embedded.split.programs.split_connect4}`;
    const before = (await attached(env.cgroupRoot)).find((a) => a.attach_type === 'cgroup_inet4_connect')!;
    let linkId: number | undefined;
    {
      using other = ObjectSpec.file(testprogFile(testprogs.sock_redirect.name)).load();
      using link = Link.openPinned(pin);
      linkId = link.info().id;
      link.update(other.program(testprogs.sock_redirect.programs.redirect_connect4));
      expect((await attached(env.cgroupRoot)).find((a) => a.attach_type === 'cgroup_inet4_connect')!.name).toBe('redirect_connect4');

      const again = await env.startAgent();
      const ready = again.logs().find((l) => l.msg === 'datapath ready')!;
      expect(ready.replaced).toBe(1);
      expect(ready.adopted).toBe(HOOKS.length - 1);
    }
    const now = await attached(env.cgroupRoot);
    expect(now.map((a) => a.attach_type).sort()).toEqual(HOOKS);
    const connect4 = now.find((a) => a.attach_type === 'cgroup_inet4_connect')!;
    expect(connect4.name).toBe('split_connect4');
    expect(connect4.id).not.toBe(before.id); // a program of this build…
    const status = JSON.parse((await env.meshctl(['status', '--json'])).stdout) as { programs: { program: string; linkId: number; programId: number }[] };
    const entry = status.programs.find((p) => p.program === 'split_connect4')!;
    expect(entry.programId).toBe(connect4.id);
    // …in the link that was pinned before (updated in place, not detached and attached again).
    expect(entry.linkId).toBe(linkId);
  });

  it('a table of another capacity is made anew with its group, and only those: the other maps keep their pins', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [1, 1]));
    let agent = await env.startAgent(['--max-services', '1000']);
    signalChild(agent.child, 'SIGTERM');
    await waitForExit(agent.child, 10_000);
    const mapId = async (path: string) => (JSON.parse((await run('bpftool', ['-j', 'map', 'show', 'pinned', path], { timeoutMs: 10_000 })).stdout) as { id: number; max_entries: number });
    const pins = ['split/split_services', 'split/split_endpoints', 'split/split_orig', 'split/split_revnat', 'split/split_counters', 'metrics/http_requests'];
    const before = Object.fromEntries(await Promise.all(pins.map(async (p) => [p, await mapId(`${env.pinRoot}/maps/${p}`)] as const)));
    expect(before['split/split_services']!.max_entries).toBe(1000);

    // Sized from the config now: split_services (and split_endpoints, whose slots its entries number) anew.
    agent = await env.startAgent();
    const warn = agent.logs().find((l) => String(l.msg).startsWith('tables of another capacity made anew'));
    expect(warn?.family).toBe('split');
    expect(warn?.maps).toEqual(['split_services', 'split_endpoints']);
    const after = Object.fromEntries(await Promise.all(pins.map(async (p) => [p, await mapId(`${env.pinRoot}/maps/${p}`)] as const)));
    expect(after['split/split_services']!.max_entries).toBe(1024);
    const kept = pins.filter((p) => after[p]!.id === before[p]!.id);
    expect(kept).toEqual(['split/split_orig', 'split/split_revnat', 'split/split_counters', 'metrics/http_requests']);
    expect(agent.logs().filter((l) => String(l.msg).startsWith('pinned maps do not fit'))).toHaveLength(0);
  });

  it('a second agent on the same pins is refused before it touches the kernel', async () => {
    const env = await newEnv();
    env.writeConfig(splitConfig(NET, [1, 1]));
    await env.startAgent();
    const ids = (await attached(env.cgroupRoot)).map((a) => a.id).sort();
    const other = await env.procs.run(AGENT_BIN, env.agentArgs(['--listen', `127.0.0.1:${await freePort()}`]), { timeoutMs: 20_000 });
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/another mesh-agent \(pid \d+\) owns \/sys\/fs\/bpf\/e2e/);
    expect((await attached(env.cgroupRoot)).map((a) => a.id).sort()).toEqual(ids);
    expect((await env.meshctl(['status'])).code).toBe(0);
  });
});
