// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Weighted traffic splitting at the socket layer. connect() (TCP, connected UDP) and sendmsg() (unconnected
 * UDP) to a service address are rewritten to an endpoint chosen by weight, so every connection keeps its
 * backend for life and no packet is ever translated. getpeername() and recvmsg() show the application the
 * address it dialled. Addresses that are no service pass untouched. An AF_INET6 socket dialling an IPv4-mapped
 * address (::ffff:a.b.c.d) is served as IPv4 and shown the mapped address.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "bpf_consts.h"
#include "split.h"
#include "split_maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

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

/*
 * LRU: unconnected UDP sockets come and go without telling anyone; the least recently used mappings make room.
 * A send that finds its mapping only looks it up (which marks it used), so live flows stay and a full table is
 * not churned by them. Evicted = SPLIT_REVNAT_INSERT - SPLIT_REVNAT_DROP - entries held.
 */
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

/*
 * Reads of one connect() before it gives up on entries that keep changing under it (then it is refused). The
 * slots of a version stay until no run that read it can be running (the table deletes them after a grace
 * period), so only a service entry rewritten in place during its copy is read again: 4 rewrites of one entry
 * within one connect(). Each attempt costs the verifier ~1,300 instructions (connect4; ~2,600 connect6).
 */
#define PICK_ATTEMPTS 4

#define barrier() asm volatile("" ::: "memory")

/* An address as the maps hold it: IPv4 (and IPv4-mapped IPv6) in addr[0], family AF_INET. */
struct sa {
	__u32 addr[4];
	__u16 port;
	__u8 family;
};

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

static __always_inline __u32 check_mix(__u32 h, __u32 w)
{
	h ^= w;
	h *= SPLIT_CHECK_MUL;
	return h ^ (h >> 15);
}

static __always_inline __u32 svc_check(const struct svc_key *key, const struct svc_value *v)
{
	const __u32 *k = (const __u32 *)key, *w = (const __u32 *)v;
	__u32 h = SPLIT_CHECK_SEED;

	for (int i = 0; i < sizeof(*key) / 4; i++)
		h = check_mix(h, k[i]);
	for (int i = 0; i < __builtin_offsetof(struct svc_value, check) / 4; i++)
		h = check_mix(h, w[i]);
	return h;
}

static __always_inline __u32 ep_check(const struct ep_key *key, const struct ep_value *v)
{
	const __u32 *k = (const __u32 *)key, *w = (const __u32 *)v;
	__u32 h = SPLIT_CHECK_SEED;

	for (int i = 0; i < sizeof(*key) / 4; i++)
		h = check_mix(h, k[i]);
	for (int i = 0; i < __builtin_offsetof(struct ep_value, check) / 4; i++)
		h = check_mix(h, w[i]);
	return h;
}

/*
 * Picks an endpoint for a service address: a backend with probability weight/total, then one of its endpoints
 * uniformly. Each draw scales a random word by multiply-shift (r * total / 2^32) rather than division: a bias of
 * at most total / 2^32. Entries are copied and used only when their check matches: a service entry is rewritten
 * in place while it may be read, and the hash maps hand a deleted element back out at once (preallocated: the
 * free list; otherwise bpf_mem_alloc's per-CPU cache), so the element a lookup returned may be rewritten for
 * another key while it is read. The slots of the version read outlive this run (the table deletes a replaced version's slots only after
 * a grace period): a slot missing all the same is counted (SPLIT_TABLE_RETRY) and the service read again.
 */
static __always_inline int pick(const struct svc_key *key, struct ep_value *out)
{
	for (int attempt = 0; attempt < PICK_ATTEMPTS; attempt++) {
		struct svc_value *svc = bpf_map_lookup_elem(&split_services, key);
		struct svc_value v;
		struct ep_key ek = {};
		struct ep_value *ep;
		__u32 total, r, b = 0, n;

		if (!svc)
			return PICK_NOT_A_SERVICE;
		/* Up to the lock, which programs may not read. Every use below reads the copy, never the element. */
		__builtin_memcpy(&v, svc, __builtin_offsetof(struct svc_value, lock));
		barrier();
		if (v.check != svc_check(key, &v)) {
			count(SPLIT_TORN_READ);
			continue;
		}
		total = v.total_weight;
		if (total == 0)
			return PICK_NO_BACKEND;
		r = ((__u64)bpf_get_prandom_u32() * total) >> 32; /* in [0, total) */
		for (__u32 i = 0; i < SPLIT_MAX_BACKENDS; i++) {
			if (i >= v.nbackends)
				break;
			if (r < v.cum_weight[i]) {
				b = i;
				break;
			}
		}
		n = v.nendpoints[b & (SPLIT_MAX_BACKENDS - 1)];
		if (n == 0)
			return PICK_NO_BACKEND;
		ek.svc_id = v.id;
		ek.version = v.version;
		ek.backend = b;
		ek.index = ((__u64)bpf_get_prandom_u32() * n) >> 32; /* in [0, n) */
		ep = bpf_map_lookup_elem(&split_endpoints, &ek);
		if (!ep) {
			count(SPLIT_TABLE_RETRY);
			continue;
		}
		__builtin_memcpy(out, ep, sizeof(*out));
		barrier();
		if (out->check != ep_check(&ek, out)) {
			count(SPLIT_TORN_READ);
			continue;
		}
		return PICK_OK;
	}
	return PICK_NO_BACKEND;
}

static __always_inline int is_tcp_or_udp(__u32 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

static __always_inline int is_mapped(__u32 w0, __u32 w1, __u32 w2)
{
	return w0 == 0 && w1 == 0 && w2 == bpf_htonl(0x0000ffff);
}

/* The address in ctx (destination, or the peer/source the kernel filled in), IPv4-mapped as IPv4. */
static __always_inline void load_sa(struct bpf_sock_addr *ctx, int v6, struct sa *a)
{
	a->port = load_port(ctx);
	if (!v6) {
		a->addr[0] = ctx->user_ip4;
		a->family = AF_INET;
		return;
	}
	/* One 4-byte access per word: user_ip6 allows no wider access. */
	a->addr[0] = ctx->user_ip6[0];
	a->addr[1] = ctx->user_ip6[1];
	a->addr[2] = ctx->user_ip6[2];
	a->addr[3] = ctx->user_ip6[3];
	a->family = AF_INET6;
	if (is_mapped(a->addr[0], a->addr[1], a->addr[2])) {
		a->addr[0] = a->addr[3];
		a->addr[1] = 0;
		a->addr[2] = 0;
		a->addr[3] = 0;
		a->family = AF_INET;
	}
}

static __always_inline void svc_key_of(struct bpf_sock_addr *ctx, const struct sa *a, struct svc_key *key)
{
	key->addr[0] = a->addr[0];
	key->addr[1] = a->addr[1];
	key->addr[2] = a->addr[2];
	key->addr[3] = a->addr[3];
	key->port = a->port;
	key->proto = ctx->protocol;
	key->family = a->family;
}

/* Writes an address into ctx; an IPv6 hook shows an IPv4 address mapped. 0 when it cannot be shown (an IPv6
 * address to an IPv4 hook, which the compiler's one-family services never produce). */
static __always_inline int store_sa(struct bpf_sock_addr *ctx, int v6, const __u32 *addr, __u16 port, __u8 family)
{
	if (!v6) {
		if (family != AF_INET)
			return 0;
		ctx->user_ip4 = addr[0];
	} else if (family == AF_INET) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = addr[0];
	} else {
		ctx->user_ip6[0] = addr[0];
		ctx->user_ip6[1] = addr[1];
		ctx->user_ip6[2] = addr[2];
		ctx->user_ip6[3] = addr[3];
	}
	ctx->user_port = port;
	return 1;
}

static __always_inline int same_addr(const __u32 *a, const __u32 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
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

/* The reply mapping of (socket, endpoint) → service address, in split_revnat. */
static __always_inline void revnat_key_of(struct revnat_key *rk, __u64 cookie, const __u32 *addr, __u16 port)
{
	rk->cookie = cookie;
	rk->addr[0] = addr[0];
	rk->addr[1] = addr[1];
	rk->addr[2] = addr[2];
	rk->addr[3] = addr[3];
	rk->port = port;
}

static __always_inline void revnat_note(__u64 cookie, const struct ep_value *ep, const struct svc_key *key)
{
	struct revnat_key rk = {};
	struct ep_value vip = {};
	struct ep_value *cur;

	revnat_key_of(&rk, cookie, ep->addr, ep->port);
	cur = bpf_map_lookup_elem(&split_revnat, &rk);
	/* Found as it should be: the lookup marked it used, and nothing is written (a write takes a fresh element,
	 * which in a full LRU evicts another mapping). */
	if (cur && same_addr(cur->addr, key->addr) && cur->port == key->port && cur->family == key->family)
		return;
	if (!cur)
		count(SPLIT_REVNAT_INSERT);
	vip.addr[0] = key->addr[0];
	vip.addr[1] = key->addr[1];
	vip.addr[2] = key->addr[2];
	vip.addr[3] = key->addr[3];
	vip.port = key->port;
	vip.family = key->family;
	bpf_map_update_elem(&split_revnat, &rk, &vip, BPF_ANY);
}

static __always_inline void remember(struct bpf_sock_addr *ctx, const struct svc_key *key, const struct ep_value *ep)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig_slot *free = NULL;
	/* The slot this socket holds already (connect() again on the same socket), else claim the first free one. */
	struct orig_slot *s = orig_find(cookie, &free);

	if (!s && free && __sync_val_compare_and_swap(&free->cookie, 0, cookie) == 0) {
		s = free;
		count(SPLIT_ORIG_CLAIM);
	}
	/* Another socket took the free slot first, or all are held: counted so the table can be sized. A TCP
	 * socket's getpeername() will show the endpoint; connected UDP maps its replies as unconnected UDP does
	 * (resolvers drop a reply from an address they did not ask). */
	if (!s) {
		count(SPLIT_ORIG_FULL);
		if (key->proto == IPPROTO_UDP) {
			revnat_note(cookie, ep, key);
			count(SPLIT_ORIG_FALLBACK);
		}
		return;
	}
	s->addr[0] = key->addr[0];
	s->addr[1] = key->addr[1];
	s->addr[2] = key->addr[2];
	s->addr[3] = key->addr[3];
	s->ep[0] = ep->addr[0];
	s->ep[1] = ep->addr[1];
	s->ep[2] = ep->addr[2];
	s->ep[3] = ep->addr[3];
	s->port = key->port;
	s->ep_port = ep->port;
	s->family = key->family;
}

/* A socket connects to an address that is no service: what it dialled before no longer applies. */
static __always_inline void forget(struct bpf_sock_addr *ctx, const struct sa *dst)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig_slot *s = orig_find(cookie, NULL);

	if (s) {
		s->cookie = 0;
		count(SPLIT_ORIG_RELEASE);
	}
	if (ctx->protocol == IPPROTO_UDP) {
		struct revnat_key rk = {};

		revnat_key_of(&rk, cookie, dst->addr, dst->port);
		if (bpf_map_delete_elem(&split_revnat, &rk) == 0)
			count(SPLIT_REVNAT_DROP);
	}
}

/* The slot speaks for the socket only while its peer is the endpoint the slot recorded. */
static __always_inline int slot_peer_is(const struct orig_slot *o, const struct sa *peer)
{
	return o->family == peer->family && o->ep_port == peer->port && same_addr(o->ep, peer->addr);
}

/* The socket is connected to the slot's endpoint now (after connect(AF_UNSPEC) it is connected to nothing). */
static __always_inline int connected_to_slot(struct bpf_sock_addr *ctx, const struct orig_slot *o)
{
	struct bpf_sock *sk = ctx->sk;

	if (!sk || sk->dst_port != o->ep_port)
		return 0;
	/* A dual-stack socket connected to an IPv4-mapped address has the IPv4 address in dst_ip4 as well. */
	if (o->family == AF_INET)
		return sk->dst_ip4 == o->ep[0];
	return sk->dst_ip6[0] == o->ep[0] && sk->dst_ip6[1] == o->ep[1] && sk->dst_ip6[2] == o->ep[2] &&
	       sk->dst_ip6[3] == o->ep[3];
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
	struct sa dst;
	int r;

	if (!is_tcp_or_udp(ctx->protocol))
		return 1;
	load_sa(ctx, v6, &dst);
	svc_key_of(ctx, &dst, &key);
	r = pick(&key, &ep);
	if (r == PICK_NOT_A_SERVICE) {
		forget(ctx, &dst);
		return 1;
	}
	/* The compiler keeps a service's endpoints in its own family; anything else is a corrupt table. */
	if (r == PICK_NO_BACKEND || ep.family != key.family) {
		count(SPLIT_CONNECT_NO_BACKEND);
		return refuse();
	}
	remember(ctx, &key, &ep);
	store_sa(ctx, v6, ep.addr, ep.port, ep.family);
	count(SPLIT_CONNECT_REWRITE);
	return 1;
}

/* Unconnected UDP: each datagram picks an endpoint; the reply's source is mapped back per socket. A datagram
 * from a dual-stack socket to an IPv4-mapped address reaches sendmsg4 (the kernel hands it to IPv4 first). */
static __always_inline int do_sendmsg(struct bpf_sock_addr *ctx, int v6)
{
	struct svc_key key = {};
	struct ep_value ep;
	struct sa dst;
	int r;

	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	load_sa(ctx, v6, &dst);
	svc_key_of(ctx, &dst, &key);
	r = pick(&key, &ep);
	if (r == PICK_NOT_A_SERVICE)
		return 1;
	if (r == PICK_NO_BACKEND || ep.family != key.family) {
		count(SPLIT_SENDMSG_NO_BACKEND);
		return refuse();
	}
	revnat_note(bpf_get_socket_cookie(ctx), &ep, &key);
	store_sa(ctx, v6, ep.addr, ep.port, ep.family);
	count(SPLIT_SENDMSG_REWRITE);
	return 1;
}

/* recvmsg(): a datagram from an endpoint shows the service address it stands for. */
static __always_inline int do_recvmsg(struct bpf_sock_addr *ctx, int v6)
{
	struct revnat_key rk = {};
	struct ep_value *vip;
	struct orig_slot *o;
	struct sa src;

	load_sa(ctx, v6, &src);
	revnat_key_of(&rk, bpf_get_socket_cookie(ctx), src.addr, src.port);
	vip = bpf_map_lookup_elem(&split_revnat, &rk);
	if (vip) {
		if (store_sa(ctx, v6, vip->addr, vip->port, vip->family))
			count(SPLIT_RECVMSG_REWRITE);
		return 1;
	}
	/* A connected UDP socket receives only from the endpoint it was connected to. */
	o = orig_find(rk.cookie, NULL);
	if (o && slot_peer_is(o, &src) && connected_to_slot(ctx, o) && store_sa(ctx, v6, o->addr, o->port, o->family))
		count(SPLIT_RECVMSG_REWRITE);
	return 1;
}

static __always_inline int do_getpeername(struct bpf_sock_addr *ctx, int v6)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig_slot *o = orig_find(cookie, NULL);
	struct revnat_key rk = {};
	struct ep_value *vip;
	struct sa peer;

	load_sa(ctx, v6, &peer);
	if (o) {
		if (slot_peer_is(o, &peer) && store_sa(ctx, v6, o->addr, o->port, o->family))
			count(SPLIT_GETPEERNAME_REWRITE);
		return 1;
	}
	/* Connected UDP that found no free slot. */
	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	revnat_key_of(&rk, cookie, peer.addr, peer.port);
	vip = bpf_map_lookup_elem(&split_revnat, &rk);
	if (vip && store_sa(ctx, v6, vip->addr, vip->port, vip->family))
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
