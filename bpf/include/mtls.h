/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps of the mTLS capture programs (bpf/mtls/mtls.bpf.c), shared with @mesh/mtls/datapath's codecs.
 * Fixed-width types, explicit padding, sizes asserted below. Addresses and ports in network order; IPv4 (and
 * IPv4-mapped IPv6, ::ffff:a.b.c.d) in addr[0] with family AF_INET, the rest zero.
 */
#ifndef MESH_BPF_MTLS_H
#define MESH_BPF_MTLS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#include <linux/bpf.h>
#endif

/* An address with port: a mesh destination (port 0: every port of the address), a client's local address. */
struct mtls_addr {
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 pad;
}; /* 20 bytes */

/*
 * A captured connection: where it was headed (`dst`, the workload — after the split chose it) and what the
 * application dialled (`dialled`, the service address when the split rewrote it, else dst), which getpeername
 * shows. Per socket in mtls_sk; per client local address in mtls_orig, for the data plane's accept.
 */
struct mtls_orig {
	struct mtls_addr dst;
	struct mtls_addr dialled;
}; /* 40 bytes */

#define MTLS_CFG_OUT4 1u /* out4 is set */
#define MTLS_CFG_OUT6 2u
#define MTLS_CFG_IN4 4u /* in4 is set */
#define MTLS_CFG_IN6 8u

/* The node's data plane (mtls_config[0]): where captured connections go, and the source its inbound side
 * connects to workloads from (the only source a STRICT port accepts). */
struct mtls_config {
	__u32 out4;
	__u32 out6[4];
	__u32 in4;
	__u32 in6[4];
	__u16 out_port;
	__u16 flags; /* MTLS_CFG_* */
}; /* 44 bytes */

/* A workload's mode per port (port 0: the workload-wide default). */
struct mtls_port_key {
	__u64 cgroup_id;
	__u16 port; /* host order */
	__u16 pad1;
	__u32 pad2;
}; /* 16 bytes */

/*
 * The same-node shortcut (docs/mtls.md, "Same-node connections"): the enrolled workload whose cgroup is
 * `cgroup_id` may connect to the workload of this node at `dst` directly (the agent evaluated the policies of
 * `dst` for its SPIFFE ID). mtls_pairs' key.
 */
struct mtls_pair_key {
	__u64 cgroup_id;
	struct mtls_addr dst;
	__u32 pad;
}; /* 32 bytes */

/* A direct connection of a local pair as the server's side sees its packets: the client's local address and
 * the destination. mtls_direct's key, noted when the client's SYN is about to leave, removed at close. */
struct mtls_conn_key {
	struct mtls_addr src;
	struct mtls_addr dst;
}; /* 40 bytes */

#define MTLS_MODE_STRICT 1
#define MTLS_MODE_PERMISSIVE 2

enum mtls_counter {
	MTLS_CAPTURE,             /* connect() rewritten to the data plane */
	MTLS_CAPTURE_NO_DATAPLANE, /* a mesh destination, but no data plane address in the socket's family: untouched */
	MTLS_ORIG_NOTE,           /* original destinations recorded at TCP connect by local address */
	MTLS_ORIG_NO_STORAGE,     /* a captured socket whose per-socket record could not be made: not captured */
	MTLS_GETPEERNAME_REWRITE,
	MTLS_STRICT_DROP_PLAINTEXT, /* a packet to a STRICT port from anywhere but the data plane */
	MTLS_STRICT_DROP_MALFORMED, /* a packet to an enrolled workload whose TCP header could not be read */
	MTLS_STRICT_PASS_DATAPLANE, /* packets to a STRICT port from the data plane */
	MTLS_STRICT_PASS_CONNECTED, /* TCP packets to a connected socket (not a listener) of the subtree: not checked */
	MTLS_BIND_REFUSED,        /* bind() to the data plane's inbound source address from another cgroup */
	MTLS_LOCAL_DIRECT,        /* connect() of an allowed local pair left alone: a direct connection */
	MTLS_STRICT_PASS_LOCAL,   /* packets to a STRICT port from a direct connection of an allowed local pair */
	MTLS_COUNTER_MAX,
};

#ifdef __cplusplus
#define MTLS_SIZE_CHECK(type, size) static_assert(sizeof(struct type) == (size), "sizeof(struct " #type ")")
#else
#define MTLS_SIZE_CHECK(type, size) _Static_assert(sizeof(struct type) == (size), "sizeof(struct " #type ")")
#endif
MTLS_SIZE_CHECK(mtls_addr, 20);
MTLS_SIZE_CHECK(mtls_orig, 40);
MTLS_SIZE_CHECK(mtls_config, 44);
MTLS_SIZE_CHECK(mtls_port_key, 16);
MTLS_SIZE_CHECK(mtls_pair_key, 32);
MTLS_SIZE_CHECK(mtls_conn_key, 40);

#endif /* MESH_BPF_MTLS_H */
