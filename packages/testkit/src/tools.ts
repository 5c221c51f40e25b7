import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';

// Debian package for each tool the tests use; the repo's setup script installs them, tests never do.
const APT_PACKAGE: Readonly<Record<string, string>> = {
  ip: 'iproute2',
  ss: 'iproute2',
  tc: 'iproute2',
  bpftool: 'bpftool',
  curl: 'curl',
  hey: 'hey',
  wrk: 'wrk',
  h2load: 'nghttp2-client',
  nghttp: 'nghttp2-client',
  nginx: 'nginx',
  haproxy: 'haproxy',
  iperf3: 'iperf3',
  hyperfine: 'hyperfine',
  openssl: 'openssl',
  tshark: 'tshark',
  tcpdump: 'tcpdump',
  ping: 'iputils-ping',
  perf: 'linux-perf',
  promtool: 'prometheus',
  clang: 'clang',
  mount: 'mount',
};

// Root's tools live in sbin, which a CI environment's PATH may leave out.
const SBIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

const cache = new Map<string, string | undefined>();

/** Absolute path of `name` on PATH (then the sbin directories), or undefined. */
export function findTool(name: string): string | undefined {
  if (cache.has(name)) return cache.get(name);
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...SBIN_DIRS];
  const found = dirs.map((dir) => join(dir, name)).find(isExecutableFile);
  cache.set(name, found);
  return found;
}

/** Debian package that provides `name`, when the tests know it. */
export function toolPackage(name: string): string | undefined {
  return APT_PACKAGE[name];
}

export function hasTool(name: string): boolean {
  return findTool(name) !== undefined;
}

/** Absolute path of `name`, or an Error that says which Debian package provides it. */
export function ensureTool(name: string): string {
  const found = findTool(name);
  if (found !== undefined) return found;
  const pkg = toolPackage(name);
  const hint = pkg === undefined
    ? 'install the Debian package that provides it'
    : `install the Debian package ${pkg} (apt-get install ${pkg})`;
  throw new Error(`${name} not found on PATH or in ${SBIN_DIRS.join(', ')}: ${hint}; the repo's setup script should do this`);
}

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}
