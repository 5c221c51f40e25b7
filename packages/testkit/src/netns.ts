import { execFileSync } from 'node:child_process';
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { atExit } from './exit.js';
import { ipFamily } from './ip.js';
import { uniqueName } from './names.js';
import { ProcessTracker, run, runChecked, type ExecResult, type RunOptions } from './proc.js';
import { ensureTool } from './tools.js';

const NETNS_DIR = '/run/netns';
// Netns names are file names under /run/netns; keep them short enough to read in `ip netns list`.
const NETNS_NAME_MAX = 32;

/** A network namespace made for a test: loopback up, no other interface, no default route. */
export interface Netns extends AsyncDisposable {
  readonly name: string;
  /** Bind mount that pins the namespace, e.g. for setns(2) or `nsenter --net=`. */
  readonly path: string;
  readonly closed: boolean;
  /** Run a command inside the namespace to completion; a non-zero exit resolves. */
  exec(cmd: string, args?: readonly string[], opts?: RunOptions): Promise<ExecResult>;
  /** exec(), but a non-zero exit rejects with a CommandError. */
  execChecked(cmd: string, args?: readonly string[], opts?: RunOptions): Promise<ExecResult>;
  /** Start a long-running command inside the namespace; close() stops it. */
  spawn(cmd: string, args?: readonly string[], opts?: SpawnOptions): ChildProcess;
  /** Poll `ss` inside the namespace until something listens on `port`; sends no traffic. */
  waitForListen(port: number, timeoutMs: number, proto?: 'tcp' | 'udp'): Promise<void>;
  /** Stop the processes it started and any other left inside, then delete the namespace. Safe to call twice. */
  close(): Promise<void>;
}

/** argv that runs `cmd args` inside the named namespace, for composing with other wrappers. */
export function inNetns(ns: Netns | string, cmd: string, args: readonly string[] = []): [string, string[]] {
  return [ensureTool('ip'), ['netns', 'exec', typeof ns === 'string' ? ns : ns.name, cmd, ...args]];
}

/** A new namespace named `prefix` + pid + counter, with `lo` up. */
export async function createNetns(prefix = 'tk'): Promise<Netns> {
  const ip = ensureTool('ip');
  const name = uniqueName(prefix, NETNS_NAME_MAX);
  const path = `${NETNS_DIR}/${name}`;
  await runChecked(ip, ['netns', 'add', name]);
  const tracker = new ProcessTracker(`netns ${name}`);
  const unregister = atExit(() => {
    tracker.killAllSync();
    try {
      killLeftoversSync(ip, name);
    } finally {
      execFileSync(ip, ['netns', 'delete', name], { stdio: 'ignore' });
    }
  });
  let closing: Promise<void> | undefined;

  const close = (): Promise<void> => {
    closing ??= (async () => {
      await tracker.close();
      if (!existsSync(path)) return unregister(); // someone ran `ip netns delete` already
      // Processes forked by ours outside their process group keep the namespace alive after delete.
      for (let attempt = 0; attempt < 20; attempt++) {
        const pids = await leftoverPids(ip, name);
        if (pids.length === 0) break;
        for (const pid of pids) killQuietly(pid, attempt === 0 ? 'SIGTERM' : 'SIGKILL');
        await sleep(50);
      }
      await runChecked(ip, ['netns', 'delete', name]);
      unregister();
    })();
    return closing;
  };
  const assertOpen = (op: string): void => {
    if (closing) throw new TypeError(`netns ${name}: ${op} after close`);
  };

  const ns: Netns = {
    name,
    path,
    get closed() {
      return closing !== undefined;
    },
    exec(cmd, args = [], opts = {}) {
      assertOpen('exec');
      return tracker.run(ip, ['netns', 'exec', name, cmd, ...args], opts);
    },
    execChecked(cmd, args = [], opts = {}) {
      assertOpen('exec');
      return tracker.runChecked(ip, ['netns', 'exec', name, cmd, ...args], opts);
    },
    spawn(cmd, args = [], opts = {}) {
      assertOpen('spawn');
      return tracker.spawn(ip, ['netns', 'exec', name, cmd, ...args], opts);
    },
    async waitForListen(port, timeoutMs, proto = 'tcp') {
      assertOpen('waitForListen');
      const ss = ensureTool('ss');
      const deadline = Date.now() + timeoutMs;
      do {
        const r = await tracker.runChecked(ip, ['netns', 'exec', name, ss, '-Hln', proto === 'tcp' ? '-t' : '-u', `sport = :${port}`]);
        if (r.stdout.trim() !== '') return;
        await sleep(50);
      } while (Date.now() < deadline);
      throw new Error(`netns ${name}: nothing listening on ${proto} port ${port} within ${timeoutMs} ms`);
    },
    close,
    [Symbol.asyncDispose]: close,
  };
  try {
    await runChecked(ip, ['-n', name, 'link', 'set', 'lo', 'up']);
  } catch (e) {
    await close();
    throw e;
  }
  return ns;
}

export interface VethOptions {
  /** Addresses for side A: IPv4 defaults to /24, IPv6 to /64 and gets `nodad` so it is usable at once. */
  addrA?: string | readonly string[];
  addrB?: string | readonly string[];
  /** Interface name prefix; the generated names must fit in 15 characters. Default 'vt'. */
  prefix?: string;
  mtu?: number;
}

export interface VethPair extends AsyncDisposable {
  /** Interface in `nsA` (or the host when it was null). */
  readonly nameA: string;
  readonly nameB: string;
  readonly nsA: Netns | null;
  readonly nsB: Netns | null;
  /** Addresses as assigned, without prefix length. */
  readonly addrsA: readonly string[];
  readonly addrsB: readonly string[];
  /** Delete the pair (deleting one end removes both). Safe to call twice, and after its namespace is gone. */
  close(): Promise<void>;
}

/**
 * A veth pair between two namespaces, `null` meaning the host's. Addresses are assigned, both ends and `lo`
 * in each namespace are set up; no route beyond the connected subnets is added.
 */
export async function vethPair(nsA: Netns | null, nsB: Netns | null, opts: VethOptions = {}): Promise<VethPair> {
  const ip = ensureTool('ip');
  const base = uniqueName(opts.prefix ?? 'vt', 14);
  const nameA = `${base}a`;
  const nameB = `${base}b`;
  const addrsA = parseAddrs(opts.addrA, 'addrA');
  const addrsB = parseAddrs(opts.addrB, 'addrB');
  const where = (ns: Netns | null): string[] => (ns === null ? [] : ['netns', ns.name]);
  const inNs = (ns: Netns | null): string[] => (ns === null ? [] : ['-n', ns.name]);

  // Creating each end directly in its namespace means a host interface name is never taken, even briefly.
  await runChecked(ip, ['link', 'add', nameA, ...where(nsA), 'type', 'veth', 'peer', 'name', nameB, ...where(nsB)]);
  // Ends inside namespaces go with them; a host end would outlive the test without this.
  const hostEnd = nsA === null ? nameA : nsB === null ? nameB : undefined;
  const unregister = hostEnd === undefined
    ? () => {}
    : atExit(() => execFileSync(ip, ['link', 'del', hostEnd], { stdio: 'ignore' }));
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= (async () => {
      // Deleting a namespace deleted its end, and with it the peer.
      if (!nsA?.closed && !nsB?.closed) {
        const r = await run(ip, [...inNs(nsA), 'link', 'del', nameA]);
        if (r.code !== 0 && !/Cannot find device/.test(r.stderr)) {
          throw new Error(`vethPair: ip link del ${nameA} failed: ${r.stderr.trim()}`);
        }
      }
      unregister();
    })();
    return closed;
  };
  try {
    for (const [ns, dev, addrs] of [[nsA, nameA, addrsA], [nsB, nameB, addrsB]] as const) {
      for (const { cidr, family } of addrs) {
        await runChecked(ip, [...inNs(ns), 'addr', 'add', cidr, 'dev', dev, ...(family === 6 ? ['nodad'] : [])]);
      }
      if (opts.mtu !== undefined) await runChecked(ip, [...inNs(ns), 'link', 'set', dev, 'mtu', String(opts.mtu)]);
      await runChecked(ip, [...inNs(ns), 'link', 'set', dev, 'up']);
      if (ns !== null) await runChecked(ip, [...inNs(ns), 'link', 'set', 'lo', 'up']);
    }
  } catch (e) {
    await close().catch(() => {});
    throw e;
  }
  return {
    nameA,
    nameB,
    nsA,
    nsB,
    addrsA: addrsA.map((a) => a.addr),
    addrsB: addrsB.map((a) => a.addr),
    close,
    [Symbol.asyncDispose]: close,
  };
}

function parseAddrs(value: string | readonly string[] | undefined, field: string): { addr: string; cidr: string; family: 4 | 6 }[] {
  const list = value === undefined ? [] : typeof value === 'string' ? [value] : value;
  return list.map((entry) => {
    const [addr = '', len] = entry.split('/');
    let family: 4 | 6;
    try {
      family = ipFamily(addr);
    } catch {
      throw new TypeError(`vethPair: ${field} must be IP addresses, optionally with /prefix, got ${JSON.stringify(entry)}`);
    }
    const max = family === 4 ? 32 : 128;
    const prefix = len === undefined ? (family === 4 ? 24 : 64) : Number(len);
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > max || (len !== undefined && !/^\d+$/.test(len))) {
      throw new RangeError(`vethPair: ${field} prefix length must be 0..${max}, got ${JSON.stringify(entry)}`);
    }
    return { addr, cidr: `${addr}/${prefix}`, family };
  });
}

async function leftoverPids(ip: string, name: string): Promise<number[]> {
  const r = await runChecked(ip, ['netns', 'pids', name]);
  return parsePids(r.stdout);
}

function killLeftoversSync(ip: string, name: string): void {
  const out = execFileSync(ip, ['netns', 'pids', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  for (const pid of parsePids(out)) killQuietly(pid, 'SIGKILL');
}

function parsePids(text: string): number[] {
  return text.split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number).filter((pid) => pid !== process.pid);
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}
