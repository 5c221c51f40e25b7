/**
 * The node's mTLS data plane (native/dataplane, docs/dataplane.md) as the agent supervises it: a process of its
 * own session, so that an agent restart or `kill -9` never cuts a tunnelled connection; its pid and config path
 * recorded in the run directory, where a restarted agent finds it and adopts it (alive, the same binary and
 * config, its stats endpoint answering) instead of starting a second; started again within a second when it
 * dies; its JSON config written whole (temporary file + rename) and re-read on SIGHUP, a reload confirmed on
 * its stats endpoint. The listening sockets (outbound, tunnel) are the agent's: made here, handed to each data plane
 * it starts (inherited fds named on its command line), taken back from an adopted one (pidfd_getfd), so that
 * connects made while the data plane is down wait in the kernel for the next one instead of being refused.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { request } from 'node:http';
import { basename, join } from 'node:path';

import { cgroup2Mount, cgroupOfProcess, closeFd, fdOfProcess, listeningAddress, listenTcp } from '@mesh/bpf';

import type { Logger } from './log.js';
import { parseHostPort } from './paths.js';

/** The data plane's config file, as docs/dataplane.md describes it. */
export interface DataplaneConfig {
  outbound?: string;
  tunnel?: string;
  stats: string;
  workers?: number;
  /** Pooled tunnel connections (true; needs ktls false) or dedicated ones (false); absent: the data plane
   *  chooses (docs/mtls.md). */
  pool?: boolean;
  ktls?: boolean;
  inboundSource?: { ipv4?: string; ipv6?: string };
  workloads: {
    address: string;
    spiffeId: string;
    cert: string;
    key: string;
    bundle: string;
    policies?: { deny?: unknown[]; allow?: unknown[] };
  }[];
  destinations: { address: string; tunnel: string; spiffeId: string }[];
  originalDst?: { map: string };
}

export interface DataplaneOptions {
  /** The mesh-dataplane executable. */
  binary: string;
  /** Its config, pid file and log live here (not on bpffs: regular files). */
  runDir: string;
  log: Logger;
  /** How often a dead process is looked for (it is started again at once when found). */
  checkMs?: number;
  /** Its nice value (mesh-dataplane --nice); DATAPLANE_NICE when not given. */
  nice?: number;
  /**
   * Started and restarted by something else — in Kubernetes, a container of the agent's pod (a process of the
   * agent's container dies with it: the runtime kills the container's processes when its first one exits). The
   * agent writes the config, finds the process running `<binary's name> --config <config>` (the pod shares one
   * process namespace), reloads and watches it, and never starts or stops it except to have it re-read listen
   * addresses (SIGTERM; its container is restarted). It makes its own listeners: connects while it is down are refused.
   */
  external?: boolean;
  /** Called when an external data plane is found (at start or again after it died): its cgroup is new to cgroups(). */
  onFound?: () => void;
}

export type DataplaneState = 'starting' | 'serving' | 'down';

export interface DataplaneHealth {
  state: DataplaneState;
  pid?: number;
  /** Config generation in force (1 at start, +1 per reload). */
  generation?: number;
  /** Starts after the first (it died and was started again). */
  restarts: number;
  adopted: boolean;
  /** Started by something else (DataplaneOptions.external): restarts counts the times it was found gone. */
  external?: boolean;
  stats: string;
  config: string;
  lastError?: string;
  /** The record layer: whether the kernel's (kTLS) is there, and which one each connection took (absent: not scraped yet). */
  recordLayer?: RecordLayer;
  /** How outbound connections go to other data planes, and why (absent: not scraped yet). */
  tunnel?: TunnelChoice;
}

/** From the data plane's stats: its start-up kTLS probe, and connections by record layer and role. */
export interface RecordLayer {
  ktlsAvailable: boolean;
  /** Why kTLS is unavailable ('' when it is available). */
  reason: string;
  /** Connections whose handshake completed: `ktls` (kernel record layer, bytes spliced) or `user` (OpenSSL). */
  connections: Record<'outbound' | 'inbound', { ktls: number; user: number }>;
}

/** From the data plane's stats: the tunnel new outbound connections take and why, and the streams so far. */
export interface TunnelChoice {
  tunnel: 'pooled' | 'dedicated';
  /** `config` (its "pool" set: --mtls-tunnel-mode) or `auto: …` (pooled unless kTLS takes the record layer). */
  choice: string;
  /** Outbound connections: dedicated (a TLS connection each), pooled with a handshake (new) or without (reused). */
  outbound: { dedicated: number; pooledNew: number; pooledReused: number };
}

/** The tunnel series of a scrape (undefined from a data plane that has none). */
export function tunnelOf(text: string): TunnelChoice | undefined {
  const info = /^mesh_dataplane_outbound_tunnel_info\{tunnel="(pooled|dedicated)",choice="((?:[^"\\]|\\.)*)"\} 1$/m.exec(text);
  if (!info) return undefined;
  const count = (labels: string) =>
    Number(new RegExp(`^mesh_dataplane_tunnel_streams_total\\{role="outbound",${labels}\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
  return {
    tunnel: info[1] as TunnelChoice['tunnel'],
    choice: info[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c)),
    outbound: {
      dedicated: count('tunnel="dedicated",handshake="new"'),
      pooledNew: count('tunnel="pooled",handshake="new"'),
      pooledReused: count('tunnel="pooled",handshake="reused"'),
    },
  };
}

interface PidRecord {
  pid: number;
  binary: string;
  config: string;
  startedAt: string;
}

/** The listeners the agent holds and hands over; the stats listener stays the data plane's own. */
const LISTENERS = ['outbound', 'tunnel'] as const;
type ListenerName = (typeof LISTENERS)[number];

/** The data plane's nice value (its threads and, where the kernel schedules by autogroup, its session's): above
 *  the workloads', whose every tunnelled connection waits on it. At the default weight, in a session of its own,
 *  a dozen busy sessions on 2 CPUs left it ~0.27 CPU, about what 200 new connections/s take: it fell behind and
 *  every connection then waited past its client's timeout. */
export const DATAPLANE_NICE = -10;

const STATS_TIMEOUT_MS = 2000;
const START_TIMEOUT_MS = 10_000;
const RELOAD_TIMEOUT_MS = 10_000;

/** The data plane's counters that supervision reads: config generation, reloads and the record layer. */
export interface DataplaneStats {
  generation: number;
  reloadsOk: number;
  reloadsFailed: number;
  recordLayer: RecordLayer | undefined;
  tunnel: TunnelChoice | undefined;
  text: string;
}

/** The record layer series of a scrape (undefined from a data plane that has none). */
export function recordLayerOf(text: string): RecordLayer | undefined {
  const available = /^mesh_dataplane_ktls_available (\d+)$/m.exec(text);
  const info = /^mesh_dataplane_ktls_info\{reason="((?:[^"\\]|\\.)*)"\} 1$/m.exec(text);
  if (!available || !info) return undefined;
  const count = (role: string, path: string) =>
    Number(new RegExp(`^mesh_dataplane_record_layer_total\\{role="${role}",path="${path}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
  return {
    ktlsAvailable: available[1] === '1',
    reason: info[1]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c)),
    connections: {
      outbound: { ktls: count('outbound', 'ktls'), user: count('outbound', 'user') },
      inbound: { ktls: count('inbound', 'ktls'), user: count('inbound', 'user') },
    },
  };
}

/** One scrape of the stats endpoint; rejects when it does not answer in time. */
export function scrapeDataplane(address: string, timeoutMs = STATS_TIMEOUT_MS): Promise<DataplaneStats> {
  const { host, port } = parseHostPort(address);
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path: '/metrics', timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        const num = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
        const s = {
          generation: num(/^mesh_dataplane_config_generation (\d+)$/m),
          reloadsOk: num(/^mesh_dataplane_config_reloads_total\{result="ok"\} (\d+)$/m),
          reloadsFailed: num(/^mesh_dataplane_config_reloads_total\{result="error"\} (\d+)$/m),
          recordLayer: recordLayerOf(text),
          tunnel: tunnelOf(text),
          text,
        };
        if (Number.isNaN(s.generation)) reject(new Error(`stats endpoint ${address}: no mesh_dataplane_config_generation`));
        else resolve(s);
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`stats endpoint ${address}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** Whether `pid` is a live (not zombie) process running `binary --config config`. */
function runs(pid: number, binary: string, config: string): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (/\) Z /.test(stat)) return false;
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return basename(argv[0] ?? '') === basename(binary) && argv[1] === '--config' && argv[2] === config;
  } catch {
    return false;
  }
}

/** The live process running `binary --config config` (by the binary's name), if any. */
function findProcess(binary: string, config: string): number | undefined {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return undefined;
  }
  for (const p of pids) if (Number(p) !== process.pid && runs(Number(p), binary, config)) return Number(p);
  return undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function writeWhole(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  const f = await open(tmp, 'w', 0o600);
  try {
    await f.writeFile(text);
    await f.sync();
  } finally {
    await f.close();
  }
  await rename(tmp, path);
}

export class DataplaneSupervisor {
  readonly configPath: string;
  readonly pidPath: string;
  readonly logPath: string;
  private pid: number | undefined;
  private config: DataplaneConfig | undefined;
  private written: string | undefined;
  private state: DataplaneState = 'down';
  private generation: number | undefined;
  private recordLayer: RecordLayer | undefined;
  private tunnel: TunnelChoice | undefined;
  private restarts = 0;
  private adopted = false;
  private lastError: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private starting: Promise<void> | undefined;
  private lastAttempt = 0;
  private closed = false;
  /** The listening sockets held for the data plane, by name (fds of this process). */
  private readonly listeners = new Map<ListenerName, number>();
  /** cgroups(): the directory each process was last found in (a search is needed only when it moved). */
  private readonly cgroupSeen = new Map<number, string>();
  private readonly log: Logger;

  constructor(private readonly opts: DataplaneOptions) {
    this.configPath = join(opts.runDir, 'dataplane.json');
    this.pidPath = join(opts.runDir, 'dataplane.pid');
    this.logPath = join(opts.runDir, 'dataplane.log');
    this.log = opts.log.with({ subsystem: 'dataplane' });
  }

  /** The config a previous agent left in the run directory, if any (what the running data plane serves). */
  previousConfig(): DataplaneConfig | undefined {
    try {
      return JSON.parse(readFileSync(this.configPath, 'utf8')) as DataplaneConfig;
    } catch {
      return undefined;
    }
  }

  /**
   * Adopts the data plane a previous agent started, when it is alive and answers, or starts one with `config`.
   * An adopted one is handed `config` by a reload (it keeps its connections).
   */
  async start(config: DataplaneConfig): Promise<void> {
    mkdirSync(this.opts.runDir, { recursive: true, mode: 0o700 });
    if (this.opts.external) {
      const prev = this.previousConfig();
      this.config = config;
      await this.writeConfig();
      await this.findExternal(prev);
      this.watch();
      return;
    }
    const rec = this.readPid();
    const prev = this.previousConfig();
    // Listen addresses and workers cannot change on a reload: a data plane with others is replaced.
    const same = prev !== undefined && (['outbound', 'tunnel', 'stats', 'workers'] as const).every((k) => prev[k] === config[k]);
    if (rec && !same && runs(rec.pid, this.opts.binary, this.configPath)) {
      this.log.warn('the running data plane listens elsewhere; replacing it (its connections are cut)', { pid: rec.pid });
      await stopPid(rec.pid);
    } else if (rec && rec.config === this.configPath && runs(rec.pid, this.opts.binary, this.configPath)) {
      try {
        const s = await scrapeDataplane(config.stats);
        this.pid = rec.pid;
        this.adopted = true;
        this.state = 'serving';
        this.generation = s.generation;
        this.config = this.previousConfig();
        this.written = this.config && JSON.stringify(this.config, null, 2);
        this.log.info('adopted the running data plane', { pid: rec.pid, generation: s.generation, stats: config.stats });
        this.takeListeners(rec.pid, config);
      } catch (err) {
        this.log.warn('a data plane runs but does not answer on its stats endpoint; starting another', { pid: rec.pid, error: (err as Error).message });
        // Its listeners first: the next one gets them with what is queued (and the addresses are never free).
        this.takeListeners(rec.pid, config);
        try {
          process.kill(rec.pid, 'SIGKILL');
        } catch {
          /* gone meanwhile */
        }
      }
    }
    if (this.pid === undefined) {
      this.config = config;
      await this.writeConfig();
      // One that cannot start does not stop the agent: it is tried again every second, and the agent is not
      // ready meanwhile (the routing and metrics programs keep working).
      await this.spawnOne().catch((err) => this.log.error('data plane could not be started; trying again every second', { error: (err as Error).message }));
    } else await this.reload(config);
    this.watch();
  }

  /**
   * External mode: the running data plane for our config, adopted and handed the config in force by a reload.
   * One found with other listen addresses than `config`'s (`prev`: what it was started with) is stopped, to be
   * started again by its owner with the new file. None found: down, and looked for again every second.
   */
  private async findExternal(prev: DataplaneConfig | undefined = this.config): Promise<void> {
    this.lastAttempt = Date.now();
    const pid = findProcess(this.opts.binary, this.configPath);
    if (pid === undefined) {
      this.state = 'down';
      this.lastError = `waiting for the data plane to be started beside the agent (a process running ${basename(this.opts.binary)} --config ${this.configPath})`;
      return;
    }
    const config = this.config!;
    if (prev !== undefined && !(['outbound', 'tunnel', 'stats', 'workers'] as const).every((k) => prev[k] === config[k])) {
      this.log.warn('the data plane beside the agent listens elsewhere; stopping it so that it restarts with the new config (its connections are cut)', { pid });
      await stopPid(pid);
      this.state = 'down';
      return;
    }
    try {
      await scrapeDataplane(config.stats);
    } catch (err) {
      this.state = 'down';
      this.lastError = `the data plane beside the agent (pid ${pid}) does not answer on ${config.stats}: ${(err as Error).message}`;
      return;
    }
    this.pid = pid;
    this.adopted = true;
    this.state = 'serving';
    this.log.info('found the data plane beside the agent', { pid, stats: config.stats });
    this.opts.onFound?.();
    // It read the file at its start, or an older one: the one in force now, confirmed.
    await this.signalReload(config).catch((err) => {
      this.lastError = (err as Error).message;
      this.log.error('the data plane beside the agent refused its config', { pid, error: (err as Error).message });
    });
  }

  /**
   * Takes back the listening sockets an adopted data plane inherited (the `--listen-fd` its command line names),
   * so that when it dies the next one gets them and nothing queued is lost. Failing that (a data plane that made
   * its own, no ptrace rights) they are made anew when the next one starts, and connects in that gap are refused.
   */
  private takeListeners(pid: number, config: DataplaneConfig): void {
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      return;
    }
    const given = new Map<string, number>();
    argv.forEach((a, i) => {
      const m = a === '--listen-fd' ? /^(\w+)=(\d+)$/.exec(argv[i + 1] ?? '') : null;
      if (m) given.set(m[1]!, Number(m[2]));
    });
    for (const name of LISTENERS) {
      const want = config[name];
      const theirs = given.get(name);
      if (want === undefined) continue;
      if (theirs === undefined) {
        this.log.warn('the adopted data plane holds its own listener: it is made anew when the data plane next starts', { pid, listener: name });
        continue;
      }
      try {
        const fd = fdOfProcess(pid, theirs);
        if (!listensOn(fd, want)) {
          closeFd(fd);
          throw new Error(`its fd ${theirs} is not a socket listening on ${want}`);
        }
        this.listeners.set(name, fd);
      } catch (err) {
        this.log.warn('could not take over the adopted data plane\'s listener: it is made anew when the data plane next starts', { pid, listener: name, error: (err as Error).message });
      }
    }
  }

  /** The listening sockets for `config`, made when not held (or held for another address). */
  private holdListeners(config: DataplaneConfig): { name: ListenerName; fd: number }[] {
    const out: { name: ListenerName; fd: number }[] = [];
    for (const name of LISTENERS) {
      const want = config[name];
      const held = this.listeners.get(name);
      if (held !== undefined && (want === undefined || !listensOn(held, want))) {
        closeFd(held);
        this.listeners.delete(name);
      }
      if (want === undefined) continue;
      if (!this.listeners.has(name)) {
        const { host, port } = parseHostPort(want);
        try {
          this.listeners.set(name, listenTcp(host, port));
        } catch (err) {
          throw new Error(`cannot listen on ${want} (${name}) for the data plane: ${(err as Error).message}`);
        }
      }
      out.push({ name, fd: this.listeners.get(name)! });
    }
    return out;
  }

  private readPid(): PidRecord | undefined {
    try {
      return JSON.parse(readFileSync(this.pidPath, 'utf8')) as PidRecord;
    } catch {
      return undefined;
    }
  }

  private async writeConfig(): Promise<boolean> {
    const text = JSON.stringify(this.config, null, 2);
    if (text === this.written && existsSync(this.configPath)) return false;
    await writeWhole(this.configPath, text);
    this.written = text;
    return true;
  }

  /** Starts the process and waits until its stats endpoint answers. */
  private spawnOne(): Promise<void> {
    this.starting ??= (async () => {
      this.state = 'starting';
      this.lastAttempt = Date.now();
      const fd = openSync(this.logPath, 'a', 0o600);
      let exited: string | undefined;
      try {
        if (!existsSync(this.opts.binary)) throw new Error(`cannot start the data plane: ${this.opts.binary} does not exist`);
        // The listeners become its fds 3, 4, … (as socket activation numbers them), named on its command line.
        const held = this.holdListeners(this.config!);
        const args = ['--config', this.configPath, ...held.flatMap((l, i) => ['--listen-fd', `${l.name}=${3 + i}`]), '--nice', String(this.opts.nice ?? DATAPLANE_NICE)];
        // Its own session (detached): signals to the agent's process group, and the agent's death, leave it be.
        const child = spawn(this.opts.binary, args, { detached: true, stdio: ['ignore', fd, fd, ...held.map((l) => l.fd)] });
        child.on('error', (err) => (exited = err.message));
        child.on('exit', (code, signal) => {
          exited = `exited with ${signal ?? `status ${code}`}`;
          if (child.pid === this.pid) this.onDeath(exited);
        });
        child.unref();
        if (child.pid === undefined) throw new Error(`cannot start ${this.opts.binary}: ${exited ?? 'no pid'}`);
        this.pid = child.pid;
        this.adopted = false;
        const rec: PidRecord = { pid: child.pid, binary: this.opts.binary, config: this.configPath, startedAt: new Date().toISOString() };
        await writeWhole(this.pidPath, JSON.stringify(rec));
        const t0 = performance.now();
        while (performance.now() - t0 < START_TIMEOUT_MS) {
          if (exited) throw new Error(`data plane ${exited} at start; see ${this.logPath}`);
          try {
            const s = await scrapeDataplane(this.config!.stats, 500);
            this.generation = s.generation;
            this.state = 'serving';
            this.lastError = undefined;
            this.log.info('data plane serving', { pid: child.pid, ms: Math.round(performance.now() - t0), restarts: this.restarts });
            return;
          } catch {
            await sleep(20);
          }
        }
        throw new Error(`data plane (pid ${child.pid}) did not answer on ${this.config!.stats} within ${START_TIMEOUT_MS} ms; see ${this.logPath}`);
      } catch (err) {
        this.state = 'down';
        this.lastError = (err as Error).message;
        throw err;
      } finally {
        closeSync(fd);
        this.starting = undefined;
      }
    })();
    return this.starting;
  }

  private onDeath(why: string): void {
    if (this.closed) return;
    this.log.error(this.opts.external ? 'data plane died; waiting for it to be started again beside the agent' : 'data plane died; starting it again', { pid: this.pid, why });
    this.pid = undefined;
    this.state = 'down';
    this.lastError = `data plane ${why}`;
    this.restarts++;
    if (this.opts.external) return;
    this.spawnOne().catch((err) => this.log.error('data plane could not be started', { error: (err as Error).message }));
  }

  /** An adopted process is not our child: its death is found by looking. */
  private watch(): void {
    const check = () => {
      if (this.closed) return;
      if (this.pid !== undefined && !this.starting && !runs(this.pid, this.opts.binary, this.configPath)) this.onDeath('is gone');
      else if (this.pid === undefined && !this.starting && Date.now() - this.lastAttempt >= 1000) {
        if (this.opts.external) {
          this.starting = this.findExternal().finally(() => (this.starting = undefined));
        } else this.spawnOne().catch(() => undefined); // lastError and the state say why
      }
      this.timer = setTimeout(check, this.opts.checkMs ?? 200);
      this.timer.unref();
    };
    check();
  }

  /** Writes `config` and has the data plane re-read it; resolves once it is in force. Throws when the data
   *  plane refuses it (it keeps the previous one). An unchanged config is not sent again unless `filesChanged`:
   *  renewed SVIDs are new files under the same names, which the data plane reads only on a reload. */
  async reload(config: DataplaneConfig, filesChanged = false): Promise<void> {
    this.config = config;
    if (!(await this.writeConfig()) && !filesChanged) return;
    // One being started (or found) may have read the file before this write: it is told to read it again.
    if (this.starting) await this.starting;
    if (this.pid === undefined) return;
    await this.signalReload(config);
  }

  /** SIGHUP to the running data plane; resolves once the reload is confirmed on its stats endpoint. */
  private async signalReload(config: DataplaneConfig): Promise<void> {
    if (this.pid === undefined) return;
    const before = await scrapeDataplane(config.stats).catch(() => undefined);
    process.kill(this.pid, 'SIGHUP');
    const t0 = performance.now();
    while (before && performance.now() - t0 < RELOAD_TIMEOUT_MS) {
      const s = await scrapeDataplane(config.stats).catch(() => undefined);
      if (s && s.reloadsFailed > before.reloadsFailed) {
        const why = [...readTail(this.logPath).matchAll(/reload failed[^\n]*/g)].pop()?.[0] ?? `see ${this.logPath}`;
        this.lastError = why;
        throw new Error(`the data plane refused its config: ${why}`);
      }
      if (s && s.reloadsOk > before.reloadsOk) {
        this.generation = s.generation;
        this.lastError = undefined;
        return;
      }
      await sleep(10);
    }
    this.log.warn('data plane reload not confirmed', { pid: this.pid, ms: Math.round(performance.now() - t0) });
  }

  /** Whether it serves, by a scrape now (status and /readyz). */
  async probe(): Promise<DataplaneHealth> {
    if (this.config && this.pid !== undefined && !this.starting) {
      try {
        const s = await scrapeDataplane(this.config.stats);
        this.state = 'serving';
        this.generation = s.generation;
        this.recordLayer = s.recordLayer;
        this.tunnel = s.tunnel;
      } catch (err) {
        this.state = 'down';
        this.lastError = (err as Error).message;
      }
    }
    return this.health();
  }

  /**
   * The cgroup v2 directories the data plane runs in: this agent's (where each one it starts lands) and the
   * running one's (an adopted one may have been started from elsewhere). The kernel lets only these bind the
   * inbound source address.
   */
  cgroups(): string[] {
    const mount = cgroup2Mount();
    // Found from cgroup.procs, not taken from /proc/<pid>/cgroup as written: in a container (a cgroup namespace of
    // its own, as a DaemonSet pod has) that reads "/" for a directory deep under the attach root.
    const find = (pid: number) => {
      const dir = cgroupOfProcess(pid, mount, this.cgroupSeen.get(pid));
      if (dir === undefined) this.cgroupSeen.delete(pid);
      else this.cgroupSeen.set(pid, dir);
      return dir;
    };
    for (const pid of this.cgroupSeen.keys()) if (pid !== process.pid && pid !== this.pid) this.cgroupSeen.delete(pid);
    const dirs = [find(process.pid), this.pid === undefined ? undefined : find(this.pid)];
    return [...new Set(dirs.filter((d): d is string => d !== undefined))];
  }

  health(): DataplaneHealth {
    return {
      state: this.state,
      pid: this.pid,
      generation: this.generation,
      restarts: this.restarts,
      adopted: this.adopted,
      ...(this.opts.external ? { external: true } : {}),
      stats: this.config?.stats ?? '',
      config: this.configPath,
      lastError: this.lastError,
      ...(this.recordLayer ? { recordLayer: this.recordLayer } : {}),
      ...(this.tunnel ? { tunnel: this.tunnel } : {}),
    };
  }

  /** Stops supervising; the data plane keeps running, with its copies of the listeners (a restarted agent
   *  adopts it and takes them back). */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    for (const fd of this.listeners.values()) closeFd(fd);
    this.listeners.clear();
  }
}

/** Whether `fd` is a TCP socket listening on `address` (HOST:PORT; port 0: any). */
function listensOn(fd: number, address: string): boolean {
  const bound = listeningAddress(fd);
  const { host, port } = parseHostPort(address);
  return bound !== undefined && bound.address === host && (port === 0 || bound.port === port);
}

/** SIGTERM (the data plane exits at once), then waits until the process is gone. */
async function stopPid(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const gone = () => {
    try {
      return /\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      return true;
    }
  };
  for (let i = 0; i < 500 && !gone(); i++) await sleep(10);
  if (gone()) return;
  process.kill(pid, 'SIGKILL');
}

function readTail(path: string): string {
  try {
    const s = readFileSync(path, 'utf8');
    return s.slice(-4096);
  } catch {
    return '';
  }
}
