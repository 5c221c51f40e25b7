// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Connection tracking from sockops: established TCP sockets go into sock_hash (for sk_msg) and get
 * per-socket state in conn_state; flows keeps a cookie-indexed copy that user space can iterate.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "bpf_consts.h"
#include "testprogs.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define ROLE_ACTIVE 1
#define ROLE_PASSIVE 2

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 1024);
	__type(key, struct sock_key);
	__type(value, __u64);
} sock_hash SEC(".maps");

/* Not filled here: user space inserts sockets to exercise the sk_skb attach path. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} sock_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for socket storage */
	__type(key, int);
	__type(value, struct conn_state);
} conn_state SEC(".maps");

/* LRU: a socket that dies without a close callback must not pin its entry forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct flow_info);
} flows SEC(".maps");

/* Indexed by enum sock_counter. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count_add(__u32 idx, __u64 delta)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &idx);

	if (n)
		__sync_fetch_and_add(n, delta);
}

static __always_inline void on_established(struct bpf_sock_ops *skops, __u32 role, __u32 counter)
{
	struct flow_info flow = {};
	struct sock_key key = {};
	struct conn_state *st;
	struct bpf_sock *sk;
	__u64 cookie, now;
	__u32 family = skops->family;

	if (family != AF_INET && family != AF_INET6)
		return;
	count_add(counter, 1);

	cookie = bpf_get_socket_cookie(skops);
	now = bpf_ktime_get_ns();

	sk = skops->sk;
	if (sk) {
		st = bpf_sk_storage_get(&conn_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (st) {
			st->cookie = cookie;
			st->established_ns = now;
			st->role = role;
		}
	}

	flow.established_ns = now;
	flow.role = role;
	bpf_map_update_elem(&flows, &cookie, &flow, BPF_ANY);

	key.family = family;
	if (family == AF_INET) {
		key.local_ip[0] = skops->local_ip4;
		key.remote_ip[0] = skops->remote_ip4;
	} else {
		key.local_ip[0] = skops->local_ip6[0];
		key.local_ip[1] = skops->local_ip6[1];
		key.local_ip[2] = skops->local_ip6[2];
		key.local_ip[3] = skops->local_ip6[3];
		key.remote_ip[0] = skops->remote_ip6[0];
		key.remote_ip[1] = skops->remote_ip6[1];
		key.remote_ip[2] = skops->remote_ip6[2];
		key.remote_ip[3] = skops->remote_ip6[3];
	}
	key.local_port = skops->local_port;
	/* remote_port holds the network-order port in the upper half on little-endian: ntohl yields host order. */
	key.remote_port = bpf_ntohl(skops->remote_port);
	bpf_sock_hash_update(skops, &sock_hash, &key, BPF_ANY);

	/* Ask for state changes so the close below can clean up flows. */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

static __always_inline void on_close(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);

	count_add(CNT_CLOSED, 1);
	bpf_map_delete_elem(&flows, &cookie);
}

SEC("sockops")
int sockops_track(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		on_established(skops, ROLE_ACTIVE, CNT_ACTIVE_ESTABLISHED);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		on_established(skops, ROLE_PASSIVE, CNT_PASSIVE_ESTABLISHED);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		/* args[0] is the old state, args[1] the new one. */
		if (skops->args[1] == BPF_TCP_CLOSE)
			on_close(skops);
		break;
	}
	return 1;
}

SEC("sk_msg")
int msg_count(struct sk_msg_md *msg)
{
	__u32 size = msg->size;
	struct conn_state *st;

	count_add(CNT_MSG_CALLS, 1);
	count_add(CNT_MSG_BYTES, size);

	/* No CREATE: only sockets sockops saw established carry state. */
	st = bpf_sk_storage_get(&conn_state, msg->sk, 0, 0);
	if (st) {
		/* The socket's sends may run on several CPUs. */
		__sync_fetch_and_add(&st->msg_count, 1);
		__sync_fetch_and_add(&st->msg_bytes, size);
	}
	return SK_PASS;
}

SEC("sk_skb/stream_verdict")
int skb_verdict(struct __sk_buff *skb)
{
	count_add(CNT_SKB_CALLS, 1);
	return SK_PASS;
}
