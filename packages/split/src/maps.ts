/** Codecs mirroring bpf/include/split.h. */
import { isIPv4 } from 'node:net';

import { codec as c } from '@mesh/bpf';

export const MAX_BACKENDS = 16;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const IPPROTO = { TCP: 6, UDP: 17 } as const;

/** An address as the split maps hold it: 16 bytes, IPv4 in the first 4. */
export function addr16(ip: string): Buffer {
  const b = Buffer.alloc(16);
  c.ipToBytes(ip).copy(b, 0);
  return b;
}

export function fromAddr16(b: Buffer, family: number): string {
  return c.bytesToIp(family === AF_INET ? b.subarray(0, 4) : b);
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
  },
  { name: 'svc_value' },
);
export const epKey = c.struct({ svcId: c.u32, version: c.u32, backend: c.u16, index: c.u16 }, { name: 'ep_key' });
export const epValue = c.struct({ addr: c.bytes(16), port: c.u16be, family: c.u8, pad: c.pad(1) }, { name: 'ep_value' });

export type SvcKey = c.Infer<typeof svcKey>;
export type SvcValue = c.Infer<typeof svcValue>;
export type EpKey = c.Infer<typeof epKey>;
export type EpValue = c.Infer<typeof epValue>;

export const counterNames = [
  'connect_rewrite',
  'connect_no_backend',
  'sendmsg_rewrite',
  'sendmsg_no_backend',
  'recvmsg_rewrite',
  'getpeername_rewrite',
  'table_retry',
  'orig_full',
  'orig_claim',
  'orig_release',
] as const;
export type CounterName = (typeof counterNames)[number];

export function familyOf(ip: string): number {
  return isIPv4(ip) ? AF_INET : AF_INET6;
}
