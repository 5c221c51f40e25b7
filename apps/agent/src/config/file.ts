/**
 * The file config source: one YAML file, or every *.yaml/*.yml/*.json file of a directory (not recursive),
 * each holding any number of documents. Changes are picked up by fs.watch with a content-hash poll behind it
 * (editors and `kubectl`-style tools replace files by rename, which some watchers miss).
 */
import { createHash } from 'node:crypto';
import { type FSWatcher, readdirSync, readFileSync, statSync, watch } from 'node:fs';
import { basename, dirname, join } from 'node:path';

import { LineCounter, parseAllDocuments } from 'yaml';

import { type ConfigSnapshot, ConfigError, KINDS, objectKey, type Origin, originText } from './objects.js';
import type { ConfigSource, ConfigUpdate } from './source.js';

const CONFIG_FILE = /\.(ya?ml|json)$/;

interface RawFile {
  path: string;
  text: string;
}

function readConfigFiles(path: string): RawFile[] {
  let st;
  try {
    st = statSync(path);
  } catch (err) {
    throw new ConfigError([`${path}: cannot read the config: ${(err as Error).message}`]);
  }
  const paths = st.isDirectory()
    ? readdirSync(path)
        .filter((f) => CONFIG_FILE.test(f) && !f.startsWith('.'))
        .sort()
        .map((f) => join(path, f))
    : [path];
  if (paths.length === 0) throw new ConfigError([`${path}: the directory holds no *.yaml, *.yml or *.json file`]);
  return paths.map((p) => {
    try {
      return { path: p, text: readFileSync(p, 'utf8') };
    } catch (err) {
      throw new ConfigError([`${p}: cannot read: ${(err as Error).message}`]);
    }
  });
}

/** Parses the documents of config files into objects by kind. Throws ConfigError for YAML syntax, unknown
 *  kinds and apiVersions, and objects defined twice, naming file, document and line. */
export function parseConfig(files: RawFile[]): ConfigSnapshot {
  const problems: string[] = [];
  const out: ConfigSnapshot = { services: [], endpointSlices: [], httpRoutes: [], workloads: [], origins: new Map() };
  for (const f of files) {
    const lines = new LineCounter();
    const docs = parseAllDocuments(f.text, { lineCounter: lines, uniqueKeys: true });
    if (!Array.isArray(docs)) {
      problems.push(`${f.path}: not a YAML stream`);
      continue;
    }
    docs.forEach((doc, i) => {
      const origin: Origin = { file: f.path, document: i + 1, line: lines.linePos(doc.contents?.range[0] ?? doc.range[0]).line };
      const where = originText(origin);
      if (doc.errors.length) {
        for (const e of doc.errors) {
          const pos = e.linePos?.[0];
          problems.push(`${f.path}: document ${i + 1}${pos ? ` (line ${pos.line}, column ${pos.col})` : ''}: YAML syntax: ${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`);
        }
        return;
      }
      const obj = doc.toJS({ maxAliasCount: 100 }) as unknown;
      if (obj === null || obj === undefined) return; // an empty document (e.g. a trailing ---)
      if (typeof obj !== 'object' || Array.isArray(obj)) return void problems.push(`${where}: must be a mapping with apiVersion, kind and metadata`);
      const o = obj as { apiVersion?: unknown; kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } };
      if (typeof o.kind !== 'string') return void problems.push(`${where}: kind: is required (one of ${Object.keys(KINDS).join(', ')})`);
      const want = KINDS[o.kind];
      const name = typeof o.metadata?.name === 'string' ? `${typeof o.metadata.namespace === 'string' ? o.metadata.namespace : 'default'}/${o.metadata.name}` : '(unnamed)';
      if (want === undefined) return void problems.push(`${where}: ${o.kind} ${name}: kind: ${JSON.stringify(o.kind)} is not one of ${Object.keys(KINDS).join(', ')}`);
      if (o.apiVersion !== want) return void problems.push(`${where}: ${o.kind} ${name}: apiVersion: must be ${want}, got ${JSON.stringify(o.apiVersion)}`);
      if (!o.metadata || typeof o.metadata !== 'object' || typeof o.metadata.name !== 'string') {
        return void problems.push(`${where}: ${o.kind} (unnamed): metadata.name: is required`);
      }
      const key = objectKey(o.kind, o.metadata as never);
      const prev = out.origins!.get(key);
      if (prev) return void problems.push(`${where}: ${key}: metadata.name: already defined at ${originText(prev)}`);
      out.origins!.set(key, origin);
      const list = { Service: out.services, EndpointSlice: out.endpointSlices, HTTPRoute: out.httpRoutes, Workload: out.workloads }[o.kind as keyof typeof KINDS & string] as unknown[];
      list.push(obj);
    });
  }
  if (problems.length) throw new ConfigError(problems);
  return out;
}

export function loadConfig(path: string): ConfigSnapshot {
  return parseConfig(readConfigFiles(path));
}

export interface FileSourceOptions {
  /** Fallback poll interval; default 2,000 ms. */
  pollMs?: number;
  /** Quiet time after a change before reading (editors write in steps); default 150 ms. */
  debounceMs?: number;
}

export class FileSource implements ConfigSource {
  readonly description: string;
  private watcher: FSWatcher | undefined;
  private poll: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private lastHash: string | undefined;

  constructor(
    private readonly path: string,
    private readonly opts: FileSourceOptions = {},
  ) {
    this.description = `file ${path}`;
  }

  /** Reads the config now; a problem is an `error` update, never a throw. */
  private read(): ConfigUpdate | undefined {
    let files: RawFile[];
    try {
      files = readConfigFiles(this.path);
    } catch (err) {
      // Delivered once, not at every poll; when the old content comes back it differs from this and is applied.
      const key = `error:${(err as Error).message}`;
      if (key === this.lastHash) return undefined;
      this.lastHash = key;
      return { error: err as ConfigError };
    }
    const hash = createHash('sha256');
    for (const f of files) hash.update(f.path).update('\0').update(f.text).update('\0');
    const digest = hash.digest('hex').slice(0, 16);
    if (digest === this.lastHash) return undefined;
    this.lastHash = digest;
    try {
      return { snapshot: parseConfig(files), revision: digest };
    } catch (err) {
      return { error: err as Error, revision: digest };
    }
  }

  start(onUpdate: (u: ConfigUpdate) => void): void {
    const emit = () => {
      const u = this.read();
      if (u) onUpdate(u);
    };
    emit();
    const schedule = () => {
      clearTimeout(this.debounce);
      this.debounce = setTimeout(emit, this.opts.debounceMs ?? 150);
    };
    let dir = this.path;
    try {
      if (!statSync(this.path).isDirectory()) dir = dirname(this.path);
    } catch {
      dir = dirname(this.path);
    }
    const name = dir === this.path ? undefined : basename(this.path);
    try {
      this.watcher = watch(dir, (_event, file) => {
        if (name === undefined || file === null || file === name) schedule();
      });
      this.watcher.on('error', () => undefined); // the poll below still runs
    } catch {
      this.watcher = undefined;
    }
    this.poll = setInterval(emit, this.opts.pollMs ?? 2000);
    this.poll.unref();
  }

  stop(): void {
    this.watcher?.close();
    clearInterval(this.poll);
    clearTimeout(this.debounce);
  }
}
