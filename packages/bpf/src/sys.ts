/** System facilities around BPF: bpffs, the cgroup v2 mount, cgroup ids, socket cookies, interface indexes, and
 *  the file lock a process that owns pins holds. */
import { readdirSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';

import { native } from './native.js';

/** The default bpffs mount point. */
export const BPFFS = '/sys/fs/bpf';

/** Mounts bpffs at `path` unless one is mounted there already. */
export function ensureBpffs(path: string = BPFFS): void {
  if (!native.isBpffs(path)) native.mountBpffs(path);
}

export function isBpffs(path: string): boolean {
  return native.isBpffs(path);
}

/**
 * Mount point of the cgroup v2 hierarchy, where cgroup programs attach: /sys/fs/cgroup on a unified host,
 * …/unified on a hybrid one. Read from `mountsFile` (default /proc/mounts), the kernel's octal escapes undone.
 */
export function cgroup2Mount(mountsFile = '/proc/mounts'): string {
  for (const line of readFileSync(mountsFile, 'utf8').split('\n')) {
    const [, target, type] = line.split(' ');
    if (type === 'cgroup2' && target) return target.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  }
  throw new Error(`no cgroup2 filesystem is mounted (see ${mountsFile}): cgroup programs need cgroup v2`);
}

/** Most directories cgroupOfProcess() looks through before it gives up (a node has a few thousand). */
const CGROUP_SEARCH_LIMIT = 100_000;

/**
 * The cgroup v2 directory (below `mount`) that process `pid` runs in; undefined when the process is gone or the
 * directory cannot be found. /proc/<pid>/cgroup names it relative to the reader's cgroup namespace: outside a
 * container that is the mount's root, but a container runtime gives each container a namespace of its own (a
 * DaemonSet pod's process reads "0::/" for its own cgroup, a directory deep under kubepods). So the named path
 * is taken only when that directory's cgroup.procs lists the process; otherwise the directory is searched for,
 * breadth first, among those whose path ends in the name (under a namespace, the name is a suffix of the real path;
 * a process outside the namespace's root reads as "/../<rest>", and <rest> is the suffix).
 * `hint`, a directory found before, is taken first when it still lists the process (no search).
 */
export function cgroupOfProcess(pid: number, mount: string = cgroup2Mount(), hint?: string): string | undefined {
  let rel: string | undefined;
  try {
    rel = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'))?.slice(3);
  } catch {
    return undefined;
  }
  if (rel === undefined) return undefined;
  rel = rel.replace(/ \(deleted\)$/, '');
  const lists = (dir: string) => {
    try {
      return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').includes(String(pid));
    } catch {
      return false;
    }
  };
  if (hint !== undefined && hint.startsWith(mount) && lists(hint)) return hint;
  // A process outside the reader's namespace root reads as "/../x": "/x" is then what its path ends in.
  const up = /^(\/\.\.)+(?=\/|$)/.exec(rel)?.[0] ?? '';
  if (up === '') {
    const named = join(mount, rel);
    if (lists(named)) return named;
  }
  const tail = rel.slice(up.length);
  const suffix = tail === '/' || tail === '' ? '' : tail.replace(/\/$/, '');
  const queue = [mount];
  for (let i = 0; i < queue.length && i < CGROUP_SEARCH_LIMIT; i++) {
    const dir = queue[i]!;
    if (dir.endsWith(suffix) && lists(dir)) return dir;
    try {
      for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) queue.push(join(dir, e.name));
    } catch {
      /* removed meanwhile */
    }
  }
  return undefined;
}

/** The id BPF programs see for a cgroup v2 directory (bpf_get_current_cgroup_id, bpf_skb_cgroup_id). */
export function cgroupId(path: string): bigint {
  if (typeof path !== 'string') throw new TypeError('cgroup path must be a string');
  return native.cgroupId(path);
}

/** The subdirectories of `dir` with their inode numbers, read from the directory alone (getdents): no stat() of
 *  each. On cgroup v2 a directory's inode number is its cgroup id on 64-bit kernels since 5.5 (check one with
 *  cgroupId before relying on that). */
export function subdirInodes(dir: string): Map<string, bigint> {
  if (typeof dir !== 'string') throw new TypeError('directory path must be a string');
  return new Map(native.dirInodes(dir));
}

/**
 * Makes each directory with its missing parents (mkdir -p), one after the other on one thread of libuv's pool:
 * the directories it made, parents before children. For many directories at once (a config's workload cgroups,
 * which the kernel makes one at a time): the event loop pays for one call, not one request per directory. The
 * first directory that cannot be made rejects the promise (BpfError, op "mkdir", naming it); those made before
 * it stay.
 */
export function makeDirs(paths: readonly string[]): Promise<string[]> {
  if (!Array.isArray(paths) || paths.some((p) => typeof p !== 'string' || p === '')) throw new TypeError('paths must be an array of non-empty strings');
  return native.makeDirs([...paths]);
}

/**
 * Resolves once every BPF program run that began before the call has ended (cgroup, tc and socket programs; not
 * sleepable ones): an RCU grace period. What a program may still hold from a map (an element it looked up, an
 * entry pointing at another map's elements) can be deleted after it. The kernel waits so after an update of a
 * map-in-map element (synchronize_rcu; 4.17+); this makes and drops a one-element one, on a thread of the pool.
 * Takes a few milliseconds, more on a loaded machine; concurrent calls wait in parallel.
 */
export function waitForPrograms(): Promise<void> {
  return native.waitForPrograms();
}

/** waitForPrograms(), blocking the calling thread for the grace period. */
export function waitForProgramsSync(): void {
  native.waitForProgramsSync();
}

/** The socket's fd, for a node:net Socket or a number. */
export function socketFd(socket: Socket | number): number {
  if (typeof socket === 'number') return socket;
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new TypeError('socket has no file descriptor (not connected, or not a TCP/IPC socket)');
  return fd;
}

/** The cookie BPF programs see for this socket (bpf_get_socket_cookie); also what sockmap lookups return. */
export function socketCookie(socket: Socket | number): bigint {
  return native.socketCookie(socketFd(socket));
}

/** An interface's index, in the current or the given network namespace (e.g. /run/netns/pod1). */
export function ifIndex(name: string, netns?: string): number {
  if (typeof name !== 'string') throw new TypeError('interface name must be a string');
  return native.ifNameToIndex(name, netns);
}

/** How many native handles are open in this process (for leak checks). */
export function liveHandles(): number {
  return native.liveHandles();
}

/**
 * Takes an exclusive flock(2) on an open file without waiting: true when taken, false when another open file
 * description holds it. The kernel drops the lock when the file's last fd closes, also when the process dies
 * (kill -9 included): a lock for "one process owns these pins" that needs no clean-up.
 */
export function tryLockExclusive(fd: number): boolean {
  if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`fd must be a non-negative integer, got ${fd}`);
  return native.tryLockExclusive(fd);
}

/**
 * A listening TCP socket's fd (SO_REUSEADDR, close-on-exec), made to be handed to a child process
 * (`spawn(…, { stdio: [..., fd] })`) and kept open here: while no child accepts, connects wait in its queue.
 */
export function listenTcp(ip: string, port: number, backlog = 1024): number {
  if (typeof ip !== 'string') throw new TypeError('ip must be a string');
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`port must be 0-65535, got ${port}`);
  return native.listenTcp(ip, port, backlog);
}

/** Where a listening TCP socket is bound; undefined when `fd` is not one. */
export function listeningAddress(fd: number): { address: string; port: number } | undefined {
  if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`fd must be a non-negative integer, got ${fd}`);
  return native.socketListening(fd) ?? undefined;
}

/** A duplicate of fd `fd` of process `pid` in this process (pidfd_getfd; needs ptrace rights over `pid`). */
export function fdOfProcess(pid: number, fd: number): number {
  if (!Number.isInteger(pid) || pid <= 0) throw new TypeError(`pid must be a positive integer, got ${pid}`);
  if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`fd must be a non-negative integer, got ${fd}`);
  return native.pidfdGetfd(pid, fd);
}

/** Closes an fd these functions returned. */
export function closeFd(fd: number): void {
  native.closeFd(fd);
}
