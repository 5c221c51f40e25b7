/**
 * The file config source: one YAML file, or every *.yaml/*.yml/*.json file of a directory (not recursive),
 * each holding any number of documents. Changes are picked up by fs.watch with a content-hash poll behind it
 * (editors and `kubectl`-style tools replace files by rename, which some watchers miss).
 *
 * A file is read only once its writer is done: no process holds it open for writing, and its size, mtime and
 * inode have not changed for the settle time (nor while it was read). A prefix of a config usually parses and
 * validates, and applying it deletes every service after the cut. A file that holds no object is refused
 * unless empty configs are allowed, files are capped in size, and a document whose aliases expand it past what
 * Kubernetes' YAML reader accepts is refused.
 */
import { createHash } from 'node:crypto';
import { closeSync, type FSWatcher, fstatSync, openSync, readdirSync, readSync, statSync, watch } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';

import { load, type YAMLException } from 'js-yaml';

import { every, objectName, type ObjectMeta, runSteps, runStepsAsync, type Steps } from '@mesh/split';

import { heapModeFor } from '../heap.js';
import { msSince } from '../log.js';
import { type ConfigSnapshot, ConfigError, KINDS, type Origin, originText } from './objects.js';
import type { ConfigSource, ConfigUpdate } from './source.js';
import { openWriters, type Writer } from './writers.js';

const CONFIG_FILE = /\.(ya?ml|json)$/;

/** Default cap on one config file's size: 50,000 services and 20,000 workloads take some 15 MB. */
export const DEFAULT_MAX_CONFIG_BYTES = 64 * 1024 * 1024;

export interface ParseOptions {
  /** Accept a config file that holds no object (its services are deleted); default false. */
  allowEmpty?: boolean;
  /** Largest config file read, in bytes; default DEFAULT_MAX_CONFIG_BYTES. */
  maxFileBytes?: number;
}

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

/** The file's text, refusing one larger than `max` bytes (checked before reading, and while reading in case
 *  it grows). */
/** A file's text, read and decoded 1 MiB a step: a 13 MB config read, joined and decoded at once was one turn of
 *  ~30 ms of the thread's CPU. A character split between two reads is decoded whole (StringDecoder). */
function* readCappedSteps(path: string, max: number): Steps<string> {
  const tooBig = () => new ConfigError([`${path}: the file is larger than the config size cap (${max} bytes; --max-config-bytes)`]);
  const fd = openSync(path, 'r');
  try {
    if (fstatSync(fd).size > max) throw tooBig();
    const decoder = new StringDecoder('utf8');
    const b = Buffer.allocUnsafe(Math.min(1 << 20, max + 1));
    const pieces: string[] = [];
    let len = 0;
    for (;;) {
      const n = readSync(fd, b, 0, Math.min(b.length, max + 1 - len), null);
      if (n === 0) break;
      len += n;
      if (len > max) throw tooBig();
      pieces.push(decoder.write(b.subarray(0, n)));
      yield;
    }
    pieces.push(decoder.end());
    return pieces.join('');
  } finally {
    closeSync(fd);
  }
}

/** The config's files (a file, or a directory's *.yaml, *.yml and *.json), read in steps. */
export function* readConfigSteps(path: string, maxBytes = DEFAULT_MAX_CONFIG_BYTES): Steps<RawFile[]> {
  let paths: string[];
  try {
    paths = configPaths(path);
  } catch (err) {
    throw new ConfigError([`${path}: cannot read the config: ${(err as Error).message}`]);
  }
  if (paths.length === 0) throw new ConfigError([`${path}: the directory holds no *.yaml, *.yml or *.json file`]);
  const files: RawFile[] = [];
  for (const p of paths) {
    try {
      files.push({ path: p, text: yield* readCappedSteps(p, maxBytes) });
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      throw new ConfigError([`${p}: cannot read: ${(err as Error).message}`]);
    }
  }
  return files;
}

const readConfigFiles = (path: string, maxBytes?: number): RawFile[] => runSteps(readConfigSteps(path, maxBytes));

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
  return runSteps(documentSteps(text));
}

/** splitDocuments in steps (see runStepsAsync). */
function* documentSteps(text: string): Steps<Chunk[]> {
  const tick = every(4096);
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
  // Line by line without splitting the whole text at once (a 13 MB config is 400,000 lines).
  for (let i = 0, pos = 0; pos <= text.length; i++) {
    if (tick()) yield;
    const nl = text.indexOf('\n', pos);
    const end = nl < 0 ? text.length : nl;
    const line = text.slice(pos, end);
    pos = end + 1;
    if (line.startsWith('%') && cur.every((l) => NOTHING.test(l))) {
      directives.push(line);
      continue;
    }
    const m = MARKER.exec(line);
    if (!m) {
      cur.push(line);
      continue;
    }
    flush();
    explicit = m[1] === '---';
    cur = explicit ? [...directives, line] : [];
    start = explicit ? i + 1 - directives.length : i + 2;
    directives = [];
  }
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

/**
 * Why a parsed document's aliases are refused, or undefined. Aliases share one object (js-yaml does not copy),
 * so the document's size as a tree is computed over the graph once per distinct node; the limits are those of
 * Kubernetes' YAML reader (go-yaml's "document contains excessive aliasing"): above 400,000 nodes expanded, at
 * most 99% of them may come through aliases, falling linearly to 10% at 4,000,000. An alias inside its own
 * anchor makes the document infinite.
 */
export function aliasProblem(doc: unknown): string | undefined {
  const size = new Map<object, number>();
  const open = new Set<object>();
  let distinct = 0;
  const walk = (v: unknown): number => {
    if (typeof v !== 'object' || v === null) return 1;
    const known = size.get(v);
    if (known !== undefined) return known;
    if (open.has(v)) throw new RangeError('an alias refers to a node that contains it (the document would be infinite)');
    open.add(v);
    let n = 1;
    for (const c of Array.isArray(v) ? v : Object.values(v)) {
      if (typeof c !== 'object' || c === null) distinct++;
      n += walk(c);
    }
    open.delete(v);
    distinct++;
    size.set(v, n);
    return n;
  };
  let expanded: number;
  try {
    expanded = walk(doc);
  } catch (err) {
    return (err as Error).message;
  }
  const aliased = expanded - distinct;
  const LOW = 400_000;
  const HIGH = 4_000_000;
  const allowed = expanded <= LOW ? 0.99 : expanded >= HIGH ? 0.1 : 0.99 - (0.89 * (expanded - LOW)) / (HIGH - LOW);
  if (aliased > 100 && expanded > LOW && aliased / expanded > allowed) {
    return `its aliases expand it to ${expanded} nodes from ${distinct} written (a YAML alias bomb?): refused, as Kubernetes refuses excessive aliasing`;
  }
  return undefined;
}

/** Parses the documents of config files into objects by kind. Throws ConfigError for YAML syntax, unknown
 *  kinds and apiVersions, objects defined twice, alias bombs and (unless allowed) a file with no object,
 *  naming file, document and line. */
export function parseConfig(files: RawFile[], opts: ParseOptions = {}): ConfigSnapshot {
  return runSteps(parseSteps(files, undefined, opts)).snapshot;
}

/**
 * parseConfig in steps. A document whose text is in `previous` (the documents of the last parse) is not parsed
 * again: it is the same object as before, which lets the agent's Compiler keep everything made from it.
 * Returns the documents of this parse, for the next one.
 */
export function* parseSteps(
  files: RawFile[],
  previous?: Map<string, unknown>,
  opts: ParseOptions = {},
): Steps<{ snapshot: ConfigSnapshot; documents: Map<string, unknown> }> {
  const problems: string[] = [];
  const out: ConfigSnapshot = { services: [], endpointSlices: [], httpRoutes: [], workloads: [], securityPolicies: [], origins: new Map() };
  const documents = new Map<string, unknown>();
  const tick = every(64);
  for (const f of files) {
    let objects = 0;
    let broken = false;
    for (const chunk of yield* documentSteps(f.text)) {
      if (tick()) yield;
      const origin: Origin = { file: f.path, document: chunk.index, line: chunk.contentLine };
      const where = originText(origin);
      let obj: unknown = previous?.get(chunk.text);
      try {
        // Duplicate keys are an error (json: false); the core schema, as Kubernetes' YAML reads it.
        obj ??= load(chunk.text, { filename: f.path });
      } catch (err) {
        const e = err as YAMLException;
        const pos = e.mark ? ` (line ${chunk.startLine + e.mark.line}, column ${e.mark.column + 1})` : '';
        problems.push(`${f.path}: document ${chunk.index}${pos}: YAML syntax: ${e.reason ?? e.message}`);
        broken = true;
        continue;
      }
      if (obj === null || obj === undefined) continue; // an empty document (e.g. a trailing ---)
      objects++;
      const bomb = aliasProblem(obj);
      if (bomb) {
        problems.push(`${f.path}: document ${chunk.index} (line ${chunk.contentLine}): ${bomb}`);
        continue;
      }
      const problem = checkHeader(obj);
      if (problem) {
        problems.push(`${where}: ${problem}`);
        continue;
      }
      const o = obj as { kind: string; metadata: ObjectMeta };
      const key = objectName(o.kind, o.metadata);
      const prev = out.origins!.get(key);
      if (prev) {
        problems.push(`${where}: ${key}: metadata.name: already defined at ${originText(prev)}`);
        continue;
      }
      out.origins!.set(key, origin);
      documents.set(chunk.text, obj);
      const list = { Service: out.services, EndpointSlice: out.endpointSlices, HTTPRoute: out.httpRoutes, Workload: out.workloads, PeerAuthentication: out.securityPolicies, AuthorizationPolicy: out.securityPolicies }[o.kind as keyof typeof KINDS & string] as unknown[];
      list.push(obj);
    }
    if (objects === 0 && !broken && !opts.allowEmpty) {
      problems.push(`${f.path}: the file holds no objects: applying it would delete every service it held (refused; --allow-empty-config applies empty files)`);
    }
  }
  if (problems.length) throw new ConfigError(problems);
  return { snapshot: out, documents };
}

/** The content hash of the files (the config's revision), 1 MiB at a time. */
function* hashSteps(files: RawFile[]): Steps<string> {
  const hash = createHash('sha256');
  for (const f of files) {
    hash.update(f.path).update('\0');
    for (let i = 0; i < f.text.length; i += 1 << 20) {
      hash.update(f.text.slice(i, i + (1 << 20)));
      yield;
    }
    hash.update('\0');
  }
  return hash.digest('hex').slice(0, 16);
}

export function loadConfig(path: string, opts: ParseOptions = {}): ConfigSnapshot {
  return parseConfig(readConfigFiles(path, opts.maxFileBytes), opts);
}

export interface FileSourceOptions extends ParseOptions {
  /** Fallback poll interval; default 2,000 ms. */
  pollMs?: number;
  /** Quiet time after a change before looking at the files (editors write in steps); default 150 ms. */
  debounceMs?: number;
  /** How long the files' size, mtime and inode must stay the same, with no process holding one open for
   *  writing, before they are read; default 500 ms (more than the pauses of a writer that appends in steps). */
  settleMs?: number;
  /** Told when a change is held back because a process still writes a file (once per set of writers). */
  onWaiting?: (writers: Writer[]) => void;
}

export class FileSource implements ConfigSource {
  readonly description: string;
  private watcher: FSWatcher | undefined;
  private poll: NodeJS.Timeout | undefined;
  private timer: NodeJS.Timeout | undefined;
  private onUpdate: ((u: ConfigUpdate) => void) | undefined;
  private lastHash: string | undefined;
  /** Names, sizes, mtimes and inodes at the last read: the poll reads files only when these change. */
  private lastStat: string | undefined;
  /** The signature first seen unchanged, and when: the files are stable once it has held for settleMs. */
  private seen: { sig: string; at: number } | undefined;
  private waitingFor = '';
  /** The documents of the last parse, by text: unchanged ones are not parsed again. */
  private documents = new Map<string, unknown>();
  /** A read is under way; `again`: a look at the files was asked for meanwhile, taken once it is done. */
  private reading = false;
  private again = false;

  constructor(
    private readonly path: string,
    private readonly opts: FileSourceOptions = {},
  ) {
    this.description = `file ${path}`;
  }

  private statSignature(): { sig: string; paths: string[]; newestMtime: number } {
    try {
      const paths = configPaths(this.path);
      let newestMtime = 0;
      const sig = paths
        .map((p) => {
          const s = statSync(p);
          newestMtime = Math.max(newestMtime, s.mtimeMs);
          return `${p}:${s.size}:${s.mtimeMs}:${s.ino}`;
        })
        .join('|');
      return { sig, paths, newestMtime };
    } catch (err) {
      return { sig: `error:${(err as Error).message}`, paths: [], newestMtime: 0 };
    }
  }

  /** Reads the config now, hashing and parsing in steps (run at once for the first look, then with the event
   *  loop served between them); a problem is an `error` update, never a throw. */
  private *read(sig: string): Steps<ConfigUpdate | undefined> {
    this.lastStat = sig;
    let files: RawFile[];
    try {
      files = yield* readConfigSteps(this.path, this.opts.maxFileBytes);
    } catch (err) {
      // Delivered once, not at every poll; when the old content comes back it differs from this and is applied.
      const key = `error:${(err as Error).message}`;
      if (key === this.lastHash) return undefined;
      this.lastHash = key;
      return { error: err as ConfigError };
    }
    // A big config is parsed and compiled with V8 tuned for speed, a small one for size (see heap.ts).
    heapModeFor(files.reduce((n, f) => n + f.text.length, 0));
    const digest = yield* hashSteps(files);
    if (digest === this.lastHash) return undefined;
    this.lastHash = digest;
    try {
      const t0 = performance.now();
      const { snapshot, documents } = yield* parseSteps(files, this.documents, this.opts);
      this.documents = documents;
      return { snapshot, revision: digest, readMs: msSince(t0) };
    } catch (err) {
      return { error: err as Error, revision: digest };
    }
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.check();
    }, ms);
  }

  /** Reads the files if they are stable (no writer, unchanged for settleMs, unchanged while read); otherwise
   *  looks again later. */
  private check(first = false): void {
    if (!this.onUpdate) return;
    if (this.reading) return void (this.again = true);
    const settle = this.opts.settleMs ?? 500;
    const now = Date.now();
    const { sig, paths, newestMtime } = this.statSignature();
    const writers = openWriters(paths);
    if (writers.length) {
      const key = writers.map((w) => `${w.pid}:${w.file}`).join(',');
      if (key !== this.waitingFor) this.opts.onWaiting?.(writers);
      this.waitingFor = key;
      this.seen = undefined;
      return this.schedule(settle);
    }
    this.waitingFor = '';
    if (this.seen?.sig !== sig) this.seen = { sig, at: now };
    // Untouched for the settle time already (a file written long ago), or seen unchanged for that long.
    const quietSince = Math.min(this.seen.at, newestMtime <= now ? newestMtime : now);
    if (now - quietSince < settle) return this.schedule(settle - (now - quietSince));
    const before = this.lastHash;
    const finish = (u: ConfigUpdate | undefined): void => {
      if (!this.onUpdate) return; // stopped meanwhile
      if (this.statSignature().sig !== sig) {
        // Changed while read: not what a finished writer left. Read again once it settles.
        this.lastHash = before;
        this.seen = undefined;
        return this.schedule(settle);
      }
      if (u) this.onUpdate(u);
    };
    this.reading = true;
    if (first) {
      // The first read completes before start() returns.
      try {
        finish(runSteps(this.read(sig)));
      } finally {
        this.reading = false;
      }
      return;
    }
    void runStepsAsync(this.read(sig))
      .then(finish, (err: unknown) => finish({ error: err as Error }))
      .finally(() => {
        this.reading = false;
        if (this.again && this.onUpdate) {
          this.again = false;
          this.schedule(this.opts.debounceMs ?? 150);
        }
      });
  }

  /** Starts watching; the first update comes once the files are stable (at once for files not written in the
   *  last settleMs). */
  start(onUpdate: (u: ConfigUpdate) => void): void {
    this.onUpdate = onUpdate;
    this.check(true);
    const schedule = () => this.schedule(this.opts.debounceMs ?? 150);
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
      if (this.statSignature().sig !== this.lastStat && this.timer === undefined) schedule();
    }, this.opts.pollMs ?? 2000);
    this.poll.unref();
  }

  stop(): void {
    this.onUpdate = undefined;
    this.watcher?.close();
    clearInterval(this.poll);
    clearTimeout(this.timer);
  }
}
