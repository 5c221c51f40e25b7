/** Codecs mirroring bpf/include/mtls.h. */
import { isIP, isIPv4 } from 'node:net';

import { codec as c } from '@mesh/bpf';

export const { AF_INET, AF_INET6 } = c;

/** mtls_addr: an address with port, network order; IPv4 (and IPv4-mapped IPv6) in the first 4 bytes. */
export const mtlsAddr = c.struct({ addr: c.bytes(16), port: c.u16be, family: c.u8, pad: c.pad(1) }, { name: 'mtls_addr' });
export const mtlsOrig = c.struct({ dst: mtlsAddr, dialled: mtlsAddr }, { name: 'mtls_orig' });
export const mtlsConfig = c.struct(
  { out4: c.bytes(4), out6: c.bytes(16), in4: c.bytes(4), in6: c.bytes(16), outPort: c.u16be, flags: c.u16 },
  { name: 'mtls_config' },
);
export const mtlsPortKey = c.struct({ cgroupId: c.u64, port: c.u16, pad1: c.pad(2), pad2: c.pad(4) }, { name: 'mtls_port_key' });
export const mtlsPairKey = c.struct({ cgroupId: c.u64, dst: mtlsAddr, pad: c.pad(4) }, { name: 'mtls_pair_key' });
export const mtlsConnKey = c.struct({ src: mtlsAddr, dst: mtlsAddr }, { name: 'mtls_conn_key' });

export type MtlsAddr = c.Infer<typeof mtlsAddr>;
export type MtlsOrig = c.Infer<typeof mtlsOrig>;
export type MtlsConfig = c.Infer<typeof mtlsConfig>;
export type MtlsPortKey = c.Infer<typeof mtlsPortKey>;
export type MtlsPairKey = c.Infer<typeof mtlsPairKey>;
export type MtlsConnKey = c.Infer<typeof mtlsConnKey>;

export const CFG_OUT4 = 1;
export const CFG_OUT6 = 2;
export const CFG_IN4 = 4;
export const CFG_IN6 = 8;

export const MODE_STRICT = 1;
export const MODE_PERMISSIVE = 2;

/** enum mtls_counter, in order. */
export const counterNames = [
  'capture',
  'capture_no_dataplane',
  'orig_note',
  'orig_no_storage',
  'getpeername_rewrite',
  'strict_drop_plaintext',
  'strict_drop_malformed',
  'strict_pass_dataplane',
  'strict_pass_connected',
  'bind_refused',
  'local_direct',
  'strict_pass_local',
] as const;
export type CounterName = (typeof counterNames)[number];

/** An IP as the maps hold it, IPv4-mapped IPv6 as IPv4 (the programs see a dual-stack socket's IPv4 peers so). */
export function normalIp(ip: string): { bytes: Buffer; family: number } {
  if (isIP(ip) === 0) throw new TypeError(`expected an IP address, got ${JSON.stringify(ip)}`);
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  const v4 = m ? m[1]! : isIPv4(ip) ? ip : undefined;
  const bytes = Buffer.alloc(16);
  if (v4 !== undefined) {
    c.ipToBytes(v4).copy(bytes, 0);
    return { bytes, family: AF_INET };
  }
  c.ipToBytes(ip).copy(bytes, 0);
  return { bytes, family: AF_INET6 };
}

export function addrKey(ip: string, port: number): MtlsAddr {
  const { bytes, family } = normalIp(ip);
  return { addr: bytes, port, family };
}

export function addrString(a: MtlsAddr): string {
  const ip = c.bytesToIp(a.addr, a.family);
  return a.family === AF_INET ? `${ip}:${a.port}` : `[${ip}]:${a.port}`;
}
