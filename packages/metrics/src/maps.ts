/** Codecs mirroring bpf/include/http.h. */
import { codec as c } from '@mesh/bpf';

import { BUCKET_BOUNDS_S, counterNames, HTTP_BUCKETS } from './generated/shared.js';

// Bucket bounds and counter names shared with the programs (bpf/include/shared.json).
export { BUCKET_BOUNDS_S, counterNames, HTTP_BUCKETS };
/** The key every map holds from load on, where what finds no room of its own is counted. */
export const OVERFLOW_CGROUP = 0xffffffffffffffffn;

export const METHODS = ['', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH', '_OTHER'] as const;

export const httpKey = c.struct(
  { cgroupId: c.u64, remoteIp: c.bytes(16), port: c.u16, status: c.u16, dir: c.u8, method: c.u8, family: c.u8, pad: c.pad(5) },
  { name: 'http_key' },
);
export const httpValue = c.struct({ count: c.u64n, sumNs: c.u64n, buckets: c.array(c.u64n, HTTP_BUCKETS) }, { name: 'http_value' });
export const pairKey = c.struct(
  { cgroupId: c.u64, remoteIp: c.bytes(16), port: c.u16, dir: c.u8, family: c.u8, pad: c.pad(4) },
  { name: 'l4_pair_key' },
);
export const pairValue = c.struct({ opened: c.u64n, closed: c.u64n, bytesSent: c.u64n, bytesReceived: c.u64n }, { name: 'l4_pair_value' });

/** An address series may name (http_peers); the all-zero key (family 0) stands for every address. */
export const peerKey = c.struct({ ip: c.bytes(16), family: c.u8, pad: c.pad(3) }, { name: 'http_peer_key' });

/** A client connection waiting for its server's socket to join (both ends measured on this node). */
export const pendingKey = c.struct(
  {
    clientIp: c.bytes(16),
    serverIp: c.bytes(16),
    clientPort: c.u16,
    serverPort: c.u16,
    clientSeq: c.u32,
    serverSeq: c.u32,
    family: c.u8,
    pad: c.pad(3),
  },
  { name: 'http_pending_key' },
);
export const pendingValue = c.struct({ clientCgroup: c.u64, state: c.u32, pad: c.pad(4) }, { name: 'http_pending_value' });

export type CounterName = (typeof counterNames)[number];

export type HttpKey = c.Infer<typeof httpKey>;
export type PairKey = c.Infer<typeof pairKey>;
export type PendingKey = c.Infer<typeof pendingKey>;
export type PeerKey = c.Infer<typeof peerKey>;
export type PendingValue = c.Infer<typeof pendingValue>;
