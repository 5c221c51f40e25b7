import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, expect, it } from 'vitest';
import { createNetns, describePrivileged, pidAlive, vethPair, waitForLine, type Netns } from '../../src/index.js';

// Echo server: prints "listening" once bound, answers each connection with the peer's address.
const SERVER = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
net.createServer((s) => s.end('pong from ' + s.remoteAddress + '\\n')).listen(Number(port), host, () => console.log('listening'));
`;
const CLIENT = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port), timeout: 5000 });
s.on('timeout', () => { console.error('timeout'); process.exit(2); });
s.pipe(process.stdout);
`;

function netnsList(): string {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
}

const made: string[] = [];

async function netns(prefix: string): Promise<Netns> {
  const ns = await createNetns(prefix);
  made.push(ns.name);
  return ns;
}

describePrivileged('network namespaces', () => {
  // Checked after every test here, failing ones included: nothing they made may be left.
  afterAll(() => {
    const list = netnsList();
    for (const name of made) expect(list).not.toMatch(new RegExp(`^${name}\\b`, 'm'));
  });

  it('connects two namespaces over a veth pair, IPv4 and IPv6', async () => {
    await using a = await netns('tka');
    await using b = await netns('tkb');
    await using veth = await vethPair(a, b, { addrA: ['198.18.0.1', 'fd00:18::1'], addrB: ['198.18.0.2/24', 'fd00:18::2'] });
    expect(veth.nameA.length).toBeLessThanOrEqual(15);
    expect(veth.addrsB).toEqual(['198.18.0.2', 'fd00:18::2']);
    expect(existsSync(a.path)).toBe(true);

    const server4 = b.spawn(process.execPath, ['-e', SERVER, '198.18.0.2', '8080']);
    const server6 = b.spawn(process.execPath, ['-e', SERVER, 'fd00:18::2', '8080']);
    await waitForLine(server4, /listening/, 10_000);
    await waitForLine(server6, /listening/, 10_000);
    await b.waitForListen(8080, 5000);

    const v4 = await a.execChecked(process.execPath, ['-e', CLIENT, '198.18.0.2', '8080'], { timeoutMs: 10_000 });
    expect(v4.stdout).toBe('pong from 198.18.0.1\n');
    const v6 = await a.execChecked(process.execPath, ['-e', CLIENT, 'fd00:18::2', '8080'], { timeoutMs: 10_000 });
    expect(v6.stdout).toBe('pong from fd00:18::1\n');
  });

  it('gives a namespace loopback and no default route', async () => {
    await using ns = await netns('tkr');
    expect((await ns.execChecked('ip', ['route', 'show', 'default'])).stdout).toBe('');
    expect((await ns.execChecked('ip', ['-6', 'route', 'show', 'default'])).stdout).toBe('');
    expect((await ns.execChecked('ip', ['-br', 'link'])).stdout).toMatch(/^lo\s+UNKNOWN/);
    await expect(ns.waitForListen(9, 200)).rejects.toThrow(/nothing listening on tcp port 9 within 200 ms/);
  });

  it('stops every process inside on close, also those it did not start directly', async () => {
    const ns = await netns('tkp');
    const tracked = ns.spawn('sleep', ['60']);
    // The shell backgrounds a sleep and exits: the sleep is left in the namespace, outside any tracked group leader.
    const orphanOut = await ns.execChecked('sh', ['-c', 'setsid sleep 60 >/dev/null 2>&1 & echo $!']);
    const orphan = Number(orphanOut.stdout.trim());
    expect(pidAlive(orphan)).toBe(true);
    await ns.close();
    expect(tracked.signalCode).not.toBeNull();
    expect(pidAlive(orphan)).toBe(false);
    expect(existsSync(ns.path)).toBe(false);
    await ns.close(); // idempotent
    expect(() => ns.spawn('true')).toThrow(TypeError);
    await expect(async () => ns.exec('true')).rejects.toThrow(TypeError);
  });

  it('puts one end on the host when asked and removes it on close', async () => {
    await using ns = await netns('tkh');
    const veth = await vethPair(null, ns, { addrB: '198.18.3.2' });
    expect(execFileSync('ip', ['-br', 'link', 'show', 'dev', veth.nameA], { encoding: 'utf8' })).toContain(veth.nameA);
    expect((await ns.execChecked('ip', ['-br', 'addr', 'show', 'dev', veth.nameB])).stdout).toContain('198.18.3.2/24');
    await veth.close();
    expect(execFileSync('ip', ['-br', 'link'], { encoding: 'utf8' })).not.toContain(veth.nameA);
    await veth.close();
  });

  it('rejects bad addresses before creating anything', async () => {
    await using ns = await netns('tkx');
    await expect(vethPair(ns, null, { addrA: '198.18.0.1/33' })).rejects.toThrow(RangeError);
    await expect(vethPair(ns, null, { addrA: 'nonsense' })).rejects.toThrow(TypeError);
  });
}, { tools: ['ip', 'ss'] });
