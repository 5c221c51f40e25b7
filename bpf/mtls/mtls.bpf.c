// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Outbound capture and STRICT for mTLS. A TCP connect() from a workload enrolled in mTLS to a mesh workload is
 * sent to the node's data plane; what it was headed for is kept per socket (for getpeername) and, once the
 * kernel has chosen the local port, per client local address (the accepted socket's peer, where the data plane
 * looks it up). Attached after the split in the same cgroup, these programs see the endpoint the split chose.
 * On ingress, a packet to a STRICT port of an enrolled workload from anywhere but the data plane's inbound
 * source address is dropped. Anything else passes untouched.
 * The same-node shortcut: a connect of an allowed local pair (mtls_pairs, written by the agent from the
 * policies) is left alone, and its packets pass STRICT (mtls_direct); any other goes to the data plane.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "bpf_consts.h"
#include "mtls.h"
#include "split.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* cgroup id of an enrolled workload → 1. Written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} mtls_enrolled SEC(".maps");

/* Mesh workloads: (address, port) or (address, 0) for every port → 1. Written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct mtls_addr);
	__type(value, __u32);
} mtls_dests SEC(".maps");

/* (cgroup id, port) → MTLS_MODE_*; port 0 holds the workload's default. Absent: PERMISSIVE. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct mtls_port_key);
	__type(value, __u32);
} mtls_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mtls_config);
} mtls_config SEC(".maps");

/* cgroup id → 1: the cgroups of the data plane's processes, the only ones that may bind its inbound source
 * address (a STRICT port's only accepted plaintext source). Written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u64);
	__type(value, __u32);
} mtls_bind_allowed SEC(".maps");

/* (enrolled cgroup, destination) → 1: the allowed local pairs. Written by user space; empty with the shortcut
 * off. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct mtls_pair_key);
	__type(value, __u32);
} mtls_pairs SEC(".maps");

/* Per socket of a local pair: its destination, for sockops to note the connection once its local port is
 * known, and to remove it at close. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct mtls_addr);
} mtls_local_sk SEC(".maps");

/*
 * Direct connections of local pairs, live: the only plaintext besides the data plane's that a STRICT port takes.
 * Removed at close (the socket's state callback); LRU so that a missed removal cannot fill it. Addresses as the
 * server sees them: pods on one node reach each other without address translation.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct mtls_conn_key);
	__type(value, __u32);
} mtls_direct SEC(".maps");

/* Per socket: freed with the socket, so nothing is given back by hand. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct mtls_orig);
} mtls_sk SEC(".maps");

/*
 * Client local address → original destination, read by the data plane at accept. LRU: a closed connection's
 * entry is never looked up again (only captured connections reach the data plane, and a new one from the same
 * local address overwrites it), so the oldest make room.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct mtls_addr);
	__type(value, struct mtls_orig);
} mtls_orig SEC(".maps");

/*
 * The split's per-socket table, to learn the service address an application dialled: by the time this connect
 * program runs the split has already replaced it with the endpoint. User space points this at the split's
 * pinned map (same layout); alone, it is one empty slot.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct orig_slot);
} split_orig SEC(".maps");

const volatile __u32 split_orig_mask = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MTLS_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} mtls_counters SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *n = bpf_map_lookup_elem(&mtls_counters, &idx);

	if (n)
		*n += 1;
}

static __always_inline int is_mapped(__u32 w0, __u32 w1, __u32 w2)
{
	return w0 == 0 && w1 == 0 && w2 == bpf_htonl(0x0000ffff);
}

static __always_inline void load_addr(struct bpf_sock_addr *ctx, int v6, struct mtls_addr *a)
{
	a->port = (__u16)(*(volatile __u32 *)&ctx->user_port);
	if (!v6) {
		a->addr[0] = ctx->user_ip4;
		a->family = AF_INET;
		return;
	}
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

/* An IPv6 hook shows an IPv4 address mapped; 0 when the address cannot be shown in this hook's family. */
static __always_inline int store_addr(struct bpf_sock_addr *ctx, int v6, const __u32 *addr, __u16 port, __u8 family)
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

static __always_inline int same(const struct mtls_addr *a, const __u32 *addr, __u16 port, __u8 family)
{
	return a->family == family && a->port == port && a->addr[0] == addr[0] && a->addr[1] == addr[1] &&
	       a->addr[2] == addr[2] && a->addr[3] == addr[3];
}

static __always_inline int is_mesh_dest(const struct mtls_addr *dst)
{
	struct mtls_addr any = *dst;

	if (bpf_map_lookup_elem(&mtls_dests, dst))
		return 1;
	any.port = 0;
	return bpf_map_lookup_elem(&mtls_dests, &any) != NULL;
}

/* The data plane's outbound address in dst's family; 0 when it has none there. */
static __always_inline int dataplane_out(const struct mtls_config *cfg, __u8 family, struct mtls_addr *out)
{
	__builtin_memset(out, 0, sizeof(*out));
	out->port = cfg->out_port;
	out->family = family;
	if (family == AF_INET) {
		if (!(cfg->flags & MTLS_CFG_OUT4))
			return 0;
		out->addr[0] = cfg->out4;
		return 1;
	}
	if (!(cfg->flags & MTLS_CFG_OUT6))
		return 0;
	out->addr[0] = cfg->out6[0];
	out->addr[1] = cfg->out6[1];
	out->addr[2] = cfg->out6[2];
	out->addr[3] = cfg->out6[3];
	return 1;
}

/* What the application dialled: the split's service address when the split sent this socket to `dst`. */
static __always_inline void dialled_of(__u64 cookie, const struct mtls_addr *dst, struct mtls_addr *dialled)
{
	*dialled = *dst;
	for (__u32 i = 0; i < SPLIT_ORIG_PROBES; i++) {
		__u32 idx = ((__u32)cookie + i) & split_orig_mask;
		struct orig_slot *s = bpf_map_lookup_elem(&split_orig, &idx);

		if (!s || s->cookie != cookie)
			continue;
		if (s->family != dst->family || s->ep_port != dst->port || s->ep[0] != dst->addr[0] ||
		    s->ep[1] != dst->addr[1] || s->ep[2] != dst->addr[2] || s->ep[3] != dst->addr[3])
			return;
		dialled->addr[0] = s->addr[0];
		dialled->addr[1] = s->addr[1];
		dialled->addr[2] = s->addr[2];
		dialled->addr[3] = s->addr[3];
		dialled->port = s->port;
		dialled->family = s->family;
		return;
	}
}

/* 1: an allowed local pair, marked for sockops and left alone. Without room for the mark it goes to the data
 * plane, as any other connection (STRICT would drop it unmarked). */
static __always_inline int local_direct(struct bpf_sock_addr *ctx, __u64 cg, const struct mtls_addr *dst)
{
	struct mtls_pair_key pk = {};
	struct mtls_addr *l;

	pk.cgroup_id = cg;
	pk.dst = *dst;
	if (!bpf_map_lookup_elem(&mtls_pairs, &pk))
		return 0;
	l = bpf_sk_storage_get(&mtls_local_sk, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!l)
		return 0;
	*l = *dst;
	count(MTLS_LOCAL_DIRECT);
	return 1;
}

static __always_inline int do_connect(struct bpf_sock_addr *ctx, int v6)
{
	__u64 cg = bpf_get_current_cgroup_id();
	struct mtls_addr dst = {}, out;
	struct mtls_config *cfg;
	struct mtls_orig *o;
	struct mtls_addr *l;
	__u32 zero = 0;

	if (ctx->protocol != IPPROTO_TCP || !bpf_map_lookup_elem(&mtls_enrolled, &cg))
		return 1;
	load_addr(ctx, v6, &dst);
	if (!is_mesh_dest(&dst))
		return 1;
	if (local_direct(ctx, cg, &dst))
		return 1;
	cfg = bpf_map_lookup_elem(&mtls_config, &zero);
	if (!cfg || !dataplane_out(cfg, dst.family, &out) || (!v6 && out.family != AF_INET)) {
		count(MTLS_CAPTURE_NO_DATAPLANE);
		return 1;
	}
	o = bpf_sk_storage_get(&mtls_sk, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o) {
		count(MTLS_ORIG_NO_STORAGE);
		return 1;
	}
	/* A socket connecting again (after a failed connect) is captured now: its old local mark no longer holds. */
	l = bpf_sk_storage_get(&mtls_local_sk, ctx->sk, 0, 0);
	if (l)
		l->family = 0;
	o->dst = dst;
	dialled_of(bpf_get_socket_cookie(ctx), &dst, &o->dialled);
	store_addr(ctx, v6, out.addr, out.port, out.family);
	count(MTLS_CAPTURE);
	return 1;
}

/* A captured socket still connected to the data plane shows what the application dialled. */
static __always_inline int do_getpeername(struct bpf_sock_addr *ctx, int v6)
{
	struct mtls_orig *o = bpf_sk_storage_get(&mtls_sk, ctx->sk, 0, 0);
	struct mtls_addr peer = {}, out;
	struct mtls_config *cfg;
	__u32 zero = 0;

	if (!o)
		return 1;
	load_addr(ctx, v6, &peer);
	cfg = bpf_map_lookup_elem(&mtls_config, &zero);
	if (!cfg || !dataplane_out(cfg, peer.family, &out) || !same(&peer, out.addr, out.port, out.family))
		return 1;
	if (store_addr(ctx, v6, o->dialled.addr, o->dialled.port, o->dialled.family))
		count(MTLS_GETPEERNAME_REWRITE);
	return 1;
}

SEC("cgroup/connect4")
int mtls_connect4(struct bpf_sock_addr *ctx)
{
	return do_connect(ctx, 0);
}

SEC("cgroup/connect6")
int mtls_connect6(struct bpf_sock_addr *ctx)
{
	return do_connect(ctx, 1);
}

SEC("cgroup/getpeername4")
int mtls_getpeername4(struct bpf_sock_addr *ctx)
{
	return do_getpeername(ctx, 0);
}

SEC("cgroup/getpeername6")
int mtls_getpeername6(struct bpf_sock_addr *ctx)
{
	return do_getpeername(ctx, 1);
}

/*
 * TCP_CONNECT_CB runs in tcp_connect(), after the local port was bound and before the SYN leaves: the record
 * is in place before the data plane can accept. Called for every active open, no callback flags needed.
 */
SEC("sockops")
int mtls_sockops(struct bpf_sock_ops *ctx)
{
	struct mtls_conn_key ck = {};
	struct mtls_addr local = {};
	struct mtls_addr *l;
	struct mtls_orig *o;
	struct bpf_sock *sk;
	int op = ctx->op;

	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	sk = ctx->sk;
	if (!sk)
		return 1;
	l = bpf_sk_storage_get(&mtls_local_sk, sk, 0, 0);
	if (l && !l->family) /* unmarked: captured after all */
		l = NULL;
	o = l ? NULL : bpf_sk_storage_get(&mtls_sk, sk, 0, 0);
	if (!l && !o)
		return 1;
	/* Only local pairs ask for state callbacks: the direct connection is forgotten as it closes. */
	if (op == BPF_SOCK_OPS_STATE_CB && (!l || ctx->args[1] != BPF_TCP_CLOSE))
		return 1;
	local.port = bpf_htons((__u16)ctx->local_port); /* sockops: host order */
	if (ctx->family == AF_INET) {
		local.addr[0] = ctx->local_ip4;
		local.family = AF_INET;
	} else {
		local.addr[0] = ctx->local_ip6[0];
		local.addr[1] = ctx->local_ip6[1];
		local.addr[2] = ctx->local_ip6[2];
		local.addr[3] = ctx->local_ip6[3];
		local.family = AF_INET6;
		if (is_mapped(local.addr[0], local.addr[1], local.addr[2])) {
			local.addr[0] = local.addr[3];
			local.addr[1] = 0;
			local.addr[2] = 0;
			local.addr[3] = 0;
			local.family = AF_INET;
		}
	}
	if (l) {
		__u32 one = 1;

		ck.src = local;
		ck.dst = *l;
		if (op == BPF_SOCK_OPS_STATE_CB) {
			bpf_map_delete_elem(&mtls_direct, &ck);
			return 1;
		}
		bpf_map_update_elem(&mtls_direct, &ck, &one, BPF_ANY);
		bpf_sock_ops_cb_flags_set(ctx, ctx->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	}
	if (o && bpf_map_update_elem(&mtls_orig, &local, o, BPF_ANY) == 0)
		count(MTLS_ORIG_NOTE);
	return 1;
}

/* IPv6 extension headers walked before giving up on finding the TCP header. */
#define IPV6_EXT_MAX 4

/*
 * 1: the packet is TCP to a listener of the workload on a STRICT port and its source is not the data plane.
 * Only a listener's packets are checked: the SYN, and the handshake's final ACK (tcp_v4_rcv/tcp_v6_rcv run the
 * filter with the listener for a request socket, and a syncookie ACK finds the listener). A connection the
 * workload accepted was checked there; any other socket is one the workload opened itself, whose replies come
 * from wherever it dialled (its ephemeral port may fall under a workload-wide STRICT) and always pass.
 */
static __always_inline int strict_refuses(struct __sk_buff *skb)
{
	struct mtls_port_key key = {};
	struct mtls_config *cfg;
	struct bpf_sock *sk;
	struct mtls_conn_key ck = {};
	__u32 *mode, zero = 0, src[4] = {}, dst[4] = {};
	__u16 ports[2], flags;
	__u8 family;
	int l4;

	key.cgroup_id = bpf_skb_cgroup_id(skb);
	if (!bpf_map_lookup_elem(&mtls_enrolled, &key.cgroup_id))
		return 0;
	sk = skb->sk;
	if (!sk)
		return 0;
	sk = bpf_sk_fullsock(sk);
	if (!sk || sk->protocol != IPPROTO_TCP)
		return 0;
	if (sk->state != BPF_TCP_LISTEN) {
		count(MTLS_STRICT_PASS_CONNECTED);
		return 0;
	}
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) || ip.protocol != IPPROTO_TCP)
			return 0;
		/* A later fragment has no TCP header; the kernel reassembles before the socket sees it. */
		if (bpf_ntohs(ip.frag_off) & IP_OFFSET)
			return 0;
		src[0] = ip.saddr;
		dst[0] = ip.daddr;
		family = AF_INET;
		l4 = ip.ihl * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		__u8 next;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return 0;
		next = ip6.nexthdr;
		l4 = sizeof(ip6);
		/* Extension headers before TCP must not carry a packet past the check. */
		for (int i = 0; i < IPV6_EXT_MAX; i++) {
			__u8 ext[2];

			if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS)
				break;
			if (bpf_skb_load_bytes(skb, l4, ext, sizeof(ext))) {
				count(MTLS_STRICT_DROP_MALFORMED);
				return 1;
			}
			next = ext[0];
			l4 += (ext[1] + 1) * 8;
		}
		if (next != IPPROTO_TCP) {
			/* Still an extension header after IPV6_EXT_MAX: its TCP port cannot be told; refused. */
			if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS) {
				count(MTLS_STRICT_DROP_MALFORMED);
				return 1;
			}
			return 0;
		}
		__builtin_memcpy(src, &ip6.saddr, sizeof(src));
		__builtin_memcpy(dst, &ip6.daddr, sizeof(dst));
		family = AF_INET6;
		if (is_mapped(src[0], src[1], src[2])) {
			src[0] = src[3];
			src[1] = src[2] = src[3] = 0;
			family = AF_INET;
		}
		if (is_mapped(dst[0], dst[1], dst[2])) {
			dst[0] = dst[3];
			dst[1] = dst[2] = dst[3] = 0;
		}
	} else {
		return 0;
	}
	/* source and dest port: bytes 0-3 of the TCP header */
	if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports))) {
		count(MTLS_STRICT_DROP_MALFORMED);
		return 1;
	}
	key.port = bpf_ntohs(ports[1]);
	mode = bpf_map_lookup_elem(&mtls_ports, &key);
	if (!mode) {
		key.port = 0;
		mode = bpf_map_lookup_elem(&mtls_ports, &key);
	}
	if (!mode || *mode != MTLS_MODE_STRICT)
		return 0;
	cfg = bpf_map_lookup_elem(&mtls_config, &zero);
	if (cfg) {
		flags = cfg->flags;
		if ((family == AF_INET && (flags & MTLS_CFG_IN4) && src[0] == cfg->in4) ||
		    (family == AF_INET6 && (flags & MTLS_CFG_IN6) && src[0] == cfg->in6[0] && src[1] == cfg->in6[1] &&
		     src[2] == cfg->in6[2] && src[3] == cfg->in6[3])) {
			count(MTLS_STRICT_PASS_DATAPLANE);
			return 0;
		}
	}
	ck.src.family = ck.dst.family = family;
	ck.src.port = ports[0];
	ck.dst.port = ports[1];
	__builtin_memcpy(ck.src.addr, src, sizeof(src));
	__builtin_memcpy(ck.dst.addr, dst, sizeof(dst));
	if (bpf_map_lookup_elem(&mtls_direct, &ck)) {
		count(MTLS_STRICT_PASS_LOCAL);
		return 0;
	}
	count(MTLS_STRICT_DROP_PLAINTEXT);
	return 1;
}

/*
 * The bind guard: the inbound source address is the data plane's credential towards STRICT ports, so a bind()
 * to it from any cgroup but the data plane's is refused (EPERM), in every network namespace (a pod could
 * otherwise bind it with IP_FREEBIND and send as the data plane). 1 lets the bind proceed, 0 refuses it.
 */
static __always_inline int bind_allowed(struct bpf_sock_addr *ctx, int v6)
{
	__u32 zero = 0, a0, a1 = 0, a2 = 0, a3 = 0;
	struct mtls_config *cfg = bpf_map_lookup_elem(&mtls_config, &zero);
	__u64 cg;
	int ours;

	if (!cfg)
		return 1;
	if (!v6) {
		ours = (cfg->flags & MTLS_CFG_IN4) && ctx->user_ip4 == cfg->in4;
	} else {
		a0 = ctx->user_ip6[0];
		a1 = ctx->user_ip6[1];
		a2 = ctx->user_ip6[2];
		a3 = ctx->user_ip6[3];
		if (is_mapped(a0, a1, a2)) /* a dual-stack socket binding ::ffff:a.b.c.d */
			ours = (cfg->flags & MTLS_CFG_IN4) && a3 == cfg->in4;
		else
			ours = (cfg->flags & MTLS_CFG_IN6) && a0 == cfg->in6[0] && a1 == cfg->in6[1] &&
			       a2 == cfg->in6[2] && a3 == cfg->in6[3];
	}
	if (!ours)
		return 1;
	cg = bpf_get_current_cgroup_id();
	if (bpf_map_lookup_elem(&mtls_bind_allowed, &cg))
		return 1;
	count(MTLS_BIND_REFUSED);
	return 0;
}

SEC("cgroup/bind4")
int mtls_bind4(struct bpf_sock_addr *ctx)
{
	return bind_allowed(ctx, 0);
}

SEC("cgroup/bind6")
int mtls_bind6(struct bpf_sock_addr *ctx)
{
	return bind_allowed(ctx, 1);
}

SEC("cgroup_skb/ingress")
int mtls_strict(struct __sk_buff *skb)
{
	return strict_refuses(skb) ? 0 : 1;
}
