// Support for the mesh-dataplane tests: SPIFFE certificates made with the openssl CLI, data plane processes
// started from a config object, and clients that dial through the outbound side as the kernel redirect will.
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { request as httpRequest, Agent, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ensureTool, runChecked, waitForLine, type ProcessTracker } from '@mesh/testkit';
import type { WorkloadPolicy } from '@mesh/mtls';

export const DATAPLANE = fileURLToPath(new URL('../build/mesh-dataplane', import.meta.url));

/** Why a suite cannot run here, or undefined. `bash scripts/build.sh` builds the binary. */
export function missingDataplane(): string | undefined {
  return existsSync(DATAPLANE) ? undefined : `${DATAPLANE} is missing: run bash scripts/build.sh`;
}

/** A /24 of loopback addresses of its own (127.b.c.0/24), so concurrent test files never share a listener. */
export function loopbackNet(): (host: number) => string {
  const b = 100 + Math.floor(Math.random() * 150);
  const c = Math.floor(Math.random() * 256);
  return (host) => `127.${b}.${c}.${host}`;
}

export interface Svid {
  cert: string;
  key: string;
}

export interface Ca {
  name: string;
  cert: string;
  key: string;
}

const DAY_MS = 86_400_000;

// openssl ca wants UTCTime: YYMMDDHHMMSSZ.
function asn1Time(ms: number): string {
  return new Date(ms).toISOString().replace(/^\d\d(\d\d)-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d).*$/, '$1$2$3$4$5$6Z');
}

/** Roots and X.509-SVIDs (ECDSA P-256, one URI SAN) under `dir`, made with the openssl CLI. */
export class Pki {
  readonly #openssl = ensureTool('openssl');

  constructor(readonly dir: string) {}

  async root(name: string): Promise<Ca> {
    await mkdir(join(this.dir, name), { recursive: true });
    const ca = { name, cert: join(this.dir, `${name}.pem`), key: join(this.dir, `${name}.key`) };
    await runChecked(this.#openssl, [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', ca.key,
      '-out', ca.cert, '-days', '3650', '-subj', `/O=mesh-test/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    await writeFile(join(this.dir, name, 'index.txt'), '');
    await writeFile(join(this.dir, name, 'serial'), '1000\n');
    await writeFile(
      join(this.dir, name, 'ca.cnf'),
      [
        '[ca]', 'default_ca = mesh', '[mesh]', `dir = ${join(this.dir, name)}`, 'database = $dir/index.txt',
        'new_certs_dir = $dir', 'serial = $dir/serial', 'default_md = sha256', 'policy = any', 'unique_subject = no', 'copy_extensions = none',
        '[any]', 'organizationName = optional', 'commonName = optional', '',
      ].join('\n'),
    );
    return ca;
  }

  /**
   * An SVID for `spiffeId` signed by `ca`, valid from `notBefore` to `notAfter` (ms since the epoch). One at a
   * time per CA: openssl ca rewrites its database.
   */
  async svid(ca: Ca, file: string, spiffeId: string, opts: { notBefore?: number; notAfter?: number } = {}): Promise<Svid> {
    const svid = { cert: join(this.dir, `${file}.pem`), key: join(this.dir, `${file}.key`) };
    const csr = join(this.dir, `${file}.csr`);
    const ext = join(this.dir, `${file}.ext`);
    await writeFile(
      ext,
      [
        '[svid]', 'basicConstraints = critical,CA:FALSE', 'keyUsage = critical,digitalSignature,keyAgreement',
        'extendedKeyUsage = serverAuth,clientAuth', `subjectAltName = URI:${spiffeId}`, '',
      ].join('\n'),
    );
    await runChecked(this.#openssl, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', svid.key]);
    await runChecked(this.#openssl, ['req', '-new', '-key', svid.key, '-subj', `/O=mesh-test/CN=${file}`, '-out', csr]);
    const now = Date.now();
    await runChecked(this.#openssl, [
      'ca', '-batch', '-notext', '-config', join(this.dir, ca.name, 'ca.cnf'), '-cert', ca.cert, '-keyfile', ca.key,
      '-in', csr, '-out', svid.cert, '-extfile', ext, '-extensions', 'svid',
      '-rand_serial',
      '-startdate', asn1Time(opts.notBefore ?? now - DAY_MS), '-enddate', asn1Time(opts.notAfter ?? now + 30 * DAY_MS),
    ]);
    return svid;
  }
}

export interface WorkloadConfig {
  address: string;
  cert: string;
  key: string;
  bundle: string;
  spiffeId?: string;
  /** The workload's DENY and ALLOW policies, as @mesh/mtls compiles them from AuthorizationPolicy objects. */
  policies?: WorkloadPolicy['policies'];
}

export interface DataplaneConfig {
  outbound?: string;
  tunnel?: string;
  stats?: string;
  workers?: number;
  handshakeTimeoutMs?: number;
  ktls?: boolean;
  /** Outbound connections as streams over pooled tunnel connections (needs ktls false). */
  pool?: boolean;
  poolIdleMs?: number;
  workloads: WorkloadConfig[];
  destinations?: { address: string; tunnel: string; spiffeId: string }[];
  /** The pinned map of original destinations the kernel's capture fills; absent: the PROXY v1 preamble. */
  originalDst?: { map: string };
  /** The source address of connections to workloads, per family (what a STRICT port lets in). */
  inboundSource?: { ipv4?: string; ipv6?: string };
}

export interface Endpoint {
  host: string;
  port: number;
}

function endpoint(text: string | undefined): Endpoint | undefined {
  if (text === undefined || text === '-') return undefined;
  const i = text.lastIndexOf(':');
  return { host: text.slice(0, i), port: Number(text.slice(i + 1)) };
}

export class Dataplane {
  #generation = 1;

  constructor(
    readonly child: ChildProcess,
    readonly configPath: string,
    readonly outbound: Endpoint | undefined,
    readonly tunnel: Endpoint | undefined,
    readonly stats: Endpoint | undefined,
  ) {}

  /** Write `config` and SIGHUP; resolves once the data plane reports the new generation loaded. */
  async reload(config: DataplaneConfig, timeoutMs = 20_000): Promise<void> {
    await writeFile(this.configPath, JSON.stringify(config, null, 2));
    const want = ++this.#generation;
    this.child.kill('SIGHUP');
    await waitForLine(this.child, new RegExp(`config generation ${want} loaded`), timeoutMs);
  }

  /** The stats endpoint's Prometheus text. */
  async scrape(): Promise<string> {
    if (!this.stats) throw new Error('this data plane has no stats endpoint');
    const res = await get({ host: this.stats.host, port: this.stats.port, path: '/metrics' });
    return res.body.toString();
  }

  /** One sample's value, e.g. sample(text, 'mesh_dataplane_handshake_failures_total', 'role="inbound",reason="expired"'). */
  static sample(text: string, name: string, labels = ''): number {
    const line = text.split('\n').find((l) => l.startsWith(labels === '' ? `${name} ` : `${name}{${labels}} `));
    if (line === undefined) throw new Error(`no sample ${name}{${labels}} in:\n${text}`);
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }

  async counter(name: string, labels = ''): Promise<number> {
    return Dataplane.sample(await this.scrape(), name, labels);
  }
}

/** Start mesh-dataplane with `config` (written to `dir/name.json`); resolves once it listens. */
export async function startDataplane(
  tracker: ProcessTracker,
  dir: string,
  name: string,
  config: DataplaneConfig,
  opts: { timeoutMs?: number; wrap?: string[] } = {},
): Promise<Dataplane> {
  const configPath = join(dir, `${name}.json`);
  await writeFile(configPath, JSON.stringify(config, null, 2));
  // `wrap`: a command that execs the data plane, e.g. prlimit; the tracked pid is then the data plane's.
  const [cmd, ...args] = [...(opts.wrap ?? []), DATAPLANE, '--config', configPath];
  const child = tracker.spawn(cmd!, args);
  const m = await waitForLine(child, /listening outbound=(\S+) tunnel=(\S+) stats=(\S+)/, opts.timeoutMs ?? 30_000);
  return new Dataplane(child, configPath, endpoint(m[1]), endpoint(m[2]), endpoint(m[3]));
}

/**
 * A TCP connection to `dp`'s outbound side from the workload address `from`, headed for `to` — the PROXY v1
 * preamble stands in for the kernel's record of the original destination.
 */
export function dial(dp: Dataplane, from: string, to: Endpoint): Socket {
  if (!dp.outbound) throw new Error('this data plane has no outbound listener');
  const sock = connect({ host: dp.outbound.host, port: dp.outbound.port, localAddress: from });
  // Queued before anything a caller writes; the source port is not known yet and the data plane ignores it.
  sock.write(`PROXY TCP4 ${from} ${to.host} 0 ${to.port}\r\n`);
  return sock;
}

/** A keep-alive HTTP agent whose connections go through `dp` from `from`. */
export function meshAgent(dp: Dataplane, from: string, to: Endpoint, maxSockets: number): Agent {
  const agent = new Agent({ keepAlive: true, maxSockets });
  // Agent.createConnection exists at runtime (net.createConnection by default) but is not in the typings.
  (agent as unknown as { createConnection: () => Socket }).createConnection = () => dial(dp, from, to);
  return agent;
}

export interface Response {
  status: number;
  body: Buffer;
}

export function get(opts: { host: string; port: number; path: string; agent?: Agent; timeoutMs?: number }): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: opts.host, port: opts.port, path: opts.path, agent: opts.agent ?? false }, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.setTimeout(opts.timeoutMs ?? 30_000, () => req.destroy(new Error(`GET ${opts.path}: timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** Resolves with everything `sock` receives until its end; rejects on error or reset. */
export function readAll(sock: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.once('end', () => resolve(Buffer.concat(chunks)));
    sock.once('error', reject);
  });
}

/** How a connection through the mesh ended: 'data' with what arrived, or 'closed'/'reset' with nothing. */
export function outcome(sock: Socket, timeoutMs = 30_000): Promise<{ end: 'end' | 'error'; bytes: number; error?: string }> {
  return new Promise((resolve) => {
    let bytes = 0;
    const timer = setTimeout(() => {
      sock.destroy();
      resolve({ end: 'error', bytes, error: 'timeout' });
    }, timeoutMs);
    sock.on('data', (c: Buffer) => (bytes += c.length));
    sock.once('end', () => {
      clearTimeout(timer);
      sock.destroy();
      resolve({ end: 'end', bytes });
    });
    sock.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ end: 'error', bytes, error: e.code ?? e.message });
    });
  });
}

