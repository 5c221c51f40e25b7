// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * HTTP/1.x golden signals and TCP metrics for the sockets of a cgroup subtree, aggregated in the kernel.
 *
 * sockops marks each established TCP connection (client or server side) with per-socket state. cgroup_skb
 * egress and ingress see its packets: a connection alternates request, response, request, …; the first bytes
 * of a request give the method, the first bytes of its response the status, and their arrival times the
 * duration. Bytes are collected across segments and writes until the line can be read, so requests written in
 * small pieces still count. Streams that do not start like HTTP/1.x are marked and ignored.
 * User space reads per-CPU aggregates; no per-request event leaves the kernel.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "bpf_consts.h"
#include "http.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct http_conn);
} http_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct http_key);
	__type(value, struct http_value);
} http_requests SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct l4_pair_key);
	__type(value, struct l4_pair_value);
} tcp_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HTTP_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} http_counters SEC(".maps");

/*
 * The bucket of a duration: upper bounds 5, 10, 25, 50, 75, 100, 250, 500, 750 ms, 1, 2.5, 5, 7.5, 10 s
 * (OpenTelemetry's defaults), then +Inf. Comparisons rather than a table: a constant array would need a
 * .rodata map for 14 numbers.
 */
static __always_inline __u32 bucket_of(__u64 d)
{
	const __u64 ms = 1000000ULL;

	if (d <= 100 * ms) {
		if (d <= 25 * ms)
			return d <= 5 * ms ? 0 : d <= 10 * ms ? 1 : 2;
		return d <= 50 * ms ? 3 : d <= 75 * ms ? 4 : 5;
	}
	if (d <= 1000 * ms)
		return d <= 250 * ms ? 6 : d <= 500 * ms ? 7 : d <= 750 * ms ? 8 : 9;
	return d <= 2500 * ms ? 10 : d <= 5000 * ms ? 11 : d <= 7500 * ms ? 12 : d <= 10000 * ms ? 13 : 14;
}

/* The key user space inserts at load: what cannot get its own entry once a map is full is counted here. */
#define OVERFLOW_CGROUP 0xffffffffffffffffULL

static __always_inline void count(__u32 idx)
{
	__u64 *n = bpf_map_lookup_elem(&http_counters, &idx);

	if (n)
		*n += 1;
}

/*
 * For a key with no entry yet: the entry created from zero, or the overflow entry when the map is full. Callers
 * look up first and build zero and the overflow key only on a miss: the common path builds neither (the zero
 * http_value alone is 136 bytes of stack stores).
 */
static __always_inline void *create_entry(void *map, void *key, void *zero, void *overflow_key, __u32 overflow_counter)
{
	void *v;

	/* EEXIST (another CPU created it meanwhile) is fine; E2BIG (full) leaves the lookup empty. */
	bpf_map_update_elem(map, key, zero, BPF_NOEXIST);
	v = bpf_map_lookup_elem(map, key);
	if (v)
		return v;
	count(overflow_counter);
	return bpf_map_lookup_elem(map, overflow_key);
}

static __always_inline struct l4_pair_value *tcp_entry(struct http_conn *c)
{
	struct l4_pair_key key = {};
	struct l4_pair_value *t;

	key.cgroup_id = c->cgroup_id;
	key.remote_ip[0] = c->remote_ip[0];
	key.remote_ip[1] = c->remote_ip[1];
	key.remote_ip[2] = c->remote_ip[2];
	key.remote_ip[3] = c->remote_ip[3];
	key.port = c->role == HTTP_ROLE_CLIENT ? c->remote_port : c->local_port;
	key.dir = c->role == HTTP_ROLE_CLIENT ? HTTP_DIR_CLIENT : HTTP_DIR_SERVER;
	key.family = c->family;
	t = bpf_map_lookup_elem(&tcp_stats, &key);
	if (!t) {
		struct l4_pair_key over = { .cgroup_id = OVERFLOW_CGROUP };
		struct l4_pair_value zero = {};

		t = create_entry(&tcp_stats, &key, &zero, &over, HTTP_C_TCP_OVERFLOW);
	}
	return t;
}

/* Adds the bytes counted on the connection since the last flush to its tcp_stats entry. */
static __always_inline void flush_bytes(struct http_conn *c, struct l4_pair_value *t)
{
	if (!t)
		t = tcp_entry(c);
	if (!t)
		return;
	t->bytes_sent += c->unflushed_sent;
	t->bytes_received += c->unflushed_received;
	c->unflushed_sent = 0;
	c->unflushed_received = 0;
}

static __always_inline void record(struct http_conn *c, __u16 status, __u64 resp_start)
{
	struct http_key key = {};
	struct http_value *v;
	/* A paced packet's departure time can be slightly ahead of the receive side's clock: no negative durations. */
	__u64 d = resp_start > c->req_start_ns ? resp_start - c->req_start_ns : 0;
	__u32 b = bucket_of(d);

	key.cgroup_id = c->cgroup_id;
	key.remote_ip[0] = c->remote_ip[0];
	key.remote_ip[1] = c->remote_ip[1];
	key.remote_ip[2] = c->remote_ip[2];
	key.remote_ip[3] = c->remote_ip[3];
	key.port = c->role == HTTP_ROLE_CLIENT ? c->remote_port : c->local_port;
	key.status = status;
	key.dir = c->role == HTTP_ROLE_CLIENT ? HTTP_DIR_CLIENT : HTTP_DIR_SERVER;
	key.method = c->method;
	key.family = c->family;
	v = bpf_map_lookup_elem(&http_requests, &key);
	if (!v) {
		struct http_key over = { .cgroup_id = OVERFLOW_CGROUP };
		struct http_value zero = {};

		v = create_entry(&http_requests, &key, &zero, &over, HTTP_C_HTTP_OVERFLOW);
	}
	if (!v)
		return;
	v->count += 1;
	v->sum_ns += d;
	v->buckets[b < HTTP_BUCKETS ? b : HTTP_BOUNDS] += 1;
}

#define PARSE_MORE 0
#define PARSE_OK 1
#define PARSE_BAD 2

static __always_inline int is_upper(__u8 ch)
{
	return ch >= 'A' && ch <= 'Z';
}

/* The request line's method: an upper-case token, a space, then a request target ('/', '*' or absolute). */
static __always_inline int parse_method(const __u8 *p, __u32 n, __u8 *method)
{
	__u32 len = 0;

	for (__u32 i = 0; i < HTTP_PREFIX - 1; i++) {
		if (i >= n)
			return PARSE_MORE;
		if (p[i] == ' ') {
			len = i;
			break;
		}
		if (!is_upper(p[i]))
			return PARSE_BAD;
	}
	if (len == 0)
		return PARSE_BAD;
	if (len + 1 >= n)
		return PARSE_MORE;
	if (p[(len + 1) & (HTTP_PREFIX - 1)] != '/' && p[(len + 1) & (HTTP_PREFIX - 1)] != '*' &&
	    p[(len + 1) & (HTTP_PREFIX - 1)] != 'h')
		return PARSE_BAD;
	*method = HTTP_M_OTHER;
	if (len == 3 && p[0] == 'G' && p[1] == 'E' && p[2] == 'T')
		*method = HTTP_M_GET;
	else if (len == 3 && p[0] == 'P' && p[1] == 'U' && p[2] == 'T')
		*method = HTTP_M_PUT;
	else if (len == 4 && p[0] == 'H' && p[1] == 'E' && p[2] == 'A' && p[3] == 'D')
		*method = HTTP_M_HEAD;
	else if (len == 4 && p[0] == 'P' && p[1] == 'O' && p[2] == 'S' && p[3] == 'T')
		*method = HTTP_M_POST;
	else if (len == 5 && p[0] == 'P' && p[1] == 'A' && p[2] == 'T' && p[3] == 'C' && p[4] == 'H')
		*method = HTTP_M_PATCH;
	else if (len == 5 && p[0] == 'T' && p[1] == 'R' && p[2] == 'A' && p[3] == 'C' && p[4] == 'E')
		*method = HTTP_M_TRACE;
	else if (len == 6 && p[0] == 'D' && p[1] == 'E' && p[2] == 'L' && p[3] == 'E' && p[4] == 'T' && p[5] == 'E')
		*method = HTTP_M_DELETE;
	else if (len == 7 && p[0] == 'O' && p[1] == 'P' && p[2] == 'T' && p[3] == 'I' && p[4] == 'O' && p[5] == 'N' &&
		 p[6] == 'S')
		*method = HTTP_M_OPTIONS;
	else if (len == 7 && p[0] == 'C' && p[1] == 'O' && p[2] == 'N' && p[3] == 'N' && p[4] == 'E' && p[5] == 'C' &&
		 p[6] == 'T')
		*method = HTTP_M_CONNECT;
	return PARSE_OK;
}

/* "HTTP/1.x NNN": 12 bytes. Checked as they arrive, so a stream that is not a status line fails early. */
static __always_inline int parse_status(const __u8 *p, __u32 n, __u16 *status)
{
	for (__u32 i = 0; i < 12; i++) {
		__u8 ch, want;

		if (i >= n)
			return PARSE_MORE;
		ch = p[i];
		want = i == 0 ? 'H' : i == 1 || i == 2 ? 'T' : i == 3 ? 'P' : i == 4 ? '/' : i == 5 ? '1' : '.';
		if (i < 7 && ch != want)
			return PARSE_BAD;
		if (i == 7 && ch != '0' && ch != '1')
			return PARSE_BAD;
		if (i == 8 && ch != ' ')
			return PARSE_BAD;
		if (i >= 9 && (ch < '0' || ch > '9'))
			return PARSE_BAD;
	}
	*status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	return PARSE_OK;
}

/* Little-endian words of the tokens the fast paths compare with. */
#define W4(a, b, c, d) ((__u32)(a) | (__u32)(b) << 8 | (__u32)(c) << 16 | (__u32)(d) << 24)
#define W8_HTTP_1_1 ((__u64)W4('H', 'T', 'T', 'P') | (__u64)W4('/', '1', '.', '1') << 32)

/*
 * parse_method on a whole prefix (HTTP_PREFIX bytes, 8-byte aligned): the nine methods with names by word
 * compares, a dozen instructions instead of a byte loop; anything else goes through the byte loop.
 */
static __always_inline int parse_method_prefix(const __u8 *p, __u8 *method)
{
	__u32 w = *(const __u32 *)p, len = 0;
	__u8 m = HTTP_M_NONE, t;

	switch (w) {
	case W4('G', 'E', 'T', ' '):
		m = HTTP_M_GET, len = 3;
		break;
	case W4('P', 'U', 'T', ' '):
		m = HTTP_M_PUT, len = 3;
		break;
	case W4('H', 'E', 'A', 'D'):
		if (p[4] == ' ')
			m = HTTP_M_HEAD, len = 4;
		break;
	case W4('P', 'O', 'S', 'T'):
		if (p[4] == ' ')
			m = HTTP_M_POST, len = 4;
		break;
	case W4('P', 'A', 'T', 'C'):
		if (p[4] == 'H' && p[5] == ' ')
			m = HTTP_M_PATCH, len = 5;
		break;
	case W4('T', 'R', 'A', 'C'):
		if (p[4] == 'E' && p[5] == ' ')
			m = HTTP_M_TRACE, len = 5;
		break;
	case W4('D', 'E', 'L', 'E'):
		if (p[4] == 'T' && p[5] == 'E' && p[6] == ' ')
			m = HTTP_M_DELETE, len = 6;
		break;
	case W4('O', 'P', 'T', 'I'):
		if (*(const __u32 *)(p + 4) == W4('O', 'N', 'S', ' '))
			m = HTTP_M_OPTIONS, len = 7;
		break;
	case W4('C', 'O', 'N', 'N'):
		if (*(const __u32 *)(p + 4) == W4('E', 'C', 'T', ' '))
			m = HTTP_M_CONNECT, len = 7;
		break;
	}
	if (m == HTTP_M_NONE)
		return parse_method(p, HTTP_PREFIX, method);
	t = p[len + 1];
	if (t != '/' && t != '*' && t != 'h')
		return PARSE_BAD;
	*method = m;
	return PARSE_OK;
}

/* parse_status on a whole prefix (8-byte aligned): "HTTP/1.0" or "HTTP/1.1" in one compare. */
static __always_inline int parse_status_prefix(const __u8 *p, __u16 *status)
{
	__u8 d0 = p[9] - '0', d1 = p[10] - '0', d2 = p[11] - '0';

	/* '0' | 1 == '1': one compare accepts both minor versions. */
	if ((*(const __u64 *)p | (__u64)1 << 56) != W8_HTTP_1_1 || p[8] != ' ' || d0 > 9 || d1 > 9 || d2 > 9)
		return PARSE_BAD;
	*status = d0 * 100 + d1 * 10 + d2;
	return PARSE_OK;
}

/* Appends up to HTTP_PREFIX - *len bytes of payload to buf: for a line that arrives in pieces. */
static __always_inline void collect(struct __sk_buff *skb, __u32 off, __u32 avail, __u8 *buf, __u8 *len)
{
	__u8 tmp[HTTP_PREFIX] = {};
	__u32 have = *len, want;

	if (have >= HTTP_PREFIX)
		return;
	want = HTTP_PREFIX - have;
	if (want > avail)
		want = avail;
	/*
	 * For the verifier: the barrier keeps the compiler from folding the mask into the comparisons above, so
	 * the length passed to bpf_skb_load_bytes is provably within tmp.
	 */
	asm volatile("" : "+r"(want));
	/* want is in [1, HTTP_PREFIX] here (payload is non-empty, have < HTTP_PREFIX); this form proves it to
	 * verifiers that do not narrow a range on "!= 0" (Linux 6.1). */
	want = ((want - 1) & (HTTP_PREFIX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, off, tmp, want))
		return;
	for (__u32 i = 0; i < HTTP_PREFIX; i++) {
		__u32 pos = have + i;

		if (i >= want || pos >= HTTP_PREFIX)
			break;
		/* Again for the verifier: index through the mask, not through a pointer the compiler advanced. */
		asm volatile("" : "+r"(pos));
		buf[pos & (HTTP_PREFIX - 1)] = tmp[i];
	}
	*len = have + want;
}

/*
 * The first bytes of a line: straight from the packet onto the stack when the line starts in it with enough
 * bytes to read (the usual case: nothing is stored), else gathered in the connection's buffer across segments.
 * Returns the bytes to parse and sets *n to their number.
 */
static __always_inline const __u8 *prefix(struct __sk_buff *skb, __u32 off, __u32 avail, __u8 *stack, __u8 *buf,
					  __u8 *len, __u32 *n)
{
	if (*len == 0 && avail >= HTTP_PREFIX && bpf_skb_load_bytes(skb, off, stack, HTTP_PREFIX) == 0) {
		*n = HTTP_PREFIX;
		return stack;
	}
	collect(skb, off, avail, buf, len);
	*n = *len;
	return buf;
}

static __always_inline void request_bytes(struct __sk_buff *skb, struct http_conn *c, __u32 off, __u32 len, __u64 now)
{
	__u64 stack[HTTP_PREFIX / 8];
	__u8 method = 0;
	const __u8 *p;
	__u32 n;
	int r;

	if (c->state != HTTP_ST_REQ_PFX) {
		c->req_start_ns = now;
		c->req_len = 0;
	}
	p = prefix(skb, off, len, (__u8 *)stack, c->req_pfx, &c->req_len, &n);
	r = n == HTTP_PREFIX ? parse_method_prefix(p, &method) : parse_method(p, n, &method);
	if (r == PARSE_OK) {
		c->method = method;
		c->state = HTTP_ST_AWAIT;
	} else if (r == PARSE_BAD) {
		c->state = HTTP_ST_NOT_HTTP;
		count(HTTP_C_NOT_HTTP);
	} else {
		c->state = HTTP_ST_REQ_PFX;
	}
}

static __always_inline void response_bytes(struct __sk_buff *skb, struct http_conn *c, __u32 off, __u32 len, __u64 now)
{
	__u64 stack[HTTP_PREFIX / 8];
	const __u8 *p;
	__u16 status = 0;
	__u64 start;
	__u32 n;
	int r;

	/* The response's start: this packet's time, or kept from the packet that began an incomplete status line. */
	if (c->state == HTTP_ST_AWAIT) {
		start = now;
		c->resp_len = 0;
	} else {
		start = c->resp_start_ns;
	}
	p = prefix(skb, off, len, (__u8 *)stack, c->resp_pfx, &c->resp_len, &n);
	r = n == HTTP_PREFIX ? parse_status_prefix(p, &status) : parse_status(p, n, &status);
	if (r == PARSE_MORE) {
		c->resp_start_ns = start;
		c->state = HTTP_ST_RESP_PFX;
		return;
	}
	if (r == PARSE_BAD) {
		count(HTTP_C_UNPARSED_STATUS);
		status = 0;
	}
	record(c, status, start);
	c->state = HTTP_ST_IDLE;
}

/* Whether a packet in this direction can move the exchange state; any other packet only adds its bytes. */
static __always_inline int wanted(const struct http_conn *c, int request_dir)
{
	if (request_dir)
		return c->state <= HTTP_ST_REQ_PFX; /* NEW, IDLE, REQ_PFX: a request starts or goes on */
	return c->state == HTTP_ST_AWAIT || c->state == HTTP_ST_RESP_PFX;
}

static __always_inline int handle(struct __sk_buff *skb, int egress)
{
	struct bpf_sock *sk = skb->sk;
	struct http_conn *c;
	struct l4_pair_value *t;
	__u32 ip_len, off, payload;
	__u64 now;
	int request_dir;
	__u8 b;

	if (!sk)
		return 1;
	/* Only sockops gives a socket this storage, and only an established TCP one: finding it says TCP. */
	c = bpf_sk_storage_get(&http_conns, sk, 0, 0);
	if (!c)
		return 1;
	if (c->cgroup_id == 0) {
		/* The first packet after the handshake: now the socket's cgroup is known, the connection counts. */
		c->cgroup_id = bpf_skb_cgroup_id(skb);
		t = tcp_entry(c);
		if (t)
			t->opened += 1;
	}
	/* Header lengths by direct packet access (the headers are always in the linear part): no helper call. */
	{
		void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
		__u8 *p = data;

		if (skb->protocol == bpf_htons(ETH_P_IP)) {
			if (data + 1 > end)
				return 1;
			ip_len = (p[0] & 0xf) * 4;
		} else {
			ip_len = 40;
		}
		if (ip_len < 20 || ip_len > 60)
			return 1;
		p = data + ip_len + 12;
		if ((void *)(p + 1) > end)
			return 1;
		b = *p;
	}
	off = ip_len + (b >> 4) * 4;
	if (skb->len <= off)
		return 1;
	payload = skb->len - off;
	/* Byte counts reach tcp_stats every 64 KiB per direction and when the connection closes: no map update per packet. */
	if (egress) {
		c->unflushed_sent += payload;
		if (c->unflushed_sent >= 65536)
			flush_bytes(c, 0);
	} else {
		c->unflushed_received += payload;
		if (c->unflushed_received >= 65536)
			flush_bytes(c, 0);
	}
	request_dir = (c->role == HTTP_ROLE_CLIENT) == (egress != 0);
	if (!wanted(c, request_dir))
		return 1;
	/*
	 * The time of the line's first byte. TCP stamps each packet it sends with its departure time (EDT, read
	 * from the same monotonic clock as bpf_ktime_get_ns): on egress that is free; received packets carry no
	 * usable stamp.
	 */
	now = egress ? skb->tstamp : 0;
	if (!now)
		now = bpf_ktime_get_ns();
	if (request_dir)
		request_bytes(skb, c, off, payload, now);
	else
		response_bytes(skb, c, off, payload, now);
	return 1;
}

SEC("cgroup_skb/egress")
int http_egress(struct __sk_buff *skb)
{
	return handle(skb, 1);
}

SEC("cgroup_skb/ingress")
int http_ingress(struct __sk_buff *skb)
{
	return handle(skb, 0);
}

SEC("sockops")
int http_sockops(struct bpf_sock_ops *skops)
{
	struct http_conn *c;
	struct l4_pair_value *t;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: {
		struct bpf_sock *sk = skops->sk;

		if (!sk)
			return 1;
		c = bpf_sk_storage_get(&http_conns, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!c)
			return 1;
		c->role = skops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB ? HTTP_ROLE_CLIENT : HTTP_ROLE_SERVER;
		c->family = skops->family == AF_INET6 ? AF_INET6 : AF_INET;
		if (c->family == AF_INET) {
			c->remote_ip[0] = skops->remote_ip4;
		} else {
			c->remote_ip[0] = skops->remote_ip6[0];
			c->remote_ip[1] = skops->remote_ip6[1];
			c->remote_ip[2] = skops->remote_ip6[2];
			c->remote_ip[3] = skops->remote_ip6[3];
		}
		c->remote_port = (__u16)bpf_ntohl(skops->remote_port);
		c->local_port = (__u16)skops->local_port;
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	}
	case BPF_SOCK_OPS_STATE_CB: {
		struct bpf_sock *sk = skops->sk;

		if (skops->args[1] != BPF_TCP_CLOSE || !sk)
			return 1;
		c = bpf_sk_storage_get(&http_conns, sk, 0, 0);
		if (!c || c->cgroup_id == 0)
			return 1;
		t = tcp_entry(c);
		if (t)
			t->closed += 1;
		flush_bytes(c, t);
		break;
	}
	}
	return 1;
}
