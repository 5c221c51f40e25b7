/**
 * The file config source: one YAML file, or every *.yaml/*.yml/*.json file of a directory (not recursive),
 * each holding any number of documents. Changes are picked up by fs.watch with a content-hash poll behind it
 * (editors and `kubectl`-style tools replace files by rename, which some watchers miss).
 */
import { createHash } from 'node:crypto';
import { type FSWatcher, readdirSync, readFileSync, statSync, watch } from 'node:fs';
import { basename, dirname, join } from 'node:path';

import { load, type YAMLException } from 'js-yaml';

import type { ObjectMeta } from '@mesh/split';

import { msSince } from '../log.js';
import { type ConfigSnapshot, ConfigError, KINDS, objectKey, type Origin, originText } from './objects.js';
import type { ConfigSource, ConfigUpdate } from './source.js';

const CONFIG_FILE = /\.(ya?ml|json)$/;

interface RawFile {
  path: string;
  text: string;
}

/** The config's files: `path` itself, or the *.yaml/*.yml/*.json files of the directory, in name order. */
function configPaths(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path)
    .filter((f) => CONFIG_FILE.test(f) && !f.startsWith('.'))
    .sort()
    .map((f) => join(path, f));
}

function readConfigFiles(path: string): RawFile[] {
  let paths: string[];
  try {
    paths = configPaths(path);
  } catch (err) {
    throw new ConfigError([`${path}: cannot read the config: ${(err as Error).message}`]);
  }
  if (paths.length === 0) throw new ConfigError([`${path}: the directory holds no *.yaml, *.yml or *.json file`]);
  return paths.map((p) => {
    try {
      return { path: p, text: readFileSync(p, 'utf8') };
    } catch (err) {
      throw new ConfigError([`${p}: cannot read: ${(err as Error).message}`]);
    }
  });
}

interface Chunk {
  /** 1-based document number in the file. */
  index: number;
  text: string;
  /** 1-based line of the chunk's first line, and of its first line of content. */
  startLine: number;
  contentLine: number;
}

const MARKER = /^(---|\.\.\.)(?=[ \t]|$)/;
const NOTHING = /^\s*(#.*)?$/;

/**
 * Splits a YAML stream into its documents, by their markers: a line starting with `---` (or `...`) followed by
 * a space or the line's end can only be a document marker in YAML 1.2 (such lines are forbidden inside content).
 * Each document is then parsed on its own, so a big file never has more than one document's worth of parser
 * state alive, and positions are known per document. Directives (`%…`) go with the document that follows.
 */
export function splitDocuments(text: string): Chunk[] {
  const out: Chunk[] = [];
  let cur: string[] = [];
  let start = 1;
  let explicit = false; // began with ---: a document even when empty
  let directives: string[] = [];
  const flush = () => {
    const content = cur.findIndex((l) => !NOTHING.test(l) && !/^---\s*(#.*)?$/.test(l) && !l.startsWith('%'));
    if (content < 0 && !explicit) return;
    out.push({ index: out.length + 1, text: cur.join('\n'), startLine: start, contentLine: start + Math.max(content, 0) });
  };
  text.split('\n').forEach((line, i) => {
    if (line.startsWith('%') && cur.every((l) => NOTHING.test(l))) return void directives.push(line);
    const m = MARKER.exec(line);
    if (!m) return void cur.push(line);
    flush();
    explicit = m[1] === '---';
    cur = explicit ? [...directives, line] : [];
    start = explicit ? i + 1 - directives.length : i + 2;
    directives = [];
  });
  flush();
  return out;
}

/** What is wrong with a document's kind, apiVersion and name, naming the object when it can; undefined if nothing. */
function checkHeader(obj: unknown): string | undefined {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return 'must be a mapping with apiVersion, kind and metadata';
  const o = obj as { apiVersion?: unknown; kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } };
  if (typeof o.kind !== 'string') return `kind: is required (one of ${Object.keys(KINDS).join(', ')})`;
  const want = KINDS[o.kind];
  const ns = typeof o.metadata?.namespace === 'string' ? o.metadata.namespace : 'default';
  const name = typeof o.metadata?.name === 'string' ? `${ns}/${o.metadata.name}` : '(unnamed)';
  if (want === undefined) return `${o.kind} ${name}: kind: ${JSON.stringify(o.kind)} is not one of ${Object.keys(KINDS).join(', ')}`;
  if (o.apiVersion !== want) return `${o.kind} ${name}: apiVersion: must be ${want}, got ${JSON.stringify(o.apiVersion)}`;
  if (!o.metadata || typeof o.metadata !== 'object' || typeof o.metadata.name !== 'string') return `${o.kind} (unnamed): metadata.name: is required`;
  return undefined;
}

/** Parses the documents of config files into objects by kind. Throws ConfigError for YAML syntax, unknown
 *  kinds and apiVersions, and objects defined twice, naming file, document and line. */
export function parseConfig(files: RawFile[]): ConfigSnapshot {
  const problems: string[] = [];
  const out: ConfigSnapshot = { services: [], endpointSlices: [], httpRoutes: [], workloads: [], origins: new Map() };
  for (const f of files) {
    for (const chunk of splitDocuments(f.text)) {
      const origin: Origin = { file: f.path, document: chunk.index, line: chunk.contentLine };
      const where = originText(origin);
      let obj: unknown;
      try {
        // Duplicate keys are an error (json: false); the core schema, as Kubernetes' YAML reads it.
        obj = load(chunk.text, { filename: f.path });
      } catch (err) {
        const e = err as YAMLException;
        const pos = e.mark ? ` (line ${chunk.startLine + e.mark.line}, column ${e.mark.column + 1})` : '';
        problems.push(`${f.path}: document ${chunk.index}${pos}: YAML syntax: ${e.reason ?? e.message}`);
        continue;
      }
      if (obj === null || obj === undefined) continue; // an empty document (e.g. a trailing ---)
      const problem = checkHeader(obj);
      if (problem) {
        problems.push(`${where}: ${problem}`);
        continue;
      }
      const o = obj as { kind: string; metadata: ObjectMeta };
      const key = objectKey(o.kind, o.metadata as never);
      const prev = out.origins!.get(key);
      if (prev) {
        problems.push(`${where}: ${key}: metadata.name: already defined at ${originText(prev)}`);
        continue;
      }
      out.origins!.set(key, origin);
      const list = { Service: out.services, EndpointSlice: out.endpointSlices, HTTPRoute: out.httpRoutes, Workload: out.workloads }[o.kind as keyof typeof KINDS & string] as unknown[];
      list.push(obj);
    }
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
  /** Names, sizes, mtimes and inodes at the last read: the poll reads files only when these change. */
  private lastStat: string | undefined;

  constructor(
    private readonly path: string,
    private readonly opts: FileSourceOptions = {},
  ) {
    this.description = `file ${path}`;
  }

  private statSignature(): string {
    try {
      return configPaths(this.path)
        .map((p) => {
          const s = statSync(p);
          return `${p}:${s.size}:${s.mtimeMs}:${s.ino}`;
        })
        .join('|');
    } catch (err) {
      return `error:${(err as Error).message}`;
    }
  }

  /** Reads the config now; a problem is an `error` update, never a throw. */
  private read(): ConfigUpdate | undefined {
    this.lastStat = this.statSignature();
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
      const t0 = performance.now();
      const snapshot = parseConfig(files);
      return { snapshot, revision: digest, readMs: msSince(t0) };
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
    // The poll stats the files and reads them only when that changed: a big config is not re-read every 2 s.
    this.poll = setInterval(() => {
      if (this.statSignature() !== this.lastStat) emit();
    }, this.opts.pollMs ?? 2000);
    this.poll.unref();
  }

  stop(): void {
    this.watcher?.close();
    clearInterval(this.poll);
    clearTimeout(this.debounce);
  }
}
