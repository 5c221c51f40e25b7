/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Structs and enums shared between the programs in bpf/testprogs/ and user space.
 * Fixed-width types only and explicit padding: the user-space codecs mirror these byte for byte.
 */
#ifndef MESH_BPF_TESTPROGS_H
#define MESH_BPF_TESTPROGS_H

/* BPF programs get __u8.. from vmlinux.h; user space from the uapi header. */
#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* ---- tc_filter ---- */

/* LPM trie keys: prefixlen first, as BPF_MAP_TYPE_LPM_TRIE requires. */
struct lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
}; /* 8 bytes */

struct lpm_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
}; /* 20 bytes */

/* port = destination port, host order; family = AF_INET/AF_INET6 */
struct l4_key {
	__u8 family;
	__u8 proto;
	__u16 port;
}; /* 4 bytes */

struct l4_counters {
	__u64 packets;
	__u64 bytes;
}; /* 16 bytes */

enum verdict_idx {
	VERDICT_PASS = 0,
	VERDICT_DROP_DENY = 1,
	VERDICT_DROP_PORT = 2,
	VERDICT_NOT_IP = 3,
	VERDICT_MAX = 4,
};

/* reason = enum verdict_idx; ports host order; IPv4 addresses in the first 4 bytes */
struct drop_event {
	__u64 ts_ns;
	__u8 family;
	__u8 proto;
	__u16 sport;
	__u16 dport;
	__u16 reason;
	__u32 rule_id;
	__u32 pkt_len;
	__u8 saddr[16];
	__u8 daddr[16];
}; /* 56 bytes */

/* ---- sock_redirect ---- */

/* addr and port in network byte order, as in bpf_sock_addr user_ip4/user_port */
struct endpoint4 {
	__u32 addr;
	__u16 port;
	__u16 pad;
}; /* 8 bytes */

struct endpoint6 {
	__u32 addr[4];
	__u16 port;
	__u16 pad;
}; /* 20 bytes */

enum sock_addr_hook {
	HOOK_CONNECT4,
	HOOK_CONNECT6,
	HOOK_SENDMSG4,
	HOOK_SENDMSG6,
	HOOK_RECVMSG4,
	HOOK_RECVMSG6,
	HOOK_GETPEERNAME4,
	HOOK_GETPEERNAME6,
	HOOK_MAX,
};

/* ---- sock_track ---- */

/* IPs network order as sockops gives them; ports HOST order */
struct sock_key {
	__u32 family;
	__u32 local_ip[4];
	__u32 remote_ip[4];
	__u32 local_port;
	__u32 remote_port;
}; /* 44 bytes */

/* role: 1 = active (client), 2 = passive (server) */
struct conn_state {
	__u64 cookie;
	__u64 established_ns;
	__u64 msg_bytes;
	__u32 msg_count;
	__u32 role;
}; /* 32 bytes */

struct flow_info {
	__u64 established_ns;
	__u32 role;
	__u32 pad;
}; /* 16 bytes */

enum sock_counter {
	CNT_ACTIVE_ESTABLISHED,
	CNT_PASSIVE_ESTABLISHED,
	CNT_CLOSED,
	CNT_MSG_CALLS,
	CNT_MSG_BYTES,
	CNT_SKB_CALLS,
	CNT_MAX,
};

/* ---- skb_guard ---- */

struct skb_counters {
	__u64 packets;
	__u64 bytes;
}; /* 16 bytes */

/* A size change here must change the codecs too: fail the build, not the first lookup. */
#ifdef __cplusplus
#define MESH_SIZE_CHECK(type, size) static_assert(sizeof(struct type) == (size), "sizeof(struct " #type ")")
#else
#define MESH_SIZE_CHECK(type, size) _Static_assert(sizeof(struct type) == (size), "sizeof(struct " #type ")")
#endif
MESH_SIZE_CHECK(lpm_v4_key, 8);
MESH_SIZE_CHECK(lpm_v6_key, 20);
MESH_SIZE_CHECK(l4_key, 4);
MESH_SIZE_CHECK(l4_counters, 16);
MESH_SIZE_CHECK(drop_event, 56);
MESH_SIZE_CHECK(endpoint4, 8);
MESH_SIZE_CHECK(endpoint6, 20);
MESH_SIZE_CHECK(sock_key, 44);
MESH_SIZE_CHECK(conn_state, 32);
MESH_SIZE_CHECK(flow_info, 16);
MESH_SIZE_CHECK(skb_counters, 16);
#undef MESH_SIZE_CHECK

/* ---- split_hold ---- */

/* hold_ns is set by user space; the program writes the rest (ktime ns; 0: not reached). */
struct hold_state {
	__u64 hold_ns;
	__u64 began; /* the run began */
	__u64 read;  /* the service entry was read (version noted) */
	__u64 ended; /* the slot was looked up, after the hold */
	__u32 version;
	__u32 found; /* 1: the slot of the version read was there */
}; /* 40 bytes */

#endif /* MESH_BPF_TESTPROGS_H */
