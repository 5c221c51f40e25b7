/** meshctl: the mesh's command line. Reads the agent's control API on its unix socket (root's, checked before
 *  use); `run` starts a command inside a workload's cgroup, `uninstall` removes the datapath from the kernel.
 *  Only uninstall loads the native addon (@mesh/bpf): the commands that talk to the agent work without it. */
import { spawn } from 'node:child_process';
import { closeSync, constants, existsSync, fstatSync, lstatSync, openSync, rmdirSync, rmSync, statfsSync } from 'node:fs';
import { request } from 'node:http';
import { dirname, isAbsolute, join, posix } from 'node:path';
import { parseArgs } from 'node:util';

import { DEFAULT_API_SOCKET, DEFAULT_PIN_ROOT, defaultApiSocket } from '../api-socket.js';
import type { PairStat } from '../stats.js';
import { VERSION } from '../version.js';
import type { CertsAnswer, ServicesView, StatusView, StatView, Wire, WorkloadsView } from '../views.js';
import { EXIT, UsageError } from './exit.js';
import { table } from './table.js';
import { edgesTable, top, topFrame } from './top.js';

const COMMANDS: Record<string, { summary: string; usage: string; help: string }> = {
  run: {
    summary: 'start a command inside a workload (its cgroup), so the mesh serves its sockets',
    usage: 'meshctl run --workload NAME [--namespace NS] -- COMMAND [ARGS...]',
    help: `The command joins the workload's cgroup before it starts and gets MESH_WORKLOAD, MESH_NAMESPACE and
MESH_ADDRESS (the workload's first address) in its environment. meshctl forwards SIGINT, SIGTERM and SIGHUP
to it and exits with its status (128+N when it was killed by signal N).
The cgroup is resolved by meshctl under the mesh's cgroup root (a cgroup2 directory): a path outside it, a
symbolic link anywhere on the way, or a cgroup.procs on another filesystem is refused and nothing is written.`,
  },
  status: {
    summary: 'the agent: readiness, programs and links, map fill, config generation, last error',
    usage: 'meshctl status [--json]',
    help: 'Exit status 0 when the agent is ready and its last config was applied, 3 when the last config was rejected.',
  },
  services: {
    summary: 'service addresses with their backends, weights and endpoints',
    usage: 'meshctl services [--json]',
    help: 'What the agent installed in the kernel from its config, and the status of each HTTPRoute.',
  },
  stat: {
    summary: 'request rate, success rate and p50/p95/p99 latency per workload pair and protocol',
    usage: 'meshctl stat [--window SECONDS] [--json]',
    help: `Read from the kernel's aggregates by the agent over the last SECONDS (default 10, at most 60).
client rows are measured at the caller's sockets, server rows at the callee's. One row per protocol
(HTTP/1.1, HTTP/2, gRPC), and for gRPC per method (RPC). Success: HTTP responses that are not 5xx (an HTTP/2
stream reset before its end fails); gRPC calls that ended with grpc-status OK.`,
  },
  top: {
    summary: 'the busiest workload pairs, live, fitted to the terminal (q quits)',
    usage: 'meshctl top [--interval SECONDS] [--window SECONDS]',
    help: `The rows of meshctl stat, busiest first, redrawn every --interval (default 2) and when the terminal is
resized; columns and long names give way when it is narrow. q or Ctrl-C quits. Without a terminal it prints
one frame and exits.`,
  },
  edges: {
    summary: 'who talks to whom: each caller, callee and Service, with their identities',
    usage: 'meshctl edges [--window SECONDS] [--json]',
    help: `The pairs that sent requests in the last SECONDS (default 60), and each side's SPIFFE ID when workload
identities are on ('-' otherwise).`,
  },
  certs: {
    summary: "workload identities: each workload's SPIFFE ID, certificate serial, not-after, next renewal, issuer",
    usage: 'meshctl certs [--json]',
    help: `STATE is valid, pending (not issued yet) or expired (the workload is without identity: the CA has not
signed a new certificate since the last one expired). Exit status 0 when no workload is without identity, 1 otherwise.`,
  },
  ca: {
    summary: "the built-in CA's root rotation, one step at a time (agent stopped): status, add-root, switch-root, remove-old-root",
    usage: 'meshctl ca status|add-root|switch-root|remove-old-root [--state-dir DIR] [--trust-domain NAME] [--force]',
    help: `Works on the files of --state-dir (default /var/lib/mesh). The agent holds its CA in memory: stop it before a
step (the datapath keeps running; at its next start it reads the new state and issues every SVID afresh). Refuses
while an agent with this state directory answers on --api-socket, unless --force. The steps, in order (docs/mtls.md):
add-root (the bundle gets a new root; the old one still signs), switch-root (the new root signs; the old one stays
in the bundle), remove-old-root (refused until the last leaf the old root signed has expired).`,
  },
  uninstall: {
    summary: 'detach every program of the mesh, remove its pins, its empty cgroups and its SVID files',
    usage: 'meshctl uninstall [--pin-root DIR] [--cgroup-root DIR] [--svid-dir DIR] [--force]',
    help: `The SVID files (private keys) under --svid-dir [/run/mesh/<pin root's name>/svid] are removed; the CA's
state directory is kept. Refuses while an agent answers on the pin root's control socket (it owns the datapath; stop it first)
unless --force.
Exit status 0 when nothing of the mesh is left; 1 when cgroups still hold processes (listed).`,
  },
  version: { summary: 'print the version', usage: 'meshctl version', help: '' },
};

export const MESHCTL_HELP = `Usage: meshctl [--api-socket PATH] COMMAND [options]

Commands:
${Object.entries(COMMANDS)
  .map(([n, c]) => `  ${n.padEnd(10)} ${c.summary}`)
  .join('\n')}

Global options:
  --api-socket PATH   the agent's control socket [${DEFAULT_API_SOCKET}, or $MESH_API_SOCKET]
  -h, --help          help; 'meshctl COMMAND --help' for one command

Exit status: 0 ok, 1 failure, 2 usage, 3 config rejected, 4 agent unreachable, 5 not found.`;

const commandHelp = (n: string) => `Usage: ${COMMANDS[n]!.usage}\n\n${COMMANDS[n]!.summary}.\n${COMMANDS[n]!.help ? `\n${COMMANDS[n]!.help}\n` : ''}`;

class Unreachable extends Error {}
/** A check failed before anything was done (a socket or cgroup not to be trusted). */
class Refused extends Error {}

/**
 * The control socket is the agent's only when root made it in a directory no one else can write to: a socket
 * another user made (a fake agent) is refused before meshctl sends it anything. meshctl run as another user
 * also accepts its own.
 */
function checkSocket(path: string): void {
  const me = process.geteuid!();
  const trusted = (uid: number) => uid === 0 || uid === me;
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Unreachable(
      code === 'ENOENT'
        ? `no agent socket at ${path}; is mesh-agent running? (--api-socket, $MESH_API_SOCKET)`
        : `cannot reach the agent at ${path} (${code ?? (err as Error).message})`,
    );
  }
  if (!st.isSocket()) throw new Refused(`${path} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a socket'}: refusing to talk to it`);
  if (!trusted(st.uid)) throw new Refused(`${path} is owned by uid ${st.uid}, not root: refusing to talk to it (the agent's control socket is root's)`);
  const dir = lstatSync(dirname(path));
  const othersWrite = (dir.mode & 0o022) !== 0 && (dir.mode & 0o1000) === 0;
  if (!dir.isDirectory() || !trusted(dir.uid) || othersWrite) {
    throw new Refused(`${dirname(path)} is not a directory only root can write to: refusing ${path} (anyone could swap the socket)`);
  }
}

async function get<T>(socketPath: string, path: string): Promise<T> {
  checkSocket(socketPath);
  return new Promise<T>((resolve, reject) => {
    const req = request({ socketPath, path, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        if (res.statusCode !== 200) return reject(new Error(`agent answered ${res.statusCode} for ${path}: ${text.trim()}`));
        try {
          resolve(JSON.parse(text) as T);
        } catch {
          reject(new Error(`agent sent a non-JSON answer for ${path}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Unreachable(`no answer from the agent at ${socketPath} within 5 s`)));
    req.on('error', (err: NodeJS.ErrnoException) =>
      reject(
        err instanceof Unreachable
          ? err
          : err.code === 'EACCES'
            ? new Unreachable(`cannot connect to the agent at ${socketPath}: permission denied (EACCES): the control socket is for root and the group given to mesh-agent --api-group`)
            : new Unreachable(`cannot reach the agent at ${socketPath} (${err.code ?? err.message}); is mesh-agent running? (--api-socket, $MESH_API_SOCKET)`),
      ),
    );
    req.end();
  });
}

const fmtMs = (v: number | undefined) => (v === undefined ? '-' : v < 10 ? `${v.toFixed(2)}ms` : `${v.toFixed(1)}ms`);
const fmtPct = (v: number | undefined) => (v === undefined ? '-' : `${(v * 100).toFixed(2)}%`);

export function formatStat(pairs: PairStat[]): string {
  if (pairs.length === 0) return 'no requests seen yet\n';
  return table([
    ['SIDE', 'SOURCE', 'DESTINATION', 'SERVICE', 'PROTOCOL', 'RPC', 'REQS', 'RPS', 'SUCCESS', 'P50', 'P95', 'P99'],
    ...pairs.map((p) => [p.direction, p.source, p.destination, p.service || '-', p.protocol, p.rpc || '-', String(p.requests), p.rps.toFixed(1), fmtPct(p.successRate), fmtMs(p.p50Ms), fmtMs(p.p95Ms), fmtMs(p.p99Ms)]),
  ]);
}

/** The agent's documents as meshctl reads them (bigints arrive as strings). */
type Status = Wire<StatusView>;
type Services = Wire<ServicesView>;
type Workloads = Wire<WorkloadsView>;
type Certs = Wire<CertsAnswer>;

const CGROUP2_SUPER_MAGIC = 0x63677270;

/**
 * Opens `<root>/<rel>/cgroup.procs` for writing, never through a symbolic link: `root` must be an absolute
 * path with no symbolic link in it and a cgroup2 directory, `rel` a plain relative path (no `..`), every
 * directory on the way a real directory on the same filesystem, cgroup.procs opened with O_NOFOLLOW and checked
 * to be on that filesystem. Throws Refused naming what is wrong; nothing is written.
 */
export function openCgroupProcs(root: string, rel: string): number {
  if (!isAbsolute(root) || posix.normalize(root) !== root) throw new Refused(`the mesh's cgroup root ${JSON.stringify(root)} is not a normalized absolute path`);
  const parts = rel.split('/');
  if (rel === '' || isAbsolute(rel) || parts.some((p) => p === '' || p === '.' || p === '..')) {
    throw new Refused(`the workload's cgroup ${JSON.stringify(rel)} is not a path below the mesh's cgroup root ${root}`);
  }
  let at = '/';
  for (const p of root.split('/').filter(Boolean)) {
    at = join(at, p);
    const st = lstatSync(at);
    if (st.isSymbolicLink()) throw new Refused(`${at} is a symbolic link: refusing to resolve the mesh's cgroup root ${root} through it`);
    if (!st.isDirectory()) throw new Refused(`${at} is not a directory (on the way to the mesh's cgroup root ${root})`);
  }
  if (statfsSync(root).type !== CGROUP2_SUPER_MAGIC) throw new Refused(`the mesh's cgroup root ${root} is not on a cgroup2 filesystem`);
  const dev = lstatSync(root).dev;
  let foreign: string | undefined;
  for (const p of parts) {
    at = join(at, p);
    const st = lstatSync(at, { throwIfNoEntry: false });
    if (!st) throw new Refused(`${at} does not exist: is the workload's cgroup made? (the agent makes it when it applies the config)`);
    if (st.isSymbolicLink()) throw new Refused(`${at} is a symbolic link: refusing to resolve a workload's cgroup through it`);
    if (!st.isDirectory()) throw new Refused(`${at} is not a directory: refusing it as a workload's cgroup`);
    if (st.dev !== dev) foreign ??= at;
  }
  const procs = join(at, 'cgroup.procs');
  if (lstatSync(procs, { throwIfNoEntry: false })?.isSymbolicLink()) throw new Refused(`${procs} is a symbolic link: refusing to write through it`);
  if (foreign) throw new Refused(`${foreign} is not on the mesh's cgroup2 filesystem (something is mounted there): refusing it as a workload's cgroup`);
  let fd: number;
  try {
    // O_NOFOLLOW: a link made between the check above and this open is refused all the same.
    fd = openSync(procs, constants.O_WRONLY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Refused(code === 'ELOOP' ? `${procs} is a symbolic link: refusing to write through it` : `cannot open ${procs} (${code ?? (err as Error).message})`);
  }
  const st = fstatSync(fd);
  if (!st.isFile() || st.dev !== dev) {
    closeSync(fd);
    throw new Refused(`${procs} is not the cgroup2 filesystem's cgroup.procs: refusing to write to it`);
  }
  return fd;
}

async function certs(agent: string, json: boolean): Promise<number> {
  const c = await get<Certs>(agent, '/v1/certs');
  if (json) process.stdout.write(JSON.stringify(c, null, 2) + '\n');
  else if ('error' in c) process.stdout.write(`${c.error}\n`);
  else {
    const phase = c.ca.rotationPhase && c.ca.rotationPhase !== 'none' ? `, root rotation: ${c.ca.rotationPhase}` : '';
    process.stdout.write(`trust domain  ${c.trustDomain}\nca            ${c.ca.mode}${c.ca.dir ? ` (${c.ca.dir})` : ''}, SVID TTL ${c.ca.svidTtlSeconds}s${phase}\n`);
    process.stdout.write(`bundle        ${c.bundle.map((r) => `${r.subject} (serial ${r.serial}, until ${r.notAfter})`).join('\n              ') || '(no roots)'}\n\n`);
    process.stdout.write(
      table([
        ['WORKLOAD', 'SPIFFE ID', 'STATE', 'SERIAL', 'NOT AFTER', 'NEXT RENEWAL', 'ISSUER'],
        ...c.workloads.map((w) => [w.workload, w.id, w.state, w.serial ?? '-', w.notAfter ?? '-', w.nextRenewal ?? '-', w.issuer ?? '-']),
      ]),
    );
    const errs = c.workloads.filter((w) => w.lastError);
    if (errs.length) process.stdout.write(`\nlast errors:\n${errs.map((w) => `  ${w.workload}: ${w.lastError}`).join('\n')}\n`);
  }
  return 'workloads' in c && c.workloads.some((w) => w.state === 'expired') ? EXIT.FAILURE : EXIT.OK;
}

async function run(agent: string, argv: string[]): Promise<number> {
  const dash = argv.indexOf('--');
  const { values } = parseArgs({ args: dash < 0 ? argv : argv.slice(0, dash), options: { workload: { type: 'string' }, namespace: { type: 'string' } }, strict: true });
  const cmd = dash < 0 ? [] : argv.slice(dash + 1);
  if (!values.workload) throw new UsageError('--workload is required');
  if (cmd.length === 0) throw new UsageError('give the command after --, e.g. meshctl run --workload web -- node server.js');
  const { workloads, cgroupRoot: root } = await get<Workloads>(agent, '/v1/workloads');
  const matches = workloads.filter((w) => w.name === values.workload && (values.namespace === undefined || w.namespace === values.namespace));
  if (matches.length !== 1) {
    process.stderr.write(
      matches.length === 0
        ? `meshctl: no workload ${values.namespace ? `${values.namespace}/` : ''}${values.workload} in the agent's config (known: ${workloads.map((w) => `${w.namespace}/${w.name}`).join(', ') || 'none'})\n`
        : `meshctl: workload ${values.workload} exists in several namespaces (${matches.map((w) => w.namespace).join(', ')}): give --namespace\n`,
    );
    return EXIT.NOT_FOUND;
  }
  const w = matches[0]!;
  const procs = openCgroupProcs(root, w.cgroup);
  // The child joins the cgroup itself, through the descriptor meshctl checked, then becomes the command:
  // meshctl is never moved.
  let child;
  try {
    child = spawn('/bin/sh', ['-c', 'echo $$ >&3 || exit 126; exec 3>&-; exec "$@"', 'meshctl-run', ...cmd], {
      stdio: ['inherit', 'inherit', 'inherit', procs],
      env: { ...process.env, MESH_WORKLOAD: w.name, MESH_NAMESPACE: w.namespace, MESH_ADDRESS: w.addresses[0] ?? '' },
    });
  } finally {
    closeSync(procs);
  }
  const forward = (s: NodeJS.Signals) => () => child.kill(s);
  const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((s) => [s, forward(s)] as const);
  for (const [s, h] of handlers) process.on(s, h);
  return new Promise((resolve) => {
    child.on('error', (err) => {
      process.stderr.write(`meshctl: cannot start ${cmd[0]}: ${err.message}\n`);
      resolve(EXIT.FAILURE);
    });
    child.on('exit', (code, signal) => {
      for (const [s, h] of handlers) process.off(s, h);
      resolve(code ?? 128 + (signal ? ({ SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[signal] ?? 0 : 0));
    });
  });
}

/** kTLS there or why not, then connections by record layer: `ktls` (the kernel's) and `user` (OpenSSL). */
function recordLayerLine(r: NonNullable<Status['dataplane']>['recordLayer'] & object): string {
  const c = r.connections;
  return `record layer kTLS ${r.ktlsAvailable ? 'available' : `unavailable (${r.reason})`}; connections: outbound ${c.outbound.ktls} ktls, ${c.outbound.user} user; inbound ${c.inbound.ktls} ktls, ${c.inbound.user} user`;
}

/** The tunnel outbound connections take and why, then the streams by tunnel (reused: no handshake). */
function tunnelLine(t: NonNullable<Status['dataplane']>['tunnel'] & object): string {
  const o = t.outbound;
  return `tunnel       ${t.tunnel} (${t.choice}); outbound connections: ${o.pooledNew + o.pooledReused} pooled (${o.pooledReused} without a handshake), ${o.dedicated} dedicated`;
}

async function status(agent: string, json: boolean): Promise<number> {
  const s = await get<Status>(agent, '/v1/status');
  if (json) process.stdout.write(JSON.stringify(s, null, 2) + '\n');
  else {
    const lines = [
      `agent        ${s.version} (pid ${s.pid}) at ${agent}: ${s.ready ? 'ready' : `NOT READY: ${s.notReady}`}`,
      `metrics      ${s.metrics ? (s.metrics.serving ? `http://${s.metrics.address}/metrics` : `NOT SERVED: ${s.metrics.error}`) : '-'}`,
      ...(s.metricsOnly ? [`metrics only ${s.metricsOnly.serving ? `http://${s.metricsOnly.address}/metrics` : `NOT SERVED: ${s.metricsOnly.error}`}`] : []),
      `config       ${s.source}: ${s.config ? `generation ${s.config.generation} (revision ${s.config.revision}, applied ${s.config.appliedAt}, ${s.config.mapWrites} map writes)` : 'none applied'}`,
      ...(s.config?.warnings ?? []).map((w, i) => `${i === 0 ? 'warnings    ' : '            '} ${w}`),
      `last error   ${s.lastError ? `${s.lastError.at}: rejected:\n${s.lastError.problems.map((p) => `               ${p}`).join('\n')}` : 'none'}`,
      `cgroup root  ${s.cgroupRoot}`,
      `pins         ${s.pinRoot}`,
      ...(s.dataplane
        ? [
            `data plane   ${s.dataplane.state}${s.dataplane.pid ? ` (pid ${s.dataplane.pid}${s.dataplane.external ? ', beside the agent' : s.dataplane.adopted ? ', adopted' : ''}, config generation ${s.dataplane.generation ?? '-'}, ${s.dataplane.restarts} restarts)` : ''}, stats http://${s.dataplane.stats}/metrics${s.dataplane.lastError ? `; last error: ${s.dataplane.lastError}` : ''}`,
            ...(s.dataplane.tunnel ? [tunnelLine(s.dataplane.tunnel)] : []),
            ...(s.dataplane.recordLayer ? [recordLayerLine(s.dataplane.recordLayer)] : []),
          ]
        : []),
      ...(s.mtlsLocal
        ? [
            s.mtlsLocal.enabled
              ? `same node    shortcut on: ${s.mtlsLocal.pairs} allowed local pairs; ${s.mtlsLocal.direct} connections direct, ${s.mtlsLocal.strictPasses} packets let in by STRICT`
              : 'same node    shortcut off (--no-mtls-local-shortcut): same-node connections go through the tunnel',
          ]
        : []),
      '',
    ];
    process.stdout.write(lines.join('\n') + '\n');
    process.stdout.write(
      table([
        ['PROGRAM', 'FAMILY', 'HOOK', 'LINK', 'PROG', 'TAG', 'RUNS'],
        ...s.programs.map((p) => [p.program, p.family, p.attachType, String(p.linkId), String(p.programId), p.tag, p.runCount === '0' ? '-' : p.runCount]),
      ]) + '\n',
    );
    process.stdout.write(
      table([
        ['MAP', 'USED', 'CAPACITY', 'FILL'],
        ...Object.entries(s.maps).map(([m, f]) => [m, String(f.used), String(f.max), `${((f.used / f.max) * 100).toFixed(1)}%`]),
      ]),
    );
  }
  if (!s.ready) return EXIT.FAILURE;
  return s.lastError && (!s.config || s.lastError.at > s.config.appliedAt) ? EXIT.CONFIG : EXIT.OK;
}

async function services(agent: string, json: boolean): Promise<number> {
  const s = await get<Services>(agent, '/v1/services');
  if (json) {
    process.stdout.write(JSON.stringify(s, null, 2) + '\n');
    return EXIT.OK;
  }
  const rows = [['SERVICE', 'ADDRESS', 'PROTO', 'ROUTE', 'BACKEND', 'WEIGHT', 'SHARE', 'ENDPOINTS']];
  for (const svc of s.services) {
    svc.backends.forEach((b, i) =>
      rows.push([
        i === 0 ? svc.service : '',
        i === 0 ? svc.address : '',
        i === 0 ? svc.protocol : '',
        i === 0 ? (svc.route ?? '-') : '',
        b.ref,
        String(b.weight),
        `${(b.share * 100).toFixed(1)}%`,
        b.endpoints.join(',') || '(none)',
      ]),
    );
  }
  process.stdout.write(`config generation ${s.generation}\n\n` + table(rows));
  const bad = s.routes.flatMap((r) => r.parents.flatMap((p) => p.conditions.filter((c) => c.status !== 'True').map((c) => `  ${r.route} → ${p.parentRef.name}: ${c.type}=False (${c.reason}): ${c.message}`)));
  if (bad.length) process.stdout.write(`\nroutes not fully accepted:\n${bad.join('\n')}\n`);
  return EXIT.OK;
}

async function stat(agent: string, argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { window: { type: 'string', default: '10' }, json: { type: 'boolean', default: false } }, strict: true });
  const w = Number(values.window!.replace(/s$/, ''));
  if (!Number.isFinite(w) || w <= 0 || w > 60) throw new UsageError('--window must be a number of seconds in (0, 60]');
  const r = await get<Wire<StatView>>(agent, `/v1/stat?window=${w}`);
  if (values.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
  else process.stdout.write(`last ${r.windowSeconds}s\n` + formatStat(r.pairs));
  return EXIT.OK;
}

const windowOption = (raw: string, flag: string) => {
  const w = Number(raw.replace(/s$/, ''));
  if (!Number.isFinite(w) || w <= 0 || w > 60) throw new UsageError(`${flag} must be a number of seconds in (0, 60]`);
  return w;
};

async function topCommand(agent: string, argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { interval: { type: 'string', default: '2' }, window: { type: 'string', default: '10' } }, strict: true });
  const everyS = Number(values.interval!.replace(/s$/, ''));
  if (!Number.isFinite(everyS) || everyS < 0.5 || everyS > 3600) throw new UsageError('--interval must be a number of seconds from 0.5 to 3600');
  const w = windowOption(values.window!, '--window');
  const read = () => get<Wire<StatView>>(agent, `/v1/stat?window=${w}`);
  if (!process.stdout.isTTY || !process.stdin.isTTY) {
    process.stdout.write(topFrame(await read(), undefined, process.stdout.columns || 200, 1000, everyS).join('\n') + '\n');
    return EXIT.OK;
  }
  await read(); // an agent that cannot be reached fails here, before the screen is taken
  return top({ everyS, read, input: process.stdin, output: process.stdout });
}

async function edges(agent: string, argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { window: { type: 'string', default: '60' }, json: { type: 'boolean', default: false } }, strict: true });
  const w = windowOption(values.window!, '--window');
  const [s, c] = await Promise.all([get<Wire<StatView>>(agent, `/v1/stat?window=${w}`), get<Certs>(agent, '/v1/certs').catch(() => undefined)]);
  const rows = edgesTable(s, c);
  if (values.json) {
    const [head, ...body] = rows;
    process.stdout.write(JSON.stringify({ windowSeconds: s.windowSeconds, edges: body.map((r) => Object.fromEntries(head!.map((h, i) => [h.toLowerCase().replace(' ', '_'), r[i]]))) }, null, 2) + '\n');
  } else process.stdout.write(`last ${s.windowSeconds}s\n` + (rows.length > 1 ? table(rows) : 'no requests seen yet\n'));
  return EXIT.OK;
}

async function doUninstall(socket: string | undefined, argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { 'pin-root': { type: 'string', default: DEFAULT_PIN_ROOT }, 'cgroup-root': { type: 'string' }, 'svid-dir': { type: 'string' }, force: { type: 'boolean', default: false } },
    strict: true,
  });
  if (!values.force) {
    const agent = socket ?? defaultApiSocket(values['pin-root']);
    const alive = await get<Status>(agent, '/v1/status').then(
      (s) => s,
      () => undefined,
    );
    if (alive && alive.pinRoot === values['pin-root']) {
      process.stderr.write(`meshctl: an agent (pid ${alive.pid}) is running at ${agent} and owns ${alive.pinRoot}: stop it first, or pass --force\n`);
      return EXIT.FAILURE;
    }
  }
  // The kernel's part: loaded here, so that the other commands never load the native addon.
  const [{ uninstall }, { defaultCgroupRoot }, { defaultSvidDir }] = await Promise.all([import('../datapath.js'), import('../paths.js'), import('../identity-defaults.js')]);
  const r = uninstall(values['pin-root']!, values['cgroup-root'] ?? defaultCgroupRoot());
  process.stdout.write(
    `detached ${r.linksDetached.length} links, removed ${r.pinsRemoved} pins under ${values['pin-root']}, removed ${r.cgroupsRemoved.length} cgroups\n`,
  );
  // The SVID files the agent wrote for the data plane hold private keys: they go with the mesh. The CA's state
  // directory (--state-dir) stays: a reinstall keeps the trust the workloads' peers have in its root.
  const svidDir = values['svid-dir'] ?? defaultSvidDir(values['pin-root']!);
  if (existsSync(svidDir)) {
    rmSync(svidDir, { recursive: true, force: true });
    // Its parent is the agent's run directory (/run/mesh/<name>), removed when nothing else is left in it.
    try {
      rmdirSync(dirname(svidDir));
    } catch {
      // not empty (or not ours to judge): left
    }
    process.stdout.write(`removed SVID files under ${svidDir}\n`);
  }
  if (r.cgroupsBusy.length) {
    process.stderr.write(`meshctl: these cgroups still hold processes and were left in place:\n${r.cgroupsBusy.map((c) => `  ${c}`).join('\n')}\n`);
    return EXIT.FAILURE;
  }
  return EXIT.OK;
}

export async function main(argv: string[]): Promise<number> {
  let socket: string | undefined = process.env.MESH_API_SOCKET || undefined;
  let tcpAgent = false;
  // The global option is taken before or after the command (meshctl status --api-socket …), up to run's `--`.
  const args: string[] = [];
  const end = argv.includes('--') ? argv.indexOf('--') : argv.length;
  for (let j = 0; j < argv.length; j++) {
    const a = argv[j]!;
    if (j < end && a === '--api-socket') socket = argv[++j] ?? '';
    else if (j < end && a.startsWith('--api-socket=')) socket = a.slice('--api-socket='.length);
    else if (j < end && (a === '--agent' || a.startsWith('--agent='))) {
      tcpAgent = true;
      if (a === '--agent') j++;
    } else args.push(a);
  }
  const agent = socket ?? DEFAULT_API_SOCKET;
  const [command, ...rest] = args;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(MESHCTL_HELP + '\n');
    return command === undefined ? EXIT.USAGE : EXIT.OK;
  }
  if (!COMMANDS[command]) {
    process.stderr.write(`meshctl: unknown command ${JSON.stringify(command)}\n\n${MESHCTL_HELP}\n`);
    return EXIT.USAGE;
  }
  const before = rest.indexOf('--') < 0 ? rest : rest.slice(0, rest.indexOf('--'));
  if (before.includes('--help') || before.includes('-h')) {
    process.stdout.write(commandHelp(command));
    return EXIT.OK;
  }
  try {
    // The TCP address carried the control API before: anyone can bind a loopback port first and answer it.
    if (tcpAgent) throw new UsageError(`--agent HOST:PORT is gone: the control API is on the agent's unix socket (--api-socket PATH, default ${DEFAULT_API_SOCKET})`);
    if (!isAbsolute(agent)) throw new UsageError(`--api-socket must be an absolute path, got ${JSON.stringify(agent)}`);
    const json = () => parseArgs({ args: rest, options: { json: { type: 'boolean', default: false } }, strict: true }).values.json!;
    switch (command) {
      case 'run':
        return await run(agent, rest);
      case 'status':
        return await status(agent, json());
      case 'services':
        return await services(agent, json());
      case 'stat':
        return await stat(agent, rest);
      case 'top':
        return await topCommand(agent, rest);
      case 'edges':
        return await edges(agent, rest);
      case 'certs':
        return await certs(agent, json());
      case 'ca': {
        // Loaded on use: the certificate library takes a good part of a second to import, every other command would pay it.
        const { caCommand } = await import('./ca.js');
        return await caCommand(rest, () => get<Certs>(agent, '/v1/certs').then((c) => c, () => undefined));
      }
      case 'uninstall':
        return await doUninstall(socket, rest);
      case 'version':
        process.stdout.write(`meshctl ${VERSION}\n`);
        return EXIT.OK;
    }
    return EXIT.USAGE;
  } catch (err) {
    if (err instanceof Unreachable) {
      process.stderr.write(`meshctl: ${err.message}\n`);
      return EXIT.UNREACHABLE;
    }
    if (err instanceof Refused) {
      process.stderr.write(`meshctl ${command}: ${err.message}\n`);
      return EXIT.FAILURE;
    }
    if (err instanceof UsageError || (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`meshctl ${command}: ${(err as Error).message}\n\n${commandHelp(command)}`);
      return EXIT.USAGE;
    }
    process.stderr.write(`meshctl ${command}: ${(err as Error).message}\n`);
    return EXIT.FAILURE;
  }
}
