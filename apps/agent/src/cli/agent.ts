/** mesh-agent: the node agent. Reads the config (file or directory of YAML), attaches the datapath to the
 *  mesh's cgroup subtree (adopting a previous agent's pins), applies config changes as they are saved. */
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';

import { trustDomainProblem } from '@mesh/mtls/spiffe-id';
import { SnapshotError } from '@mesh/split';

import { Agent, StartAborted } from '../app.js';
import { resolveConfig } from '../config/objects.js';
import { DEFAULT_MAX_CONFIG_BYTES, FileSource, loadConfig, type ParseOptions } from '../config/file.js';
import { kubepodsRoot, nodeName } from '../config/kubernetes/setup.js';
import type { ConfigSource } from '../config/source.js';
import { DEFAULT_STATE_DIR, DEFAULT_SVID_TTL, DEFAULT_TRUST_DOMAIN, MIN_AGENT_SVID_TTL_MS, parseDuration } from '../identity-defaults.js';
import { createLogger, type Level, LEVELS, type Logger } from '../log.js';
import { DEFAULT_DATAPLANE, defaultRunDir, MTLS_DEFAULTS } from '../mtls.js';
import { cgroup2Mount, DEFAULT_API, DEFAULT_PIN_ROOT, defaultApiSocket, defaultCgroupRoot, groupId, parseHostPort } from '../paths.js';
import { VERSION } from '../version.js';
import { EXIT, isLoopback, UsageError } from './exit.js';

/** The data plane's addresses on a one-machine mesh (Istio's ports: 15001 outbound, 15008 tunnel; 127.0.0.6 is
 *  the source of Istio's inbound passthrough). */

/** --mtls-node NAME=IP:PORT, repeated → tunnel by node name. */
function peers(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of list) {
    const m = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)=(.+)$/.exec(p);
    const hp = m ? /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(m[3]!) : null;
    if (!m || !hp || isIP(hp[1] ?? hp[2]!) === 0 || Number(hp[3]) < 1 || Number(hp[3]) > 65535) throw new UsageError(`--mtls-node must be NAME=IP:PORT (a node name and its tunnel listener), got ${JSON.stringify(p)}`);
    if (out[m[1]!] !== undefined) throw new UsageError(`--mtls-node: node ${m[1]} given twice`);
    out[m[1]!] = m[3]!;
  }
  return out;
}

/** "IP" or "IPv4,IPv6" → one address per family. */
function inboundSource(s: string): { ipv4?: string; ipv6?: string } {
  const out: { ipv4?: string; ipv6?: string } = {};
  for (const a of s.split(',')) {
    const fam = isIP(a);
    const key = fam === 4 ? 'ipv4' : fam === 6 ? 'ipv6' : undefined;
    if (!key || out[key] !== undefined) throw new UsageError(`--mtls-inbound-source must be one IP address per family (IPv4,IPv6), got ${JSON.stringify(s)}`);
    out[key] = a;
  }
  return out;
}

const TUNNEL_MODES = ['auto', 'pooled', 'dedicated'] as const;
type TunnelMode = (typeof TUNNEL_MODES)[number];

/** --mtls-tunnel-mode, with --mtls-pool as its shorthand for pooled. */
function tunnelMode(mode: string | undefined, pool: boolean): TunnelMode {
  if (mode !== undefined && !(TUNNEL_MODES as readonly string[]).includes(mode))
    throw new UsageError(`--mtls-tunnel-mode must be one of ${TUNNEL_MODES.join(', ')}, got ${JSON.stringify(mode)}`);
  if (pool && mode !== undefined && mode !== 'pooled') throw new UsageError(`--mtls-pool is --mtls-tunnel-mode pooled: not with --mtls-tunnel-mode ${mode}`);
  return pool ? 'pooled' : ((mode ?? 'auto') as TunnelMode);
}

/** The data plane's "pool": absent lets it choose (pooled unless kTLS takes the record layer). */
const poolOption = (mode: TunnelMode) => (mode === 'auto' ? {} : { pool: mode === 'pooled' });

export const AGENT_HELP = `Usage: mesh-agent --config PATH [options]
       mesh-agent --kubeconfig PATH | --kubernetes [--node-name NAME] [options]

Runs the mesh on this machine: attaches the split and metrics programs to the mesh's cgroup v2 subtree,
applies the Services, EndpointSlices, HTTPRoutes and Workloads of PATH, and re-applies them when PATH changes.
A config that fails validation is rejected whole; the previous one stays in force.

Options:
  --config PATH        a YAML file, or a directory of *.yaml/*.yml/*.json files (multi-document)
  --kubeconfig PATH    read the objects from a Kubernetes API server instead (docs/kubernetes.md)
  --kubernetes         the same with in-cluster config (the pod's service account)
  --node-name NAME     the node whose pods are workloads here; with --config, Workloads whose spec.nodeName
                       names another node run there                          [$NODE_NAME or host name]
  --api-socket PATH    unix socket of the control API (meshctl), mode 0660 [/run/mesh/<pin root's name>.sock]
  --api-group GROUP    group that may use the control socket besides root                       [root]
  --listen HOST:PORT   loopback address of /metrics, /healthz, /readyz and the page (read-only) [${DEFAULT_API}]
  --metrics-listen IP:PORT  /metrics alone (nothing else) on any address, e.g. the node's for a
                       Prometheus that scrapes it (deploy/kubernetes: $(HOST_IP):15090)          [none]
  --no-ui              do not serve the page (the service graph, / and /graph.json; docs/ui.md)
  --pin-root DIR       bpffs directory for the mesh's pinned maps and links                    [${DEFAULT_PIN_ROOT}]
  --cgroup-root DIR    cgroup v2 directory whose subtree is the mesh        [<cgroup2 mount>/mesh]
                       (with Kubernetes: the kubepods directory, kubepods.slice or kubepods)
  --log-level LEVEL    debug, info, warn or error                                                 [info]
  --bpf-stats          keep the kernel's BPF run-time statistics on (shown by meshctl status)
  --max-services N     capacity of the service table      [from the first config: 2x, at least 1024, a power of 2]
  --max-endpoints N    capacity of the endpoint table     [from the first config: 2x, at least 4096, a power of 2]
  --max-connections N  live connections and UDP flows with per-connection state                  [16384]
  --max-peers N        capacity of the metrics' known-peer table  [from the first config: 2x, at least 4096, a power of 2]
  --state-dir DIR      the agent's state: the built-in CA's root (0600)                  [${DEFAULT_STATE_DIR}]
  --trust-domain NAME  SPIFFE trust domain of the workloads' identities                  [${DEFAULT_TRUST_DOMAIN}]
  --ca MODE            builtin (a root in --state-dir), external (--ca-dir) or none (no identities) [builtin]
  --ca-dir DIR         external CA: cert-manager Secret layout (tls.crt, tls.key, ca.crt)
  --svid-ttl DURATION  lifetime of workload certificates, at least 30s (s, m, h)                 [${DEFAULT_SVID_TTL}]
  --svid-dir DIR       the SVID files the data plane reads (a tmpfs)    [/run/mesh/<pin root's name>/svid]
  --mtls               transparent mTLS for workloads labelled mesh.dev/mtls=enabled (or
                       istio.io/dataplane-mode=ambient): runs the data plane (docs/mtls.md)
  --mtls-outbound IP:PORT  the data plane's outbound listener, reachable from workloads  [${MTLS_DEFAULTS.outbound}]
  --mtls-tunnel IP:PORT    its tunnel listener, reachable from other nodes             [${MTLS_DEFAULTS.tunnel}]
  --mtls-inbound-source IP[,IP6]  the source of its connections to workloads: the only
                       source a STRICT port takes; one address per family             [${MTLS_DEFAULTS.inboundSource}]
  --mtls-stats IP:PORT     its Prometheus stats endpoint                               [${MTLS_DEFAULTS.stats}]
  --mtls-tunnel-mode MODE  how outbound connections cross to other data planes: pooled (streams over
                       reused TLS connections: no handshake per connection; no kTLS), dedicated (one TLS
                       connection each: what kTLS needs) or auto (pooled unless the kernel has kTLS)  [auto]
  --mtls-pool          the same as --mtls-tunnel-mode pooled
  --no-mtls-local-shortcut  same-node connections between enrolled workloads go through the tunnel too
                       (by default the pairs the policies allow connect directly, plaintext never leaving
                       the host: docs/mtls.md, "Same-node connections")
  --mtls-dataplane-external  the data plane is started beside the agent by something else (a container of
                       the agent's pod sharing its process namespace and --run-dir): found, reloaded and
                       watched, never started or stopped (docs/kubernetes.md, "mTLS")
  --mtls-node NAME=IP:PORT another node's tunnel listener, for Workloads with spec.nodeName NAME (repeatable)
  --mtls-max-workloads N, --mtls-max-ports N, --mtls-max-destinations N  capacity of mtls_enrolled, mtls_ports,
                           mtls_dests  [from the first config: 2x, at least 1024 / 4096 / 4096, a power of 2]
  --mtls-max-local-pairs N  capacity of mtls_pairs (allowed enrolled workload × destination pairs of this
                           node)  [from the first config: 2x every pair, at least 4096, at most 65536, a power of 2]
  --dataplane PATH     the mesh-dataplane executable            [native/dataplane/build/mesh-dataplane]
  --run-dir DIR        the data plane's config, pid file and log          [/run/mesh/<pin root's name>-dataplane]
  --allow-empty-config apply a config file that holds no objects (it deletes the services it held)
  --max-config-bytes N largest config file read                                            [${DEFAULT_MAX_CONFIG_BYTES}]
  --check              validate the config, print what it holds, and exit
  --version            print the version
  -h, --help           this text

Exit status: 0 stopped by SIGTERM/SIGINT (the datapath keeps running), 1 failure, 2 usage, 3 invalid config.
Logs: one JSON object per line on stderr.`;

export async function main(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      options: {
        config: { type: 'string' },
        kubeconfig: { type: 'string' },
        kubernetes: { type: 'boolean', default: false },
        'node-name': { type: 'string' },
        listen: { type: 'string', default: DEFAULT_API },
        'metrics-listen': { type: 'string' },
        'no-ui': { type: 'boolean', default: false },
        'api-socket': { type: 'string' },
        'api-group': { type: 'string' },
        'pin-root': { type: 'string', default: DEFAULT_PIN_ROOT },
        'cgroup-root': { type: 'string' },
        'log-level': { type: 'string', default: 'info' },
        'bpf-stats': { type: 'boolean', default: false },
        'max-services': { type: 'string' },
        'max-endpoints': { type: 'string' },
        'max-connections': { type: 'string' },
        'max-peers': { type: 'string' },
        'state-dir': { type: 'string', default: DEFAULT_STATE_DIR },
        'trust-domain': { type: 'string', default: DEFAULT_TRUST_DOMAIN },
        ca: { type: 'string', default: 'builtin' },
        'ca-dir': { type: 'string' },
        'svid-ttl': { type: 'string', default: DEFAULT_SVID_TTL },
        'svid-dir': { type: 'string' },
        'allow-empty-config': { type: 'boolean', default: false },
        mtls: { type: 'boolean', default: false },
        'mtls-outbound': { type: 'string', default: MTLS_DEFAULTS.outbound },
        'mtls-tunnel': { type: 'string', default: MTLS_DEFAULTS.tunnel },
        'mtls-inbound-source': { type: 'string', default: MTLS_DEFAULTS.inboundSource },
        'mtls-stats': { type: 'string', default: MTLS_DEFAULTS.stats },
        'mtls-tunnel-mode': { type: 'string' },
        'mtls-pool': { type: 'boolean', default: false },
        'no-mtls-local-shortcut': { type: 'boolean', default: false },
        'mtls-max-local-pairs': { type: 'string' },
        'mtls-dataplane-external': { type: 'boolean', default: false },
        'mtls-node': { type: 'string', multiple: true },
        'mtls-max-workloads': { type: 'string' },
        'mtls-max-ports': { type: 'string' },
        'mtls-max-destinations': { type: 'string' },
        dataplane: { type: 'string' },
        'run-dir': { type: 'string' },
        'max-config-bytes': { type: 'string' },
        check: { type: 'boolean', default: false },
        version: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }).values;
    if (args.help) {
      process.stdout.write(AGENT_HELP + '\n');
      return EXIT.OK;
    }
    if (args.version) {
      process.stdout.write(`mesh-agent ${VERSION}\n`);
      return EXIT.OK;
    }
    const sources = [args.config, args.kubeconfig, args.kubernetes || undefined].filter((x) => x !== undefined).length;
    if (sources === 0) throw new UsageError('--config is required (or, on Kubernetes, --kubeconfig PATH or --kubernetes)');
    if (sources > 1) throw new UsageError('give one of --config, --kubeconfig and --kubernetes');
    if (args.check && !args.config) throw new UsageError('--check validates a --config');
    if (!LEVELS.includes(args['log-level'] as Level)) throw new UsageError(`--log-level must be one of ${LEVELS.join(', ')}`);
    const { host } = parseHostPort(args.listen!);
    if (!isLoopback(host)) throw new UsageError(`--listen must be a loopback address (127.0.0.0/8, ::1 or localhost), got ${host}`);
    if (args['metrics-listen'] !== undefined) {
      const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(args['metrics-listen']);
      if (!m || isIP(m[1] ?? m[2]!) === 0 || Number(m[3]) < 1 || Number(m[3]) > 65535) throw new UsageError(`--metrics-listen must be IP:PORT (an IPv6 address in brackets), got ${JSON.stringify(args['metrics-listen'])}`);
    }
    if (args['api-group'] !== undefined) groupId(args['api-group']);
    if (args['api-socket'] !== undefined && !args['api-socket'].startsWith('/')) throw new UsageError('--api-socket must be an absolute path');
    for (const f of ['max-services', 'max-endpoints', 'max-connections', 'max-peers', 'max-config-bytes'] as const) {
      if (args[f] !== undefined && !/^[1-9]\d*$/.test(args[f]!)) throw new UsageError(`--${f} must be a positive integer`);
    }
    if (args['max-connections'] !== undefined && Number(args['max-connections']) > 2 ** 24) throw new UsageError('--max-connections must be at most 16777216');
    if (args['max-peers'] !== undefined && Number(args['max-peers']) > 2 ** 24) throw new UsageError('--max-peers must be at most 16777216');
    const tdProblem = trustDomainProblem(args['trust-domain']!);
    if (tdProblem) throw new UsageError(`--trust-domain: ${tdProblem}`);
    if (args.ca !== 'builtin' && args.ca !== 'external' && args.ca !== 'none') throw new UsageError(`--ca must be builtin, external or none, got ${JSON.stringify(args.ca)}`);
    if (args.ca === 'external' && !args['ca-dir']) throw new UsageError('--ca external needs --ca-dir (a directory with tls.crt, tls.key and ca.crt)');
    if (args.ca !== 'external' && args['ca-dir']) throw new UsageError('--ca-dir is for --ca external');
    if (args.mtls && args.ca === 'none') throw new UsageError('--mtls needs workload identities: not with --ca none');
    if (args['mtls-dataplane-external'] && !args.mtls) throw new UsageError('--mtls-dataplane-external is for --mtls');
    for (const f of ['mtls-outbound', 'mtls-tunnel', 'mtls-stats'] as const) {
      const { host: h } = parseHostPort(args[f]!);
      if (isIP(h) === 0) throw new UsageError(`--${f} must be IP:PORT, got ${JSON.stringify(args[f])}`);
    }
    tunnelMode(args['mtls-tunnel-mode'], args['mtls-pool']!);
    inboundSource(args['mtls-inbound-source']!);
    peers(args['mtls-node'] ?? []);
    for (const f of ['mtls-max-workloads', 'mtls-max-ports', 'mtls-max-destinations', 'mtls-max-local-pairs'] as const) {
      if (args[f] !== undefined && (!/^[1-9]\d*$/.test(args[f]!) || Number(args[f]) > 2 ** 24)) throw new UsageError(`--${f} must be a positive integer, at most 16777216`);
    }
    const ttl = parseDuration(args['svid-ttl']!);
    if (ttl === undefined || ttl < MIN_AGENT_SVID_TTL_MS) throw new UsageError(`--svid-ttl must be a duration of at least 30s (e.g. 90s, 30m, 24h), got ${JSON.stringify(args['svid-ttl'])}`);
  } catch (err) {
    process.stderr.write(`mesh-agent: ${(err as Error).message}\n\n${AGENT_HELP}\n`);
    return EXIT.USAGE;
  }

  const log = createLogger({ level: args['log-level'] as Level });
  const parse: ParseOptions = {
    allowEmpty: args['allow-empty-config'],
    maxFileBytes: args['max-config-bytes'] ? Number(args['max-config-bytes']) : undefined,
  };
  if (args.check) {
    try {
      const cfg = resolveConfig(loadConfig(args.config!, parse));
      process.stdout.write(
        `${args.config}: valid: ${cfg.routing.services.length} services, ${cfg.routing.httpRoutes.length} routes, ${cfg.workloads.length} workloads, ` +
          `${cfg.routing.endpointSlices.length} endpoint slices\n`,
      );
      return EXIT.OK;
    } catch (err) {
      process.stderr.write(`mesh-agent: invalid config: ${(err as Error).message}\n`);
      return err instanceof SnapshotError ? EXIT.CONFIG : EXIT.FAILURE;
    }
  }

  let cgroupRoot: string;
  try {
    cgroupRoot = args['cgroup-root'] ?? (args.config ? defaultCgroupRoot() : kubepodsRoot(cgroup2Mount()));
  } catch (err) {
    log.error('cannot find the cgroup v2 hierarchy', { err });
    return EXIT.FAILURE;
  }
  let source: ConfigSource;
  try {
    source = args.config
      ? new FileSource(args.config, {
          ...parse,
          onWaiting: (writers) => log.info('a config file is still being written; waiting for its writer to finish', { writers }),
        })
      : await kubernetesSource({ kubeconfig: args.kubeconfig, nodeName: nodeName(args['node-name']), cgroupRoot, log, remotePods: args.mtls === true });
  } catch (err) {
    log.error('cannot set up the Kubernetes source', { err });
    process.stderr.write(`mesh-agent: ${(err as Error).message}\n`);
    return EXIT.FAILURE;
  }
  const agent = new Agent({
    source,
    listen: args.listen!,
    ...(args['metrics-listen'] !== undefined && { metricsListen: args['metrics-listen'] }),
    apiSocket: args['api-socket'] ?? defaultApiSocket(args['pin-root']),
    nodeName: args['node-name'] ?? process.env.NODE_NAME ?? hostname(),
    apiGid: args['api-group'] !== undefined ? groupId(args['api-group']) : undefined,
    pinRoot: args['pin-root']!,
    cgroupRoot,
    log,
    bpfStats: args['bpf-stats'],
    ui: !args['no-ui'],
    maxServices: args['max-services'] ? Number(args['max-services']) : undefined,
    maxEndpoints: args['max-endpoints'] ? Number(args['max-endpoints']) : undefined,
    maxConnections: args['max-connections'] ? Number(args['max-connections']) : undefined,
    maxPeers: args['max-peers'] ? Number(args['max-peers']) : undefined,
    identity: args.ca === 'none' ? undefined : {
      stateDir: args['state-dir']!,
      trustDomain: args['trust-domain']!,
      ca: args.ca === 'external' ? { mode: 'external', dir: args['ca-dir']! } : { mode: 'builtin' },
      svidTtlMs: parseDuration(args['svid-ttl']!)!,
      svidDir: args['svid-dir'],
    },
    mtls: args.mtls
      ? {
          outbound: args['mtls-outbound']!,
          tunnel: args['mtls-tunnel']!,
          stats: args['mtls-stats']!,
          inboundSource: inboundSource(args['mtls-inbound-source']!),
          dataplane: args.dataplane ?? DEFAULT_DATAPLANE,
          runDir: args['run-dir'] ?? defaultRunDir(args['pin-root']!),
          peers: peers(args['mtls-node'] ?? []),
          ...poolOption(tunnelMode(args['mtls-tunnel-mode'], args['mtls-pool']!)),
          localShortcut: !args['no-mtls-local-shortcut'],
          ...(args['mtls-max-local-pairs'] !== undefined && { maxLocalPairs: Number(args['mtls-max-local-pairs']) }),
          ...(args['mtls-dataplane-external'] && { externalDataplane: true }),
          ...(args['mtls-max-workloads'] !== undefined && { maxWorkloads: Number(args['mtls-max-workloads']) }),
          ...(args['mtls-max-ports'] !== undefined && { maxPorts: Number(args['mtls-max-ports']) }),
          ...(args['mtls-max-destinations'] !== undefined && { maxDestinations: Number(args['mtls-max-destinations']) }),
        }
      : undefined,
  });
  log.info('starting', { version: VERSION, pid: process.pid, config: args.config ?? source.description });
  // A hangup (the terminal that started the agent closed, `kill -HUP`, a reload) must not stop the datapath's
  // owner, and there is nothing to reload: config files are re-read as they change (docs/agent.md).
  process.on('SIGHUP', () => log.info('SIGHUP ignored: config files are re-read as they change'));
  // Signals are handled from the start: a SIGTERM while the agent waits for its config or loads the datapath
  // stops it cleanly (lock and socket released) instead of killing it between two steps.
  let stopped: Promise<number> | undefined;
  let signalled: (code: Promise<number>) => void = () => undefined;
  const stoppedBySignal = new Promise<number>((resolve) => (signalled = (code) => void code.then(resolve)));
  const stop = (signal: string) => {
    if (stopped) return;
    log.info('signal received; stopping', { signal });
    stopped = agent.stop().then(
      () => EXIT.OK,
      (err) => {
        log.error('stop failed', { err });
        return EXIT.FAILURE;
      },
    );
    signalled(stopped);
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  try {
    await agent.start();
  } catch (err) {
    if (err instanceof StartAborted) return stoppedBySignal;
    const invalid = err instanceof SnapshotError; // the agent's ConfigError is one
    log.error(invalid ? 'invalid config; nothing was changed' : 'start-up failed', {
      err,
      problems: (err as { problems?: string[] }).problems,
    });
    if (invalid) process.stderr.write(`mesh-agent: invalid config: ${(err as Error).message}\n`);
    await agent.stop().catch(() => undefined);
    return invalid ? EXIT.CONFIG : EXIT.FAILURE;
  }
  return stoppedBySignal;
}

/** The Kubernetes source, loaded only when asked for: an agent reading a config file does not load its code. */
async function kubernetesSource(o: { kubeconfig: string | undefined; nodeName: string; cgroupRoot: string; log: Logger; remotePods: boolean }): Promise<ConfigSource> {
  const { KubernetesSource, loadKubeConfig } = await import('../config/kubernetes/index.js');
  return new KubernetesSource({
    kubeConfig: loadKubeConfig(o.kubeconfig ? { kubeconfig: o.kubeconfig } : { inCluster: true }),
    nodeName: o.nodeName,
    cgroupRoot: o.cgroupRoot,
    log: o.log,
    // mTLS reaches other nodes' pods through their nodes' tunnels: it needs those pods and their nodes' addresses.
    remotePods: o.remotePods,
  });
}
