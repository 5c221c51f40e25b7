// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup sock_addr programs: connect/sendmsg rewrite a service address to a backend (redirect_*),
 * recvmsg/getpeername rewrite the backend back to the service address (reverse_*) so the application
 * only ever sees the address it asked for.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "testprogs.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct endpoint4);
	__type(value, struct endpoint4);
} redirect_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct endpoint4);
	__type(value, struct endpoint4);
} reverse_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct endpoint6);
	__type(value, struct endpoint6);
} redirect_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct endpoint6);
	__type(value, struct endpoint6);
} reverse_v6 SEC(".maps");

/* Indexed by enum sock_addr_hook: rewrites done by each hook. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HOOK_MAX);
	__type(key, __u32);
	__type(value, __u64);
} hook_hits SEC(".maps");

static __always_inline void count_hit(__u32 hook)
{
	__u64 *n = bpf_map_lookup_elem(&hook_hits, &hook);

	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline int is_tcp_or_udp(struct bpf_sock_addr *ctx)
{
	__u32 proto = ctx->protocol;

	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

/*
 * user_port is a __u32 holding the network-order port in its low 16 bits: read and write it whole,
 * the only access size every kernel accepts for both directions.
 */
static __always_inline __u16 load_port(struct bpf_sock_addr *ctx)
{
	__u32 port = *(volatile __u32 *)&ctx->user_port;

	return (__u16)port;
}

static __always_inline void rewrite4(struct bpf_sock_addr *ctx, void *map, __u32 hook)
{
	struct endpoint4 key = {};
	struct endpoint4 *to;

	if (!is_tcp_or_udp(ctx))
		return;
	key.addr = ctx->user_ip4;
	key.port = load_port(ctx);
	to = bpf_map_lookup_elem(map, &key);
	if (!to)
		return;
	ctx->user_ip4 = to->addr;
	ctx->user_port = to->port;
	count_hit(hook);
}

static __always_inline void rewrite6(struct bpf_sock_addr *ctx, void *map, __u32 hook)
{
	struct endpoint6 key = {};
	struct endpoint6 *to;

	if (!is_tcp_or_udp(ctx))
		return;
	/* One 4-byte access per word: user_ip6 allows no wider access. */
	key.addr[0] = ctx->user_ip6[0];
	key.addr[1] = ctx->user_ip6[1];
	key.addr[2] = ctx->user_ip6[2];
	key.addr[3] = ctx->user_ip6[3];
	key.port = load_port(ctx);
	to = bpf_map_lookup_elem(map, &key);
	if (!to)
		return;
	ctx->user_ip6[0] = to->addr[0];
	ctx->user_ip6[1] = to->addr[1];
	ctx->user_ip6[2] = to->addr[2];
	ctx->user_ip6[3] = to->addr[3];
	ctx->user_port = to->port;
	count_hit(hook);
}

/* Every hook returns 1: these programs rewrite, they never deny (recvmsg/getpeername accept only 1). */

SEC("cgroup/connect4")
int redirect_connect4(struct bpf_sock_addr *ctx)
{
	rewrite4(ctx, &redirect_v4, HOOK_CONNECT4);
	return 1;
}

SEC("cgroup/connect6")
int redirect_connect6(struct bpf_sock_addr *ctx)
{
	rewrite6(ctx, &redirect_v6, HOOK_CONNECT6);
	return 1;
}

SEC("cgroup/sendmsg4")
int redirect_sendmsg4(struct bpf_sock_addr *ctx)
{
	rewrite4(ctx, &redirect_v4, HOOK_SENDMSG4);
	return 1;
}

SEC("cgroup/sendmsg6")
int redirect_sendmsg6(struct bpf_sock_addr *ctx)
{
	rewrite6(ctx, &redirect_v6, HOOK_SENDMSG6);
	return 1;
}

SEC("cgroup/recvmsg4")
int redirect_recvmsg4(struct bpf_sock_addr *ctx)
{
	rewrite4(ctx, &reverse_v4, HOOK_RECVMSG4);
	return 1;
}

SEC("cgroup/recvmsg6")
int redirect_recvmsg6(struct bpf_sock_addr *ctx)
{
	rewrite6(ctx, &reverse_v6, HOOK_RECVMSG6);
	return 1;
}

SEC("cgroup/getpeername4")
int redirect_getpeername4(struct bpf_sock_addr *ctx)
{
	rewrite4(ctx, &reverse_v4, HOOK_GETPEERNAME4);
	return 1;
}

SEC("cgroup/getpeername6")
int redirect_getpeername6(struct bpf_sock_addr *ctx)
{
	rewrite6(ctx, &reverse_v6, HOOK_GETPEERNAME6);
	return 1;
}
