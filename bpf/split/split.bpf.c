// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Weighted traffic splitting at the socket layer. connect() (TCP, connected UDP) and sendmsg() (unconnected
 * UDP) to a service address are rewritten to an endpoint chosen by weight, so every connection keeps its
 * backend for life and no packet is ever translated. getpeername() and recvmsg() show the application the
 * address it dialled. Addresses that are no service pass untouched.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "bpf_consts.h"
#include "split.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct svc_key);
	__type(value, struct svc_value);
} split_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct ep_key);
	__type(value, struct ep_value);
} split_endpoints SEC(".maps");

/*
 * Socket cookie → the address it dialled: an array of slots (struct orig_slot) claimed by compare-and-swap and
 * given back by split_release. No lock and no allocation per connection: a hash insert and delete cost more
 * than picking the endpoint, and socket storage more again. orig_mask + 1 slots, a power of two (set at load).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct orig_slot);
} split_orig SEC(".maps");

const volatile __u32 orig_mask = 65535;

/* LRU: unconnected UDP sockets come and go without telling anyone; the oldest mappings make room. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct revnat_key);
	__type(value, struct ep_value);
} split_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SPLIT_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} split_counters SEC(".maps");

#define PICK_OK 0
#define PICK_NOT_A_SERVICE 1
#define PICK_NO_BACKEND 2

static __always_inline void count(__u32 idx)
{
	__u64 *n = bpf_map_lookup_elem(&split_counters, &idx);

	if (n)
		*n += 1;
}

/* user_port holds the network-order port in its low 16 bits; it is read and written as a whole __u32. */
static __always_inline __u16 load_port(struct bpf_sock_addr *ctx)
{
	return (__u16)(*(volatile __u32 *)&ctx->user_port);
}

/*
 * Picks an endpoint for a service address: a backend with probability weight/total, then one of its endpoints
 * uniformly. Each draw scales a random word by multiply-shift (r * total / 2^32) rather than division: a bias of
 * at most total / 2^32. A table swap may delete the slots of the version just read; then the service is read again.
 */
static __always_inline int pick(const struct svc_key *key, struct ep_value *out)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		struct svc_value *svc = bpf_map_lookup_elem(&split_services, key);
		struct ep_key ek = {};
		struct ep_value *ep;
		__u32 total, r, b = 0, n;

		if (!svc)
			return PICK_NOT_A_SERVICE;
		total = svc->total_weight;
		if (total == 0)
			return PICK_NO_BACKEND;
		r = ((__u64)bpf_get_prandom_u32() * total) >> 32; /* in [0, total) */
		for (__u32 i = 0; i < SPLIT_MAX_BACKENDS; i++) {
			if (i >= svc->nbackends)
				break;
			if (r < svc->cum_weight[i]) {
				b = i;
				break;
			}
		}
		n = svc->nendpoints[b & (SPLIT_MAX_BACKENDS - 1)];
		if (n == 0)
			return PICK_NO_BACKEND;
		ek.svc_id = svc->id;
		ek.version = svc->version;
		ek.backend = b;
		ek.index = ((__u64)bpf_get_prandom_u32() * n) >> 32; /* in [0, n) */
		ep = bpf_map_lookup_elem(&split_endpoints, &ek);
		if (ep) {
			*out = *ep;
			return PICK_OK;
		}
		count(SPLIT_TABLE_RETRY);
	}
	return PICK_NO_BACKEND;
}

static __always_inline int is_tcp_or_udp(__u32 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

static __always_inline void key4(struct bpf_sock_addr *ctx, struct svc_key *key)
{
	key->addr[0] = ctx->user_ip4;
	key->port = load_port(ctx);
	key->proto = ctx->protocol;
	key->family = AF_INET;
}

static __always_inline void key6(struct bpf_sock_addr *ctx, struct svc_key *key)
{
	/* One 4-byte access per word: user_ip6 allows no wider access. */
	key->addr[0] = ctx->user_ip6[0];
	key->addr[1] = ctx->user_ip6[1];
	key->addr[2] = ctx->user_ip6[2];
	key->addr[3] = ctx->user_ip6[3];
	key->port = load_port(ctx);
	key->proto = ctx->protocol;
	key->family = AF_INET6;
}

static __always_inline void store4(struct bpf_sock_addr *ctx, const __u32 *addr, __u16 port)
{
	ctx->user_ip4 = addr[0];
	ctx->user_port = port;
}

static __always_inline void store6(struct bpf_sock_addr *ctx, const __u32 *addr, __u16 port)
{
	ctx->user_ip6[0] = addr[0];
	ctx->user_ip6[1] = addr[1];
	ctx->user_ip6[2] = addr[2];
	ctx->user_ip6[3] = addr[3];
	ctx->user_port = port;
}

static __always_inline struct orig_slot *orig_slot(__u64 cookie, __u32 probe)
{
	__u32 idx = ((__u32)cookie + probe) & orig_mask;

	return bpf_map_lookup_elem(&split_orig, &idx);
}

/*
 * The slot this socket holds, if any. Only its owner writes a slot's address, so what a match finds is its own.
 * With `free`, the same pass also notes the first free slot it passes (for a socket that holds none yet).
 */
static __always_inline struct orig_slot *orig_find(__u64 cookie, struct orig_slot **free)
{
	for (__u32 i = 0; i < SPLIT_ORIG_PROBES; i++) {
		struct orig_slot *s = orig_slot(cookie, i);

		if (!s)
			continue;
		if (s->cookie == cookie)
			return s;
		if (free && !*free && s->cookie == 0)
			*free = s;
	}
	return NULL;
}

static __always_inline void remember(struct bpf_sock_addr *ctx, const struct svc_key *key)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig_slot *free = NULL;
	/* The slot this socket holds already (connect() again on the same socket), else claim the first free one. */
	struct orig_slot *s = orig_find(cookie, &free);

	if (!s && free && __sync_val_compare_and_swap(&free->cookie, 0, cookie) == 0) {
		s = free;
		count(SPLIT_ORIG_CLAIM);
	}
	/* Another socket took the free slot first, or all are held: this socket's getpeername() will show the
	 * endpoint; counted so the table can be sized. */
	if (!s) {
		count(SPLIT_ORIG_FULL);
		return;
	}
	s->addr[0] = key->addr[0];
	s->addr[1] = key->addr[1];
	s->addr[2] = key->addr[2];
	s->addr[3] = key->addr[3];
	s->port = key->port;
	s->family = key->family;
}

/* Set at load: refuse with EPERM even where bpf_set_retval exists (tests run the fallback of older kernels). */
const volatile __u8 refuse_eperm = 0;

/*
 * A service with no backend that can take the connection: refused as a service proxy refuses it, with
 * ECONNREFUSED (what clients retry on), not the EPERM a bare 0 from a cgroup program gives. bpf_set_retval
 * needs Linux 5.18: libbpf resolves the check against the kernel's BTF at load, and on an older kernel the
 * verifier drops the call it guards, so the programs load there and refuse with EPERM.
 */
static __always_inline int refuse(void)
{
	if (!refuse_eperm && bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_set_retval))
		bpf_set_retval(-ECONNREFUSED);
	return 0;
}

/* connect(): 1 lets it proceed (rewritten or not); 0 refuses it for a service with no backend. */
static __always_inline int do_connect(struct bpf_sock_addr *ctx, int v6)
{
	struct svc_key key = {};
	struct ep_value ep;
	int r;

	if (!is_tcp_or_udp(ctx->protocol))
		return 1;
	if (v6)
		key6(ctx, &key);
	else
		key4(ctx, &key);
	r = pick(&key, &ep);
	if (r == PICK_NOT_A_SERVICE)
		return 1;
	/* The compiler keeps a service's endpoints in its own family; anything else is a corrupt table. */
	if (r == PICK_NO_BACKEND || ep.family != key.family) {
		count(SPLIT_CONNECT_NO_BACKEND);
		return refuse();
	}
	remember(ctx, &key);
	if (v6)
		store6(ctx, ep.addr, ep.port);
	else
		store4(ctx, ep.addr, ep.port);
	count(SPLIT_CONNECT_REWRITE);
	return 1;
}

/* Unconnected UDP: each datagram picks an endpoint; the reply's source is mapped back per socket. */
static __always_inline int do_sendmsg(struct bpf_sock_addr *ctx, int v6)
{
	struct revnat_key rk = {};
	struct svc_key key = {};
	struct ep_value vip = {};
	struct ep_value ep;
	int r;

	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	if (v6)
		key6(ctx, &key);
	else
		key4(ctx, &key);
	r = pick(&key, &ep);
	if (r == PICK_NOT_A_SERVICE)
		return 1;
	if (r == PICK_NO_BACKEND || ep.family != key.family) {
		count(SPLIT_SENDMSG_NO_BACKEND);
		return refuse();
	}
	rk.cookie = bpf_get_socket_cookie(ctx);
	rk.addr[0] = ep.addr[0];
	rk.addr[1] = ep.addr[1];
	rk.addr[2] = ep.addr[2];
	rk.addr[3] = ep.addr[3];
	rk.port = ep.port;
	vip.addr[0] = key.addr[0];
	vip.addr[1] = key.addr[1];
	vip.addr[2] = key.addr[2];
	vip.addr[3] = key.addr[3];
	vip.port = key.port;
	vip.family = key.family;
	bpf_map_update_elem(&split_revnat, &rk, &vip, BPF_ANY);
	if (v6)
		store6(ctx, ep.addr, ep.port);
	else
		store4(ctx, ep.addr, ep.port);
	count(SPLIT_SENDMSG_REWRITE);
	return 1;
}

/* recvmsg(): a datagram from an endpoint shows the service address it stands for. */
static __always_inline int do_recvmsg(struct bpf_sock_addr *ctx, int v6)
{
	struct revnat_key rk = {};
	struct ep_value *vip;
	struct orig_slot *o;

	rk.cookie = bpf_get_socket_cookie(ctx);
	if (v6) {
		rk.addr[0] = ctx->user_ip6[0];
		rk.addr[1] = ctx->user_ip6[1];
		rk.addr[2] = ctx->user_ip6[2];
		rk.addr[3] = ctx->user_ip6[3];
	} else {
		rk.addr[0] = ctx->user_ip4;
	}
	rk.port = load_port(ctx);
	vip = bpf_map_lookup_elem(&split_revnat, &rk);
	if (vip) {
		if (v6)
			store6(ctx, vip->addr, vip->port);
		else
			store4(ctx, vip->addr, vip->port);
		count(SPLIT_RECVMSG_REWRITE);
		return 1;
	}
	/* A connected UDP socket receives only from the endpoint it was connected to. */
	o = orig_find(rk.cookie, NULL);
	if (o && o->family == (v6 ? AF_INET6 : AF_INET)) {
		if (v6)
			store6(ctx, o->addr, o->port);
		else
			store4(ctx, o->addr, o->port);
		count(SPLIT_RECVMSG_REWRITE);
	}
	return 1;
}

static __always_inline int do_getpeername(struct bpf_sock_addr *ctx, int v6)
{
	struct orig_slot *o = orig_find(bpf_get_socket_cookie(ctx), NULL);

	if (!o || o->family != (v6 ? AF_INET6 : AF_INET))
		return 1;
	if (v6)
		store6(ctx, o->addr, o->port);
	else
		store4(ctx, o->addr, o->port);
	count(SPLIT_GETPEERNAME_REWRITE);
	return 1;
}

SEC("cgroup/connect4")
int split_connect4(struct bpf_sock_addr *ctx)
{
	return do_connect(ctx, 0);
}

SEC("cgroup/connect6")
int split_connect6(struct bpf_sock_addr *ctx)
{
	return do_connect(ctx, 1);
}

SEC("cgroup/sendmsg4")
int split_sendmsg4(struct bpf_sock_addr *ctx)
{
	return do_sendmsg(ctx, 0);
}

SEC("cgroup/sendmsg6")
int split_sendmsg6(struct bpf_sock_addr *ctx)
{
	return do_sendmsg(ctx, 1);
}

SEC("cgroup/recvmsg4")
int split_recvmsg4(struct bpf_sock_addr *ctx)
{
	return do_recvmsg(ctx, 0);
}

SEC("cgroup/recvmsg6")
int split_recvmsg6(struct bpf_sock_addr *ctx)
{
	return do_recvmsg(ctx, 1);
}

SEC("cgroup/getpeername4")
int split_getpeername4(struct bpf_sock_addr *ctx)
{
	return do_getpeername(ctx, 0);
}

SEC("cgroup/getpeername6")
int split_getpeername6(struct bpf_sock_addr *ctx)
{
	return do_getpeername(ctx, 1);
}

/* A socket of the subtree is released: give back its slot. */
SEC("cgroup/sock_release")
int split_release(struct bpf_sock *ctx)
{
	struct orig_slot *s = orig_find(bpf_get_socket_cookie(ctx), NULL);

	if (s) {
		s->cookie = 0;
		count(SPLIT_ORIG_RELEASE);
	}
	return 1;
}
