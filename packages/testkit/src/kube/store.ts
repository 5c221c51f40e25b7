// Objects in memory under one global resourceVersion counter, with a bounded history of change events that
// watches replay from. Dropping history (by the bound or by compact()) is what makes an old resourceVersion
// expire: a watch from before the compacted point gets 410 Gone, as from an etcd compaction.
import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { applyDefaults, checkUpdate, parseRange } from './defaults.js';
import { groupVersion, RESOURCES, type KubeObject, type ResourceType } from './resources.js';
import { ApiError } from './status.js';

export type ChangeType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface ChangeEvent {
  type: ChangeType;
  resourceVersion: number;
  resource: ResourceType;
  object: KubeObject;
  /** The object before a MODIFIED, for watches whose selector it moved into or out of. */
  previous?: KubeObject;
}

export interface StoreOptions {
  /** Change events kept for watches to replay; older ones are compacted away. Default 1000. */
  historyLimit?: number;
  /** Where Services get a spec.clusterIP when they ask for none. Default 127.96.0.0/16 (loopback, see defaults.ts). */
  serviceClusterIPRange?: string;
}

export interface Preconditions {
  resourceVersion?: string;
  uid?: string;
}

const NAME_CHARS = 'bcdfghjklmnpqrstvwxz2456789';
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const DNS_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
// Namespaces every cluster starts with.
const INITIAL_NAMESPACES = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];

export class ObjectStore {
  readonly historyLimit: number;
  readonly serviceClusterIPRange: string;
  #rv = 0;
  #compacted = 0;
  readonly #objects = new Map<ResourceType, Map<string, KubeObject>>(RESOURCES.map((r) => [r, new Map()]));
  readonly #history: ChangeEvent[] = [];
  readonly #listeners = new Set<(e: ChangeEvent) => void>();

  constructor(opts: StoreOptions = {}) {
    this.historyLimit = opts.historyLimit ?? 1000;
    if (!Number.isInteger(this.historyLimit) || this.historyLimit < 1) throw new RangeError(`historyLimit must be a positive integer, got ${opts.historyLimit}`);
    this.serviceClusterIPRange = opts.serviceClusterIPRange ?? '127.96.0.0/16';
    parseRange(this.serviceClusterIPRange);
    const ns = RESOURCES.find((r) => r.plural === 'namespaces')!;
    for (const name of INITIAL_NAMESPACES) this.create(ns, { apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
  }

  /** The latest resourceVersion handed out. */
  get resourceVersion(): number {
    return this.#rv;
  }

  /** Events at or below this resourceVersion are gone; a watch from an older one gets 410. */
  get compactedResourceVersion(): number {
    return this.#compacted;
  }

  get(r: ResourceType, namespace: string | undefined, name: string): KubeObject | undefined {
    return this.#objects.get(r)!.get(key(r, namespace, name));
  }

  /** Objects of a resource, in one namespace or all, sorted by namespace then name. */
  list(r: ResourceType, namespace?: string): KubeObject[] {
    const all = [...this.#objects.get(r)!.values()];
    const inNs = namespace === undefined || !r.namespaced ? all : all.filter((o) => o.metadata.namespace === namespace);
    return inNs.sort((a, b) => cmp(a.metadata.namespace ?? '', b.metadata.namespace ?? '') || cmp(a.metadata.name!, b.metadata.name!));
  }

  create(r: ResourceType, input: KubeObject): KubeObject {
    const obj = this.#checked(r, input);
    const meta = obj.metadata;
    if (meta.name === undefined && meta.generateName !== undefined) meta.name = generatedName(meta.generateName);
    this.#checkName(r, obj);
    if (r.namespaced) this.#checkNamespace(obj.metadata.namespace);
    const k = key(r, meta.namespace, meta.name!);
    if (this.#objects.get(r)!.has(k)) throw ApiError.alreadyExists(r.plural, meta.name!, r.group);
    applyDefaults(r, obj, this);
    const rv = ++this.#rv;
    Object.assign(meta, { uid: randomUUID(), resourceVersion: String(rv), generation: 1, creationTimestamp: timestamp() });
    this.#objects.get(r)!.set(k, obj);
    this.#record({ type: 'ADDED', resourceVersion: rv, resource: r, object: obj });
    return obj;
  }

  /**
   * Replace an object. A resourceVersion in the input must be the stored one (optimistic concurrency, 409
   * otherwise); without one the update is unconditional, as the apiserver allows for these kinds.
   */
  replace(r: ResourceType, input: KubeObject): KubeObject {
    const obj = this.#checked(r, input);
    const meta = obj.metadata;
    if (meta.name === undefined) throw ApiError.invalid(r.kind, '', r.group, 'metadata.name', 'Required value: name is required');
    const k = key(r, meta.namespace, meta.name);
    const old = this.#objects.get(r)!.get(k);
    if (old === undefined) throw ApiError.notFound(r.plural, meta.name, r.group);
    if (meta.resourceVersion !== undefined && meta.resourceVersion !== '' && meta.resourceVersion !== old.metadata.resourceVersion) {
      throw ApiError.conflict(r.plural, meta.name, r.group, 'the object has been modified; please apply your changes to the latest version and try again');
    }
    if (meta.uid !== undefined && meta.uid !== old.metadata.uid) {
      throw ApiError.conflict(r.plural, meta.name, r.group, `Precondition failed: UID in precondition: ${meta.uid}, UID in object meta: ${old.metadata.uid}`);
    }
    checkUpdate(r, old, obj, this);
    // What the server owns is kept; an update that then changes nothing is not written (no new resourceVersion,
    // no event), as the apiserver does.
    const { uid, creationTimestamp, generation, resourceVersion } = old.metadata;
    Object.assign(meta, { uid, creationTimestamp, generation, resourceVersion });
    if (isDeepStrictEqual(old, obj)) return old;
    const rv = ++this.#rv;
    meta.resourceVersion = String(rv);
    if (!isDeepStrictEqual(body(old), body(obj))) meta.generation = (generation ?? 1) + 1;
    this.#objects.get(r)!.set(k, obj);
    this.#record({ type: 'MODIFIED', resourceVersion: rv, resource: r, object: obj, previous: old });
    return obj;
  }

  delete(r: ResourceType, namespace: string | undefined, name: string, pre: Preconditions = {}): KubeObject {
    const k = key(r, r.namespaced ? namespace : undefined, name);
    const old = this.#objects.get(r)!.get(k);
    if (old === undefined) throw ApiError.notFound(r.plural, name, r.group);
    if (pre.uid !== undefined && pre.uid !== old.metadata.uid) {
      throw ApiError.conflict(r.plural, name, r.group, `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${old.metadata.uid}`);
    }
    if (pre.resourceVersion !== undefined && pre.resourceVersion !== old.metadata.resourceVersion) {
      throw ApiError.conflict(r.plural, name, r.group, `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${old.metadata.resourceVersion}`);
    }
    if (r.plural === 'namespaces') {
      // Namespace deletion takes its contents with it (the namespace controller's job, done at once here).
      for (const other of RESOURCES.filter((o) => o.namespaced)) {
        for (const o of this.list(other, name)) this.delete(other, name, o.metadata.name!);
      }
    }
    this.#objects.get(r)!.delete(k);
    const rv = ++this.#rv;
    const gone: KubeObject = { ...old, metadata: { ...old.metadata, resourceVersion: String(rv) } };
    this.#record({ type: 'DELETED', resourceVersion: rv, resource: r, object: gone });
    return gone;
  }

  /** Events after `resourceVersion`, oldest first; undefined when some of them were compacted away. */
  eventsSince(resourceVersion: number): ChangeEvent[] | undefined {
    if (resourceVersion < this.#compacted) return undefined;
    return this.#history.filter((e) => e.resourceVersion > resourceVersion);
  }

  /** Drop the history up to `resourceVersion` (default: all of it). */
  compact(resourceVersion = this.#rv): void {
    if (!Number.isInteger(resourceVersion) || resourceVersion < 0 || resourceVersion > this.#rv) {
      throw new RangeError(`compact: resourceVersion must be an integer between 0 and ${this.#rv}, got ${resourceVersion}`);
    }
    while (this.#history.length > 0 && this.#history[0]!.resourceVersion <= resourceVersion) this.#history.shift();
    this.#compacted = Math.max(this.#compacted, resourceVersion);
  }

  /** Called with every change as it is made; returns the unsubscribe function. */
  subscribe(fn: (e: ChangeEvent) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** The resource of an object from its apiVersion and kind; ApiError 400 when this server serves none. */
  resourceOf(obj: Pick<KubeObject, 'apiVersion' | 'kind'>): ResourceType {
    const r = RESOURCES.find((t) => groupVersion(t) === obj.apiVersion && t.kind === obj.kind);
    if (r === undefined) throw ApiError.badRequest(`no resource served for apiVersion ${JSON.stringify(obj.apiVersion)} kind ${JSON.stringify(obj.kind)}`);
    return r;
  }

  #record(e: ChangeEvent): void {
    this.#history.push(e);
    if (this.#history.length > this.historyLimit) this.#compacted = this.#history.shift()!.resourceVersion;
    for (const fn of this.#listeners) fn(e);
  }

  /** A private copy of the input with apiVersion/kind checked and set. */
  #checked(r: ResourceType, input: KubeObject): KubeObject {
    if (typeof input !== 'object' || input === null || Array.isArray(input)) throw ApiError.badRequest(`${r.kind}: the body must be a JSON object`);
    const obj = structuredClone(input);
    const gv = groupVersion(r);
    if (obj.apiVersion !== undefined && obj.apiVersion !== gv) {
      throw ApiError.badRequest(`the API version in the data (${obj.apiVersion}) does not match the expected API version (${gv})`);
    }
    if (obj.kind !== undefined && obj.kind !== r.kind) throw ApiError.badRequest(`the kind in the data (${obj.kind}) does not match the expected kind (${r.kind})`);
    obj.apiVersion = gv;
    obj.kind = r.kind;
    if (typeof obj.metadata !== 'object' || obj.metadata === null) obj.metadata = {};
    if (!r.namespaced) delete obj.metadata.namespace;
    else if (obj.metadata.namespace === undefined || obj.metadata.namespace === '') obj.metadata.namespace = 'default';
    return obj;
  }

  #checkName(r: ResourceType, obj: KubeObject): void {
    const name = obj.metadata.name;
    if (name === undefined || name === '') throw ApiError.invalid(r.kind, '', r.group, 'metadata.name', 'Required value: name or generateName is required');
    const label = r.plural === 'services' || r.plural === 'namespaces';
    const ok = label ? DNS_LABEL.test(name) && name.length <= 63 : DNS_SUBDOMAIN.test(name) && name.length <= 253;
    if (!ok) {
      const rule = label
        ? 'a DNS-1035 label must consist of lower case alphanumeric characters or \'-\', start with a letter, end with an alphanumeric character, at most 63 characters'
        : 'a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \'-\' or \'.\', and must start and end with an alphanumeric character';
      throw ApiError.invalid(r.kind, name, r.group, 'metadata.name', `Invalid value: ${JSON.stringify(name)}: ${rule}`);
    }
  }

  #checkNamespace(namespace: string | undefined): void {
    const nsType = RESOURCES.find((r) => r.plural === 'namespaces')!;
    if (this.get(nsType, undefined, namespace!) === undefined) throw ApiError.notFound('namespaces', namespace!);
  }
}

function key(r: ResourceType, namespace: string | undefined, name: string): string {
  return r.namespaced ? `${namespace ?? 'default'}/${name}` : name;
}

/** What a change of bumps metadata.generation: everything but metadata and status. */
function body(obj: KubeObject): object {
  const { metadata: _m, status: _s, ...rest } = obj;
  return rest;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function generatedName(prefix: string): string {
  let s = prefix;
  for (let i = 0; i < 5; i++) s += NAME_CHARS[Math.floor(Math.random() * NAME_CHARS.length)];
  return s;
}

/** RFC 3339 to the second, as metav1.Time serializes. */
function timestamp(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}
