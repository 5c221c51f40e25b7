/** Codecs mirroring bpf/include/split.h. */
import { isIPv4 } from 'node:net';

import { codec as c } from '@mesh/bpf';

import { counterNames } from './generated/shared.js';

export const MAX_BACKENDS = 16;
export const { AF_INET, AF_INET6 } = c;
export const IPPROTO = { TCP: 6, UDP: 17 } as const;

/** An address as the split maps hold it: 16 bytes, IPv4 in the first 4. */
export function addr16(ip: string): Buffer {
  // From Node's shared pool (allocUnsafe): a table apply makes 100,000 of them, and an ArrayBuffer each (what
  // Buffer.alloc makes) is a backing store the collector tracks one by one.
  const b = Buffer.allocUnsafe(16).fill(0);
  if (!c.ipv4Into(ip, b, 0)) c.ipToBytes(ip).copy(b, 0);
  return b;
}

export function fromAddr16(b: Buffer, family: number): string {
  return c.bytesToIp(b, family);
}

export const svcKey = c.struct({ addr: c.bytes(16), port: c.u16be, proto: c.u8, family: c.u8 }, { name: 'svc_key' });
export const svcValue = c.struct(
  {
    id: c.u32,
    version: c.u32,
    nbackends: c.u32,
    totalWeight: c.u32,
    cumWeight: c.array(c.u32, MAX_BACKENDS),
    nendpoints: c.array(c.u32, MAX_BACKENDS),
    check: c.u32,
    lock: c.pad(4),
  },
  { name: 'svc_value' },
);
export const epKey = c.struct({ svcId: c.u32, version: c.u32, backend: c.u16, index: c.u16 }, { name: 'ep_key' });
export const epValue = c.struct({ addr: c.bytes(16), port: c.u16be, family: c.u8, pad: c.pad(1), check: c.u32 }, { name: 'ep_value' });

export type SvcKey = c.Infer<typeof svcKey>;
export type SvcValue = c.Infer<typeof svcValue>;
export type EpKey = c.Infer<typeof epKey>;
export type EpValue = c.Infer<typeof epValue>;

// split.h's SPLIT_CHECK_SEED and SPLIT_CHECK_MUL: an entry's check, over the key's and the value's 32-bit words
// as the host (little-endian) reads them, so a program can tell a whole copy of the entry it looked up.
const CHECK_SEED = 0x6d657368;
const CHECK_MUL = 0x9e3779b1;

function mix(h: number, w: number): number {
  h = Math.imul(h ^ w, CHECK_MUL);
  return (h ^ (h >>> 15)) >>> 0;
}

function mixAddr(h: number, addr: Buffer): number {
  for (let i = 0; i < 16; i += 4) h = mix(h, addr.readUInt32LE(i));
  return h;
}

/** A network-order u16 and the two bytes after it, as the host's u32 word holding them. */
function portWord(port: number, b2: number, b3: number): number {
  return ((port >>> 8) | ((port & 0xff) << 8) | (b2 << 16) | (b3 << 24)) >>> 0;
}

/** The check a service entry carries (svc_value.check). */
export function svcCheck(key: SvcKey, v: SvcValue): number {
  let h = mixAddr(CHECK_SEED, key.addr);
  h = mix(h, portWord(key.port, key.proto, key.family));
  h = mix(mix(mix(mix(h, v.id), v.version), v.nbackends), v.totalWeight);
  for (const w of v.cumWeight) h = mix(h, w);
  for (const w of v.nendpoints) h = mix(h, w);
  return h;
}

/** The check an endpoint entry carries (ep_value.check). */
export function epCheck(key: EpKey, v: EpValue): number {
  return epCheckOf(key.svcId, key.version, key.backend, key.index, v.addr, v.port, v.family);
}

function epCheckOf(svcId: number, version: number, backend: number, index: number, addr: Uint8Array, port: number, family: number): number {
  let h = mix(mix(mix(CHECK_SEED, svcId), version), (backend | (index << 16)) >>> 0);
  for (let i = 0; i < 16; i += 4) h = mix(h, (addr[i]! | (addr[i + 1]! << 8) | (addr[i + 2]! << 16) | (addr[i + 3]! << 24)) >>> 0);
  return mix(h, portWord(port, family, 0));
}

// The entries' layouts as the codecs lay them out (checked below): the Entries classes write them field by field.
const EP_KEY_SIZE = 12;
const EP_VALUE_SIZE = 24;
const SVC_KEY_SIZE = 20;
const SVC_VALUE_SIZE = 152;

/**
 * Map entries encoded as they are made, for BpfMap.setBatchEncoded: a table apply makes 150,000 of them, and an
 * object for each key, value and pair (then encoded one by one by the codecs) was most of its garbage.
 */
abstract class Entries {
  keys: Buffer;
  values: Buffer;
  count = 0;

  constructor(
    private readonly keySize: number,
    private readonly valueSize: number,
  ) {
    this.keys = Buffer.allocUnsafe(keySize * 256);
    this.values = Buffer.allocUnsafe(valueSize * 256);
  }

  /** Room for one more entry; its key's and value's offsets. */
  protected next(): [number, number] {
    if ((this.count + 1) * this.keySize > this.keys.length) {
      const keys = Buffer.allocUnsafe(this.keys.length * 2);
      const values = Buffer.allocUnsafe(this.values.length * 2);
      this.keys.copy(keys, 0, 0, this.count * this.keySize);
      this.values.copy(values, 0, 0, this.count * this.valueSize);
      this.keys = keys;
      this.values = values;
    }
    const i = this.count++;
    return [i * this.keySize, i * this.valueSize];
  }

  /** Entries [from, to): their keys and values. */
  slice(from: number, to: number): { keys: Buffer; values: Buffer } {
    return { keys: this.keys.subarray(from * this.keySize, to * this.keySize), values: this.values.subarray(from * this.valueSize, to * this.valueSize) };
  }
}

/** Endpoint entries (ep_key, ep_value), check included. */
export class EpEntries extends Entries {
  constructor() {
    super(EP_KEY_SIZE, EP_VALUE_SIZE);
  }

  push(svcId: number, version: number, backend: number, index: number, addr: Buffer, family: number, port: number): void {
    const [k, v] = this.next();
    this.keys.writeUInt32LE(svcId >>> 0, k);
    this.keys.writeUInt32LE(version >>> 0, k + 4);
    this.keys.writeUInt16LE(backend, k + 8);
    this.keys.writeUInt16LE(index, k + 10);
    addr.copy(this.values, v, 0, 16);
    this.values.writeUInt16BE(port, v + 16);
    this.values[v + 18] = family;
    this.values[v + 19] = 0;
    this.values.writeUInt32LE(epCheckOf(svcId, version, backend, index, addr, port, family), v + 20);
  }

  /** The keys as objects (to undo a refused apply). */
  keyList(): EpKey[] {
    const out: EpKey[] = [];
    for (let i = 0; i < this.count; i++) out.push(epKey.decode(this.keys, i * EP_KEY_SIZE));
    return out;
  }
}

/** Service entries (svc_key, svc_value); the value's check as the caller made it (svcCheck). */
export class SvcEntries extends Entries {
  constructor() {
    super(SVC_KEY_SIZE, SVC_VALUE_SIZE);
  }

  push(key: SvcKey, value: SvcValue): void {
    const [k, v] = this.next();
    const { keys, values } = this;
    key.addr.copy(keys, k, 0, 16);
    keys.writeUInt16BE(key.port, k + 16);
    keys[k + 18] = key.proto;
    keys[k + 19] = key.family;
    values.writeUInt32LE(value.id >>> 0, v);
    values.writeUInt32LE(value.version >>> 0, v + 4);
    values.writeUInt32LE(value.nbackends >>> 0, v + 8);
    values.writeUInt32LE(value.totalWeight >>> 0, v + 12);
    for (let i = 0; i < MAX_BACKENDS; i++) {
      values.writeUInt32LE((value.cumWeight[i] ?? 0) >>> 0, v + 16 + 4 * i);
      values.writeUInt32LE((value.nendpoints[i] ?? 0) >>> 0, v + 80 + 4 * i);
    }
    values.writeUInt32LE(value.check >>> 0, v + 144);
    values.writeUInt32LE(0, v + 148);
  }
}

/** BPF_F_LOCK: service entries are updated in place (split.h, svc_value.lock). */
export const BPF_F_LOCK = 4;

// The counters of enum split_counter, shared with the programs (bpf/include/shared.json).
export { counterNames };
export type CounterName = (typeof counterNames)[number];

export function familyOf(ip: string): number {
  return isIPv4(ip) ? AF_INET : AF_INET6;
}

if (epKey.size !== EP_KEY_SIZE || epValue.size !== EP_VALUE_SIZE || svcKey.size !== SVC_KEY_SIZE || svcValue.size !== SVC_VALUE_SIZE) {
  throw new Error(`ep_key/ep_value/svc_key/svc_value are ${epKey.size}/${epValue.size}/${svcKey.size}/${svcValue.size} bytes: the Entries classes lay out ${EP_KEY_SIZE}/${EP_VALUE_SIZE}/${SVC_KEY_SIZE}/${SVC_VALUE_SIZE}`);
}
