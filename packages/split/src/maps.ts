/** Codecs mirroring bpf/include/split.h. */
import { isIPv4 } from 'node:net';

import { codec as c } from '@mesh/bpf';

import { counterNames } from './generated/shared.js';

export const MAX_BACKENDS = 16;
export const { AF_INET, AF_INET6 } = c;
export const IPPROTO = { TCP: 6, UDP: 17 } as const;

/** An address as the split maps hold it: 16 bytes, IPv4 in the first 4. */
export function addr16(ip: string): Buffer {
  const b = Buffer.alloc(16);
  c.ipToBytes(ip).copy(b, 0);
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
  let h = mix(mix(mix(CHECK_SEED, key.svcId), key.version), (key.backend | (key.index << 16)) >>> 0);
  h = mixAddr(h, v.addr);
  return mix(h, portWord(v.port, v.family, 0));
}

/** BPF_F_LOCK: service entries are updated in place (split.h, svc_value.lock). */
export const BPF_F_LOCK = 4;

// The counters of enum split_counter, shared with the programs (bpf/include/shared.json).
export { counterNames };
export type CounterName = (typeof counterNames)[number];

export function familyOf(ip: string): number {
  return isIPv4(ip) ? AF_INET : AF_INET6;
}
