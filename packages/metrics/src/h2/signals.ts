/**
 * What golden signals need from a decoded header block: method, path, status, content type, gRPC status
 * (trailers) and gRPC service and method (from the path).
 */
import type { FieldSink } from './hpack.js';

export interface HeaderSignals {
  method?: string;
  path?: string;
  /** :status as a number (100..599); absent when missing or not three digits. */
  status?: number;
  contentType?: string;
  /** content-type is application/grpc or application/grpc+… / ;… */
  grpc: boolean;
  /** grpc-status (trailers, or a trailers-only response). */
  grpcStatus?: number;
  /** From a gRPC request's :path `/package.Service/Method`. */
  rpcService?: string;
  rpcMethod?: string;
  /** A pseudo-header repeated or malformed (a :status that is not three digits, a non-numeric grpc-status). */
  malformed: boolean;
}

/** `/package.Service/Method` → ['package.Service', 'Method']; undefined for anything else. */
export function grpcPath(path: string): [service: string, method: string] | undefined {
  if (path.length < 4 || path.charCodeAt(0) !== 0x2f) return undefined;
  const slash = path.indexOf('/', 1);
  if (slash <= 1 || slash === path.length - 1 || path.indexOf('/', slash + 1) !== -1) return undefined;
  return [path.slice(1, slash), path.slice(slash + 1)];
}

/** The fields SignalCollector reads: a decoder need not make strings of the others' values. */
export const SIGNAL_FIELDS: ReadonlySet<string> = new Set([':status', ':method', ':path', 'content-type', 'grpc-status']);

const GRPC_TYPE = 'application/grpc';

/** application/grpc, application/grpc+proto, application/grpc;charset=… (case-insensitive). Allocates nothing. */
export function isGrpcContentType(value: string): boolean {
  const n = GRPC_TYPE.length;
  if (value.length < n) return false;
  // From the end: other types (application/json, text/plain…) differ in the last characters of the prefix.
  for (let i = n - 1; i >= 0; i--) {
    // ASCII letters fold to lower case with 0x20; the other characters of the type are not letters.
    const c = value.charCodeAt(i);
    if ((c >= 0x41 && c <= 0x5a ? c | 0x20 : c) !== GRPC_TYPE.charCodeAt(i)) return false;
  }
  if (value.length === n) return true;
  const c = value.charCodeAt(n);
  return c === 0x2b /* + */ || c === 0x3b /* ; */;
}

function threeDigits(v: string): number | undefined {
  if (v.length !== 3) return undefined;
  const a = v.charCodeAt(0) - 48;
  const b = v.charCodeAt(1) - 48;
  const c = v.charCodeAt(2) - 48;
  if (a < 1 || a > 5 || b < 0 || b > 9 || c < 0 || c > 9) return undefined;
  return a * 100 + b * 10 + c;
}

function decimal(v: string): number | undefined {
  if (v.length === 0 || v.length > 9) return undefined;
  let n = 0;
  for (let i = 0; i < v.length; i++) {
    const d = v.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return undefined;
    n = n * 10 + d;
  }
  return n;
}

/**
 * Collects HeaderSignals from one block's fields: pass `sink` to HpackDecoder.decode, then take `take()`. One
 * collector serves every block of a direction (no closure per block).
 */
// Every field present from the start: one object shape whatever the block holds.
const fresh = (): HeaderSignals => ({
  method: undefined,
  path: undefined,
  status: undefined,
  contentType: undefined,
  grpc: false,
  grpcStatus: undefined,
  rpcService: undefined,
  rpcMethod: undefined,
  malformed: false,
});

export class SignalCollector {
  #s: HeaderSignals = fresh();
  /** #s went out by takeShared: cleared when the next block begins. */
  #shared = false;
  readonly sink: FieldSink = (name, value) => this.#field(name, value);

  /** A block starts: signals handed out by takeShared are cleared for it (nothing is needed after take). */
  begin(): void {
    if (!this.#shared) return;
    const s = this.#s;
    s.method = s.path = s.contentType = s.rpcService = s.rpcMethod = undefined;
    s.status = s.grpcStatus = undefined;
    s.grpc = s.malformed = false;
    this.#shared = false;
  }

  /** The signals of the block decoded since the last take. */
  take(): HeaderSignals {
    const s = this.#finish();
    this.#s = fresh();
    this.#shared = false;
    return s;
  }

  /** take(), in an object the collector reuses from the next begin() on: for a caller that reads it at once. */
  takeShared(): HeaderSignals {
    this.#shared = true;
    return this.#finish();
  }

  #finish(): HeaderSignals {
    const s = this.#s;
    if (s.grpc && s.path !== undefined) {
      const rpc = grpcPath(s.path);
      if (rpc) [s.rpcService, s.rpcMethod] = rpc;
    }
    return s;
  }

  #field(name: string, value: string): void {
    const s = this.#s;
    switch (name) {
      case ':status': {
        const st = threeDigits(value);
        if (st === undefined || s.status !== undefined) s.malformed = true;
        else s.status = st;
        break;
      }
      case ':method':
        if (s.method !== undefined) s.malformed = true;
        else s.method = value;
        break;
      case ':path':
        if (s.path !== undefined) s.malformed = true;
        else s.path = value;
        break;
      case 'content-type':
        s.contentType = value;
        s.grpc = isGrpcContentType(value);
        break;
      case 'grpc-status': {
        const code = decimal(value);
        if (code === undefined) s.malformed = true;
        else s.grpcStatus = code;
        break;
      }
    }
  }
}
