// A local user (`nobody`) against the agent and meshctl. The control API is a unix socket only root (or the
// group given to --api-group) can reach; the loopback port carries only /metrics, /healthz and /readyz. Each
// attack is refused with a clear message and nothing is written: a squatted metrics port does not stop the
// agent (no restart loop) or its control socket; nobody cannot make the control socket, and a socket nobody
// made is refused by meshctl before it sends anything; `meshctl run` (root) never writes through a symbolic
// link nor outside the mesh's cgroup2 filesystem.
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { describePrivileged, waitForLine } from '@mesh/testkit';
import { afterEach, expect, it } from 'vitest';

import { httpGet, MESHCTL_BIN, meshEnvPerTest, splitConfig, testNet } from './harness.js';

const NET = testNet();
const NOBODY = ['--reuid', 'nobody', '--regid', 'nogroup', '--clear-groups'];
const uid = (name: string) => Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());

const EVIL = `---
apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: evil }
spec: { addresses: [${NET}.0.9] }
`;

/** Scratch directories and mounts of one test, removed after it (mounts before the env's cgroups go). */
const scratch: { dirs: string[]; mounts: string[] } = { dirs: [], mounts: [] };
const scratchDir = (prefix: string) => {
  const d = mkdtempSync(join(tmpdir(), prefix));
  scratch.dirs.push(d);
  return d;
};

describePrivileged('local users against the agent', () => {
  const newEnv = meshEnvPerTest();
  // Registered after the env's: runs before it.
  afterEach(() => {
    for (const m of scratch.mounts.splice(0)) execFileSync('umount', [m]);
    for (const d of scratch.dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('nobody squatting the metrics port: the agent runs on, names the port, its control socket answers; metrics come back when the port is free', async () => {
    const e = await newEnv();
    e.writeConfig(splitConfig(NET, [1, 1]));
    const squat = `require('net').createServer((s) => s.end('HTTP/1.1 200 OK\\r\\ncontent-length: 4\\r\\n\\r\\nfake')).listen(${e.port}, '127.0.0.1', () => console.log('listening'))`;
    const squatter = e.procs.spawn('setpriv', [...NOBODY, process.execPath, '-e', squat], { stdio: ['ignore', 'pipe', 'pipe'] });
    await waitForLine(squatter, /^listening$/, 10_000);

    const agent = await e.startAgent(); // ready: answers /readyz on its socket
    await sleep(500);
    expect(agent.child.exitCode).toBeNull();
    const message = `cannot serve /metrics, /healthz and /readyz on 127.0.0.1:${e.port}: port ${e.port} on 127.0.0.1 is in use by another process`;
    expect(agent.logs().filter((l) => String(l.msg).startsWith(message))).toHaveLength(1);
    const status = await e.meshctl(['status']);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain(`metrics      NOT SERVED: ${message}`);
    expect((await e.meshctl(['services'])).stdout).toMatch(new RegExp(`default/web\\s+${NET.replace('.', '\\.')}\\.1\\.1:8080`));

    // The socket: root's, 0660; nobody cannot connect.
    const st = lstatSync(e.apiSocket);
    expect([st.isSocket(), st.uid, st.gid, st.mode & 0o777]).toEqual([true, 0, 0, 0o660]);
    const denied = await e.procs.run('setpriv', [...NOBODY, process.execPath, MESHCTL_BIN, '--api-socket', e.apiSocket, 'status'], { timeoutMs: 20_000 });
    expect(denied.code).toBe(4);
    expect(denied.stderr).toContain(`cannot connect to the agent at ${e.apiSocket}: permission denied (EACCES)`);

    // The squatter goes: within the agent's 10 s retry, /metrics is the agent's.
    squatter.kill('SIGKILL');
    const deadline = Date.now() + 25_000;
    let r = await httpGet('127.0.0.1', e.port, '/metrics').catch(() => undefined);
    while (!r?.body.includes('mesh_agent_ready') && Date.now() < deadline) {
      await sleep(250);
      r = await httpGet('127.0.0.1', e.port, '/metrics').catch(() => undefined);
    }
    expect(r?.body).toContain('mesh_agent_ready 1');
    expect((await e.meshctl(['status'])).stdout).toContain(`metrics      http://127.0.0.1:${e.port}/metrics`);
    // The control API is not on the TCP address.
    const v1 = await httpGet('127.0.0.1', e.port, '/v1/workloads');
    expect(v1.status).toBe(404);
    expect(v1.body).toContain("the control API is served on the agent's unix socket");
  }, 90_000);

  it('a fake agent: nobody cannot make the control socket, and meshctl refuses a socket nobody made; --api-group lets a group in', async () => {
    const e = await newEnv();
    e.writeConfig(splitConfig(NET, [1, 1]));

    // 1. The socket's directory is root's: nobody cannot bind the agent's path.
    const bind = `require('net').createServer().listen(${JSON.stringify(e.apiSocket)}).on('error', (err) => { console.error(err.code); process.exit(7); })`;
    const squat = await e.procs.run('setpriv', [...NOBODY, process.execPath, '-e', bind], { timeoutMs: 20_000 });
    expect(squat.code).toBe(7);
    expect(squat.stderr.trim()).toBe('EACCES');
    expect(existsSync(e.apiSocket)).toBe(false);

    // 2. A fake agent of nobody's, in a directory of nobody's, answering run with a cgroup whose cgroup.procs is
    //    a link to a file of root's. meshctl (root) refuses the socket before it sends a request.
    const dir = scratchDir('mesh-fake-');
    chownSync(dir, uid('nobody'), 0);
    const target = join(scratchDir('mesh-target-'), 'target');
    writeFileSync(target, 'untouched\n');
    const trap = join(dir, 'cg', 'default', 'web-a');
    mkdirSync(trap, { recursive: true });
    symlinkSync(target, join(trap, 'cgroup.procs'));
    const fakeSocket = join(dir, 'agent.sock');
    const requests = join(dir, 'requests');
    const answer = JSON.stringify({ cgroupRoot: join(dir, 'cg'), workloads: [{ name: 'web-a', namespace: 'default', addresses: [], cgroup: 'default/web-a', cgroupPath: trap }] });
    const fake = `require('http').createServer((q, s) => { require('fs').appendFileSync(${JSON.stringify(requests)}, q.url + '\\n'); s.end(${JSON.stringify(answer)}); }).listen(${JSON.stringify(fakeSocket)}, () => console.log('listening'))`;
    const fakeAgent = e.procs.spawn('setpriv', [...NOBODY, process.execPath, '-e', fake], { stdio: ['ignore', 'pipe', 'pipe'] });
    await waitForLine(fakeAgent, /^listening$/, 10_000);
    const run = await e.procs.run(process.execPath, [MESHCTL_BIN, '--api-socket', fakeSocket, 'run', '--workload', 'web-a', '--', 'true'], { timeoutMs: 20_000 });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`meshctl run: ${fakeSocket} is owned by uid ${uid('nobody')}, not root: refusing to talk to it (the agent's control socket is root's)`);
    expect(existsSync(requests)).toBe(false);
    expect(readFileSync(target, 'utf8')).toBe('untouched\n');
    for (const cmd of ['status', 'services']) {
      const r = await e.procs.run(process.execPath, [MESHCTL_BIN, '--api-socket', fakeSocket, cmd], { timeoutMs: 20_000 });
      expect(r.code, cmd).toBe(1);
      expect(r.stderr).toContain('not root: refusing to talk to it');
    }
    expect(existsSync(requests)).toBe(false);

    // 3. The real agent with --api-group nogroup: nobody (group nogroup) may read it.
    await e.startAgent(['--api-group', 'nogroup']);
    const st = lstatSync(e.apiSocket);
    expect([st.uid, st.gid, st.mode & 0o777]).toEqual([0, 65534, 0o660]);
    const asGroup = await e.procs.run('setpriv', [...NOBODY, process.execPath, MESHCTL_BIN, '--api-socket', e.apiSocket, 'services'], { timeoutMs: 20_000 });
    expect(asGroup.code, asGroup.stderr).toBe(0);
    expect(asGroup.stdout).toContain('default/web');
  }, 90_000);

  it('meshctl run refuses a workload cgroup whose cgroup.procs is a symbolic link, or that is another filesystem', async () => {
    const e = await newEnv();
    e.writeConfig(splitConfig(NET, [1, 1], EVIL));
    await e.startAgent();
    const cg = join(e.cgroupRoot, 'default', 'evil');
    expect(existsSync(join(cg, 'cgroup.procs'))).toBe(true);
    const target = join(scratchDir('mesh-target-'), 'target');
    writeFileSync(target, 'untouched\n');
    chmodSync(target, 0o644);

    // A directory mounted over the workload's cgroup, its cgroup.procs a link to a file of root's.
    const over = scratchDir('mesh-over-');
    symlinkSync(target, join(over, 'cgroup.procs'));
    execFileSync('mount', ['--bind', over, cg]);
    scratch.mounts.push(cg);
    const linked = await e.meshctl(['run', '--workload', 'evil', '--', 'true']);
    expect(linked.code).toBe(1);
    expect(linked.stderr).toBe(`meshctl run: ${cg}/cgroup.procs is a symbolic link: refusing to write through it\n`);
    expect(readFileSync(target, 'utf8')).toBe('untouched\n');

    // The same with a plain file there: not the cgroup2 filesystem.
    rmSync(join(over, 'cgroup.procs'));
    writeFileSync(join(over, 'cgroup.procs'), '');
    const plain = await e.meshctl(['run', '--workload', 'evil', '--', 'true']);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toBe(`meshctl run: ${cg} is not on the mesh's cgroup2 filesystem (something is mounted there): refusing it as a workload's cgroup\n`);
    expect(readFileSync(join(over, 'cgroup.procs'), 'utf8')).toBe('');

    // Unmounted, the workload's own cgroup works.
    execFileSync('umount', [cg]);
    scratch.mounts.splice(scratch.mounts.indexOf(cg), 1);
    const ok = await e.meshctl(['run', '--workload', 'evil', '--', '/bin/sh', '-c', 'cat /proc/self/cgroup']);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(new RegExp(`^0::/${e.name}/default/evil$`, 'm'));
  }, 60_000);
});
