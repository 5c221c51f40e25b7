/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps of the split programs (bpf/split/split.bpf.c), shared with @mesh/split's codecs.
 * Fixed-width types, explicit padding, sizes asserted below.
 *
 * A service address (VIP, port, protocol) maps to a svc_value: which table version is live and, per backend
 * (an HTTPRoute backendRef), its cumulative weight and endpoint count. Endpoints live in their own map keyed
 * by (service id, version, backend, index). A connect() picks a backend by weight, then an endpoint uniformly.
 *
 * Service and endpoint entries carry `check`, a hash of the entry's key and of every field before it (see
 * SPLIT_CHECK_SEED below): a hash map element can be recycled for another key while a program still reads it,
 * and a service entry is rewritten in place (BPF_F_LOCK) while a program may read it, so a program copies an
 * entry and uses the copy only when its check matches the key it looked up (else it reads again). An
 * IPv4-mapped address (::ffff:a.b.c.d) is looked up, remembered and mapped back as the IPv4 address.
 */
#ifndef MESH_BPF_SPLIT_H
#define MESH_BPF_SPLIT_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#include <linux/bpf.h>
#endif

#define SPLIT_MAX_BACKENDS 16

/* addr: network order; IPv4 in addr[0], the rest zero. port: network order. */
struct svc_key {
	__u32 addr[4];
	__u16 port;
	__u8 proto;  /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 family; /* AF_INET / AF_INET6 */
}; /* 20 bytes */

struct svc_value {
	__u32 id;           /* stable per service address */
	__u32 version;      /* endpoint table in use */
	__u32 nbackends;    /* ≤ SPLIT_MAX_BACKENDS */
	__u32 total_weight; /* cum_weight[nbackends - 1]; 0: no backend can take traffic */
	/* Running sums of weights. A backend with no endpoint keeps its weight: connections that pick it are
	 * refused, as the Gateway API asks for the share of a backend that cannot serve. */
	__u32 cum_weight[SPLIT_MAX_BACKENDS];
	__u32 nendpoints[SPLIT_MAX_BACKENDS];
	__u32 check; /* of the key and the fields above */
	/* Only so that user space can update an entry in place (BPF_F_LOCK): a replaced element is recycled at
	 * once, and a lookup racing with the move can miss the key. Programs never take it; they check. */
	struct bpf_spin_lock lock;
}; /* 152 bytes */

struct ep_key {
	__u32 svc_id;
	__u32 version;
	__u16 backend;
	__u16 index;
}; /* 12 bytes */

struct ep_value {
	__u32 addr[4]; /* network order; IPv4 in addr[0] */
	__u16 port;    /* network order */
	__u8 family;
	__u8 pad;
	__u32 check; /* split_endpoints: of the key and the fields above; split_revnat: 0 */
}; /* 24 bytes */

/*
 * The entries' check: over the key's 32-bit words, then the value's words before `check`, each word mixed in by
 * h = (h ^ w) * SPLIT_CHECK_MUL; h ^= h >> 15, from h = SPLIT_CHECK_SEED. A copy torn between two writes, or an
 * element recycled for another key, matches with probability about 2^-32. Words are read as the host's u32.
 */
#define SPLIT_CHECK_SEED 0x6d657368u
#define SPLIT_CHECK_MUL 0x9e3779b1u

/*
 * Per socket: the address the application dialled, for getpeername and connected recvmsg. A slot of an array,
 * claimed by the socket's cookie (compare-and-swap from 0) at one of SPLIT_ORIG_PROBES places after
 * cookie & mask, and given back (cookie 0) when the socket is released or connects to an address that is no
 * service. The endpoint is kept too: the slot speaks for the socket only while it is connected to that endpoint
 * (a UDP socket can disconnect with AF_UNSPEC, which no hook sees).
 */
struct orig_slot {
	__u64 cookie;   /* owner; 0: free */
	__u32 addr[4];  /* the service address dialled */
	__u32 ep[4];    /* the endpoint it was sent to */
	__u16 port;
	__u16 ep_port;
	__u8 family;    /* of both */
	__u8 pad[3];
}; /* 48 bytes */

#define SPLIT_ORIG_PROBES 4

/* Unconnected UDP: which service address a backend's reply must appear to come from. */
struct revnat_key {
	__u64 cookie;
	__u32 addr[4];
	__u16 port;
	__u16 pad1;
	__u32 pad2;
}; /* 32 bytes */

/* enum split_counter, from bpf/include/shared.json. */
#include "split_gen.h"

#ifdef __cplusplus
#define SPLIT_SIZE_CHECK(type, size) static_assert(sizeof(struct type) == (size), "sizeof(struct " #type ")")
#else
#define SPLIT_SIZE_CHECK(type, size) _Static_assert(sizeof(struct type) == (size), "sizeof(struct " #type ")")
#endif
SPLIT_SIZE_CHECK(svc_key, 20);
SPLIT_SIZE_CHECK(svc_value, 152);
SPLIT_SIZE_CHECK(ep_key, 12);
SPLIT_SIZE_CHECK(ep_value, 24);
SPLIT_SIZE_CHECK(orig_slot, 48);
SPLIT_SIZE_CHECK(revnat_key, 32);

#endif /* MESH_BPF_SPLIT_H */
