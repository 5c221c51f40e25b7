/**
 * The agent, wired in one place: config source → validation → datapath (its families, workload cgroups) and the
 * identity names metrics use; the HTTP endpoints; readiness; shutdown. Subsystems do not reach into each
 * other's maps: the agent hands each package its part of a validated config.
 */
import type { Server } from 'node:http';

import { enableStats } from '@mesh/bpf';
import type { IdentityResolver } from '@mesh/metrics';
import { runStepsAsync } from '@mesh/split';
import { Registry } from 'prom-client';

import { AgentMetrics } from './agent-metrics.js';
import { ConfigError, type ResolvedConfig, type ResolvedWorkload, type ResolveMemo, resolveMemo, resolveSteps } from './config/objects.js';
import type { ConfigSource, ConfigUpdate } from './config/source.js';
import { MeshDatapath } from './datapath.js';
import { FAMILIES, type Family, metricsFamily, sizesFor } from './families.js';
import { ConfigResolver } from './identity.js';
import { checkKernel } from './kernel.js';
import type { IdentityOptions, WorkloadIdentities } from './identities.js';
import { acquireLock, type Lock } from './lock.js';
import { MtlsNode, type MtlsNodeOptions } from './mtls.js';
import { type Logger, msSince, threadCpuMs } from './log.js';
import { parseHostPort } from './paths.js';
import { type Endpoints, startSocketServer, startTcpServer } from './server.js';
import { PairStats } from './stats.js';
import { uiEndpoints } from './ui.js';
import { type Applied, certsView, type LastError, servicesView, statusView, workloadsView } from './views.js';

interface TcpListener {
  address: string;
  /** What it serves, for the log. */
  serves: string;
  endpoints: Endpoints;
  server?: Server;
  error?: string;
  retry?: NodeJS.Timeout;
}

export interface AgentOptions {
  source: ConfigSource;
  /** HOST:PORT of /metrics, /healthz and /readyz; a loopback address. */
  listen: string;
  /** HOST:PORT of /metrics alone, on any address (a Prometheus scraping the node's address); none when absent. */
  metricsListen?: string;
  /** Path of the control socket (the /v1 API meshctl uses, and the read-only endpoints). */
  apiSocket: string;
  /** Group allowed on the control socket besides root. */
  apiGid?: number;
  pinRoot: string;
  cgroupRoot: string;
  log: Logger;
  /** Table capacities; a routing table not given is sized from the first config (sizesFor). */
  maxServices?: number;
  maxEndpoints?: number;
  maxConnections?: number;
  /** Capacity of the metrics' known-peer table; from the first config when not given (sizesFor). */
  maxPeers?: number;
  /** Serve the page (the service graph) on the metrics listener; on unless false. */
  ui?: boolean;
  /** Keep BPF run-time statistics on (costs ~20 ns per program run); shown by `meshctl status`. */
  bpfStats?: boolean;
  /** Workload identities (SVIDs) for the config's workloads; off when absent. */
  identity?: Omit<IdentityOptions, 'log' | 'svidDir'> & { svidDir?: string | undefined };
  /** Datapath families run after the built-in ones (FAMILIES): how a test adds one without editing the agent. */
  families?: readonly Family[];
  /** This node's name: workloads whose spec.nodeName is another run elsewhere. */
  nodeName?: string;
  /** Transparent mTLS for enrolled workloads (the mtls family and the supervised data plane); off when absent. */
  mtls?: MtlsNodeOptions;
}

/** start() gave up because stop() was called (SIGTERM or SIGINT during start-up). */
export class StartAborted extends Error {
  constructor() {
    super('stopped during start-up');
    this.name = 'StartAborted';
  }
}

export class Agent {
  private datapath: MeshDatapath | undefined;
  private server: Server | undefined;
  /** The TCP listeners: --listen's, then --metrics-listen's if given. */
  private readonly tcp: TcpListener[] = [];
  private applied: Applied | undefined;
  private lastError: LastError | undefined;
  private resolver: IdentityResolver = { local: () => undefined, peer: () => undefined };
  private readonly registry = new Registry();
  private readonly stats: PairStats;
  private stopping = false;
  private starting: Promise<void> | undefined;
  private onStop: () => void = () => undefined;
  private readonly stopRequested = new Promise<void>((r) => (this.onStop = r));
  private lock: Lock | undefined;
  private identities: WorkloadIdentities | undefined;
  private statsHandle: { close(): void } | undefined;
  private mtls: MtlsNode | undefined;
  private mtlsProbe: NodeJS.Timeout | undefined;
  /** What the last config resolved to, so the next one resolves only what changed. */
  private readonly memo: ResolveMemo;
  /** Config updates are applied one at a time, in steps that leave the event loop free (/healthz answers during
   *  a 50,000-service apply); an update that arrives meanwhile waits, and only the newest waiting one is applied. */
  private waiting: ConfigUpdate | undefined;
  private applying: Promise<void> | undefined;
  private readonly log: Logger;
  private readonly agentMetrics: AgentMetrics;

  constructor(private readonly opts: AgentOptions) {
    this.log = opts.log;
    this.memo = resolveMemo({ trustDomain: opts.identity?.trustDomain });
    this.stats = new PairStats(() => {
      const m = this.dp().get(metricsFamily);
      const h2 = m.readH2();
      return { http: m.readHttp(), h2: h2.http, rpc: h2.rpc };
    }, () => this.resolver);
    this.agentMetrics = new AgentMetrics(this.registry, opts, () => this.notReady() === undefined);
    opts.source.register?.(this.registry);
  }

  private dp(): MeshDatapath {
    if (!this.datapath) throw new Error('datapath not open');
    return this.datapath;
  }

  /** Opens (or adopts) the datapath, applies the first config, serves the endpoints. Rejects when the first
   *  config is invalid: nothing of a previous agent's datapath is changed then. */
  start(): Promise<void> {
    this.starting = this.startSteps();
    return this.starting;
  }

  /** Throws StartAborted once stop() was called: start-up goes no further than the step it is in. */
  private checkStop(): void {
    if (this.stopping) throw new StartAborted();
  }

  private async startSteps(): Promise<void> {
    const { log, opts } = this;
    // The first config is validated before the kernel is touched: a bad file leaves a running datapath alone.
    let queued: ConfigUpdate | undefined;
    // The first config may be long in coming (a file still being written): a stop does not wait for it.
    const aborted = this.stopRequested.then(() => undefined);
    // Handed over in a box emptied once taken: the source's callback and the stop race keep their (resolved)
    // promises for the agent's life, and with them the first snapshot if it were their value.
    const box = await Promise.race([aborted, new Promise<{ u?: ConfigUpdate }>((resolve) => {
      let got = false;
      opts.source.start((u) => {
        if (!got) {
          got = true;
          resolve({ u });
        } else if (this.applied) this.enqueue(u);
        else queued = u;
      });
    })]);
    if (box === undefined) throw new StartAborted();
    const first = box.u!;
    box.u = undefined;
    if (first.error) throw first.error;
    // Validated (and compiled) before the kernel is touched; throws ConfigError naming every problem.
    const v0 = performance.now();
    const c0 = threadCpuMs();
    const firstConfig = await runStepsAsync(resolveSteps(first.snapshot, this.memo));
    const firstTimes = { parseMs: first.readMs, validateMs: msSince(v0), validateCpuMs: threadCpuMs() - c0 };

    this.checkStop();
    this.lock = acquireLock(opts.pinRoot);
    // The CA opens before the kernel is touched: a bad state directory fails the start, naming the file.
    if (opts.identity) {
      // Loaded here, not at the top: the certificate library would slow every import of this file (meshctl's too).
      const { WorkloadIdentities, defaultSvidDir } = await import('./identities.js');
      this.identities = await WorkloadIdentities.open({ ...opts.identity, svidDir: opts.identity.svidDir ?? defaultSvidDir(opts.pinRoot), log });
      this.identities.register(this.registry);
    }
    // Endpoints first: a socket that cannot be made fails before the kernel is touched, and /readyz answers
    // while loading.
    const endpoints = {
      registry: this.registry,
      healthy: () => !this.stopping,
      notReady: () => this.notReady(),
      ui: opts.ui === false ? undefined : uiEndpoints(this.stats, () => this.applied, () => this.mtls !== undefined),
      api: {
        '/v1/status': () => this.status(),
        '/v1/services': () => this.services(),
        '/v1/workloads': () => this.workloads(),
        '/v1/certs': () => certsView(this.identities),
        '/v1/stat': (q: URLSearchParams) => this.stats.query(Number(q.get('window') ?? 10) * 1000),
      },
    };
    this.server = await startSocketServer({ path: opts.apiSocket, gid: opts.apiGid }, endpoints, log);
    this.checkStop();
    this.tcp.push({ address: opts.listen, serves: '/metrics, /healthz and /readyz', endpoints });
    if (opts.metricsListen) this.tcp.push({ address: opts.metricsListen, serves: '/metrics', endpoints: { ...endpoints, api: undefined, ui: undefined, only: ['/metrics'] } });
    for (const l of this.tcp) await this.listenTcp(l);
    this.checkStop();

    checkKernel(log);
    if (opts.bpfStats) this.statsHandle = enableStats();
    const t0 = performance.now();
    if (opts.mtls) {
      const trustDomain = opts.identity?.trustDomain ?? 'cluster.local';
      this.mtls = new MtlsNode(opts.mtls, { pinRoot: opts.pinRoot, cgroupRoot: opts.cgroupRoot, log, nodeName: opts.nodeName, trustDomain });
    }
    // mtls after split: its connect program must see the endpoint the split chose.
    const families = [...FAMILIES, ...(this.mtls ? [this.mtls.family] : []), ...(opts.families ?? [])];
    const sizes = sizesFor(opts, firstConfig);
    const mtlsSizes = this.mtls?.sizeFrom(firstConfig);
    this.datapath = MeshDatapath.open({ pinRoot: opts.pinRoot, cgroupRoot: opts.cgroupRoot, log, ...sizes, families });
    log.info('datapath loaded; writing the first config', { ...sizes, ...(mtlsSizes && { mtls: mtlsSizes }) });

    // Each family brings its metrics (metrics' start consuming HTTP/2 header frames from the kernel).
    this.datapath.registerMetrics(this.registry);

    if (this.mtls) {
      // After the datapath: the data plane's config names the pinned map of original destinations.
      await this.mtls.start(this.identities);
      const probe = () => {
        if (this.stopping || !this.mtls) return;
        void this.mtls.supervisor.probe().finally(() => {
          this.mtlsProbe = setTimeout(probe, 1000);
          this.mtlsProbe.unref();
        });
      };
      probe();
    }

    // Tracked like any apply: stop() waits for it rather than closing the maps under it.
    this.applying = this.apply(firstConfig, first.revision, firstTimes);
    await this.applying;
    this.applying = undefined;
    if (!this.applied) throw new ConfigError(this.lastError?.problems ?? ['the first config could not be applied']);
    // Attached once the config is in the maps: programs switched to tables made anew never see them empty.
    const attachments = this.datapath.attach();
    const outcomes = attachments.reduce<Record<string, number>>((a, x) => ((a[x.outcome] = (a[x.outcome] ?? 0) + 1), a), {});
    log.info('datapath ready', { cgroupRoot: opts.cgroupRoot, pinRoot: opts.pinRoot, programs: attachments.length, ...outcomes, ...sizes, ms: Math.round(performance.now() - t0) });
    // An update that came while the first apply ran (and found it still tracked) is waiting: apply the newest.
    const pending = this.waiting ?? queued;
    queued = undefined; // the source's callback keeps this scope
    if (pending) this.enqueue(pending);
    this.stats.start();
    log.info('serving', {
      socket: opts.apiSocket,
      endpoints: ['/v1/status', '/v1/services', '/v1/stat', '/v1/workloads', '/v1/certs', '/metrics', '/healthz', '/readyz'],
      metrics: `http://${opts.listen}`,
    });
  }

  /**
   * A TCP listener (/metrics, /healthz and /readyz on --listen; /metrics on --metrics-listen). A port someone else
   * holds is not fatal: the control socket and the datapath do not depend on it, and exiting would let any local
   * user stop the mesh's control plane (a restart loop). It is logged once, shown by status, and tried again every 10 s.
   */
  private async listenTcp(l: TcpListener): Promise<void> {
    const { host, port } = parseHostPort(l.address);
    try {
      l.server = await startTcpServer(host, port, l.endpoints, this.log);
      if (l.error) this.log.info(`serving ${l.serves} again`, { address: l.address });
      l.error = undefined;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why = e.code === 'EADDRINUSE' ? `port ${port} on ${host} is in use by another process` : `${e.code ?? e.message}`;
      const message = `cannot serve ${l.serves} on ${l.address}: ${why}; the control socket and the datapath are unaffected; trying again every 10 s`;
      if (message !== l.error) this.log.error(message, { address: l.address, code: e.code });
      l.error = message;
      if (this.stopping) return;
      l.retry = setTimeout(() => void this.listenTcp(l), 10_000);
      l.retry.unref();
    }
  }

  private notReady(): string | undefined {
    if (!this.datapath?.isAttached) return 'programs are not attached yet';
    if (!this.applied) return 'no config applied yet';
    const dp = this.mtls?.supervisor.health();
    if (dp && dp.state !== 'serving') return `the mTLS data plane is ${dp.state}${dp.lastError ? `: ${dp.lastError}` : ''}`;
    return this.opts.source.notReady?.();
  }

  private enqueue(u: ConfigUpdate): void {
    this.waiting = u;
    this.applying ??= (async () => {
      while (this.waiting && !this.stopping) {
        const next = this.waiting;
        this.waiting = undefined;
        await this.onUpdate(next);
      }
      this.applying = undefined;
    })();
  }

  private async onUpdate(u: ConfigUpdate): Promise<void> {
    if (u.error) return this.reject(u.error, u.revision);
    let config: ResolvedConfig;
    const v0 = performance.now();
    const c0 = threadCpuMs();
    // The workloads' cgroups are made in the thread pool while the rest of the config is resolved (the kernel
    // makes them one at a time: 20,000 take seconds); a config rejected meanwhile takes away those it made.
    let cgroups: Promise<string[]> | undefined;
    const early = (workloads: ResolvedWorkload[]) => {
      if (this.opts.source.managesCgroups === false || !this.datapath) return;
      cgroups = this.datapath.ensureCgroups(this.localOf(workloads).map((w) => w.cgroup));
      cgroups.catch(() => undefined); // awaited (and reported) by apply
    };
    try {
      config = await runStepsAsync(resolveSteps(u.snapshot, this.memo, early));
    } catch (err) {
      const made = await cgroups?.catch(() => [] as string[]);
      if (made?.length) await this.datapath?.removeCgroups(made);
      return this.reject(err as Error, u.revision);
    }
    await this.apply(config, u.revision, { parseMs: u.readMs, validateMs: msSince(v0), validateCpuMs: threadCpuMs() - c0 }, cgroups);
  }

  /** Workloads of another node (spec.nodeName) are endpoints and mTLS destinations here, not cgroups or identities. */
  private localOf(workloads: ResolvedWorkload[]): ResolvedWorkload[] {
    return workloads.filter((w) => w.nodeName === undefined || w.nodeName === this.opts.nodeName);
  }

  /** Hands each part of a validated config to its owner: cgroups, each family's maps, identities. */
  private async apply(config: ResolvedConfig, revision: string, times: { parseMs?: number; validateMs: number; validateCpuMs: number }, cgroups?: Promise<string[]>): Promise<void> {
    const { log } = this;
    const t0 = performance.now();
    const c0 = threadCpuMs();
    try {
      const dp = this.dp();
      const local = this.localOf(config.workloads);
      // The workloads' cgroups before any map is written (made while the config was resolved, when it was): a
      // config whose cgroups cannot be made is rejected whole.
      if (this.opts.source.managesCgroups !== false) await (cgroups ?? dp.ensureCgroups(local.map((w) => w.cgroup)));
      let resolver: Promise<ConfigResolver> | undefined;
      const previous = this.resolver instanceof ConfigResolver ? this.resolver : undefined;
      const resolve = () => (resolver ??= ConfigResolver.create(this.opts.cgroupRoot, config.workloads, config.compiled.services, previous));
      const r = await dp.apply({ config, resolver: resolve });
      for (const w of r.warnings) log.warn(w.msg, { revision, ...w.fields });
      this.resolver = await resolve();
      this.identities?.apply(local);
      const writes = r.mapWrites;
      const generation = (this.applied?.generation ?? 0) + 1;
      // Only what status and meshctl read is kept: the parsed objects become garbage here.
      const { services, routes } = config.compiled;
      const warnings = r.warnings.map((w) => w.msg);
      this.applied = { generation, revision, at: new Date().toISOString(), workloads: config.workloads, services, routes, writes, warnings };
      this.agentMetrics.applied(generation);
      for (const rt of routes) {
        for (const p of rt.parents) {
          const bad = p.conditions.filter((c) => c.status !== 'True');
          if (bad.length) log.warn('route not fully accepted', { route: rt.route, parent: p.parentRef.name, conditions: bad });
        }
      }
      log.info('config applied', {
        generation,
        revision,
        services: config.routing.services.length,
        workloads: config.workloads.length,
        routes: config.routing.httpRoutes.length,
        ...r.log,
        mapWrites: writes,
        // The identity names metrics use: kept when the config names the same workloads, cgroups and endpoints.
        names: this.resolver === previous ? 'kept' : 'made',
        // ms: writing the kernel's tables; parseMs and validateMs come before it. cpuMs, validateCpuMs: the
        // event loop's thread's CPU time in each (what the wall times are, less the waits of a shared machine).
        ms: msSince(t0),
        cpuMs: threadCpuMs() - c0,
        ...times,
      });
    } catch (err) {
      this.reject(err as Error, revision);
    }
    collectGarbage();
  }

  private reject(err: Error, revision?: string): void {
    const problems = err instanceof ConfigError ? err.problems : ((err as { problems?: string[] }).problems ?? [err.message]);
    this.lastError = { at: new Date().toISOString(), revision, message: err.message, problems };
    this.agentMetrics.rejected();
    this.log.error(this.applied ? 'config rejected; the previous config stays in force' : 'config rejected', {
      revision,
      generation: this.applied?.generation ?? 0,
      problems,
    });
  }

  status() {
    return statusView({
      source: this.opts.source,
      listen: this.opts.listen,
      pinRoot: this.opts.pinRoot,
      cgroupRoot: this.opts.cgroupRoot,
      notReady: this.notReady(),
      metrics: { serving: this.tcp[0]?.server !== undefined, error: this.tcp[0]?.error },
      ...(this.tcp[1] ? { metricsOnly: { address: this.tcp[1].address, serving: this.tcp[1].server !== undefined, error: this.tcp[1].error } } : {}),
      applied: this.applied,
      lastError: this.lastError,
      datapath: this.datapath,
      dataplane: this.mtls?.supervisor.health(),
      mtlsLocalShortcut: this.mtls?.localShortcut,
    });
  }

  services() {
    return servicesView(this.applied);
  }

  workloads() {
    return workloadsView(this.opts.cgroupRoot, this.applied);
  }

  /** Stops serving and closes the agent's handles. The datapath keeps running from its pins. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.onStop();
    // A start-up in progress stops at its next step; then everything it opened is closed here.
    await this.starting?.catch(() => undefined);
    this.opts.source.stop();
    this.stats.stop();
    // An apply in progress finishes (its map writes are ordered for connections in flight); later ones are dropped.
    await this.applying;
    clearTimeout(this.mtlsProbe);
    this.mtls?.close();
    await this.identities?.close();
    for (const l of this.tcp) clearTimeout(l.retry);
    await Promise.all([closeServer(this.server), ...this.tcp.map((l) => closeServer(l.server))]);
    const had = this.datapath !== undefined;
    await this.datapath?.settle();
    this.datapath?.close();
    this.datapath = undefined;
    this.statsHandle?.close();
    this.lock?.release();
    this.lock = undefined;
    if (had) this.log.info('stopped; the datapath keeps running from its pins', { pinRoot: this.opts.pinRoot });
  }
}

/** How long requests in flight get to finish when the agent stops; then their connections are cut. */
const STOP_GRACE_MS = 2000;

/** Stops accepting, closes idle keep-alive connections now, and cuts the rest after STOP_GRACE_MS: a client
 *  that never finishes its request (or never reads the answer) cannot hold the stop for the server's
 *  headers timeout (60 s). */
async function closeServer(server: Server | undefined): Promise<void> {
  if (!server) return;
  const closed = new Promise<void>((r) => server.close(() => r()));
  server.closeIdleConnections();
  const cut = setTimeout(() => server.closeAllConnections(), STOP_GRACE_MS);
  try {
    await closed;
  } finally {
    clearTimeout(cut);
  }
}

/** A full collection after an apply: parsing and compiling a big config leaves tens of MB of garbage, and V8
 *  would otherwise keep the heap it grew to for a long while. `gc` exists when node runs with --expose-gc,
 *  which bin/mesh-agent.mjs turns on. Not above GC_MAX_HEAP of live heap: a forced full collection holds the
 *  event loop while it marks (hundreds of ms for a 50,000-service config), and a heap that big is what the
 *  config needs, not garbage; V8's incremental collector handles it. */
function collectGarbage(): void {
  if (process.memoryUsage().heapUsed > GC_MAX_HEAP) return;
  (globalThis as { gc?: () => void }).gc?.();
}
const GC_MAX_HEAP = 64 * 2 ** 20;
