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

/* Keeps the compiler from moving memory accesses across it (the JIT keeps the order it is given). */
#define barrier() asm volatile("" ::: "memory")

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct http_conn);
} http_conns SEC(".maps");

/* The request direction's own state: a separate allocation, so the response direction's CPU never touches it. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct http_req_side);
} http_reqs SEC(".maps");

/*
 * Request aggregates: a series (struct http_key) names a cell of http_cells, where its per-CPU counts are. Cells
 * are handed out by the programs from http_cells_used; cell 0 and the overflow key are user space's, from load.
 * A socket remembers the cell of its last series, so a keep-alive connection's responses skip the hash.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct http_key);
	__type(value, __u32);
} http_requests SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct http_value);
} http_cells SEC(".maps");

/* [0]: cells handed out so far, after cell 0. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} http_cells_used SEC(".maps");

/*
 * Set at load, different for every load: a socket's remembered cell counts only if it was remembered under this
 * load's maps (a new load may come with new, empty ones while the sockets keep their storage).
 */
const volatile __u32 cell_epoch = 1;

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

/*
 * Adds one direction's bytes counted since its last flush (*n) to the connection's tcp_stats entry. Each
 * direction flushes only its own counter: the other one is written on another CPU.
 */
static __always_inline void flush_bytes(struct http_conn *c, struct l4_pair_value *t, __u32 *n, int request_dir)
{
	if (!t)
		t = tcp_entry(c);
	if (!t)
		return;
	/* The client sends its requests; the server receives them. */
	if ((c->role == HTTP_ROLE_CLIENT) == (request_dir != 0))
		t->bytes_sent += *n;
	else
		t->bytes_received += *n;
	*n = 0;
}

/* The cell of a series: its own, a new one, or the overflow cell 0 (counted) when no cell or key is left. */
static __always_inline __u32 series_cell(struct http_conn *c, __u8 method, __u16 status)
{
	struct http_key key = {};
	__u32 zero = 0, *p, *used, cell;

	key.cgroup_id = c->cgroup_id;
	key.remote_ip[0] = c->remote_ip[0];
	key.remote_ip[1] = c->remote_ip[1];
	key.remote_ip[2] = c->remote_ip[2];
	key.remote_ip[3] = c->remote_ip[3];
	key.port = c->role == HTTP_ROLE_CLIENT ? c->remote_port : c->local_port;
	key.status = status;
	key.dir = c->role == HTTP_ROLE_CLIENT ? HTTP_DIR_CLIENT : HTTP_DIR_SERVER;
	key.method = method;
	key.family = c->family;
	p = bpf_map_lookup_elem(&http_requests, &key);
	if (p)
		return *p;
	used = bpf_map_lookup_elem(&http_cells_used, &zero);
	/* Checked before taking one, so the count stops near the array's size instead of wrapping around. */
	if (!used || *used >= HTTP_MAX_CELLS)
		return 0;
	cell = __sync_fetch_and_add(used, 1) + 1;
	if (!bpf_map_lookup_elem(&http_cells, &cell))
		return 0; /* past the array's end */
	if (bpf_map_update_elem(&http_requests, &key, &cell, BPF_NOEXIST) == 0)
		return cell;
	/* Another CPU added the key meanwhile (its cell wins; this one stays unused), or the hash is full. */
	p = bpf_map_lookup_elem(&http_requests, &key);
	return p ? *p : 0;
}

static __always_inline void record(struct http_conn *c, __u8 method, __u64 req_start, __u16 status, __u64 resp_start)
{
	struct http_resp_side *rs = &c->resp;
	struct http_value *v;
	/* A paced packet's departure time can be slightly ahead of the receive side's clock: no negative durations. */
	__u64 d = resp_start > req_start ? resp_start - req_start : 0;
	__u32 b = bucket_of(d), tag = method | (__u32)status << 8 | 1U << 31, cell;

	if (rs->cell_tag == tag && rs->cell_epoch == cell_epoch) {
		cell = rs->cell;
	} else {
		cell = series_cell(c, method, status);
		rs->cell = cell;
		rs->cell_tag = tag;
		rs->cell_epoch = cell_epoch;
	}
	if (cell == 0)
		count(HTTP_C_HTTP_OVERFLOW);
	v = bpf_map_lookup_elem(&http_cells, &cell);
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

/*
 * The time of a line's first byte. TCP stamps each packet it sends with its departure time (EDT, read from the
 * same monotonic clock as bpf_ktime_get_ns): on egress that is free; received packets carry no usable stamp.
 */
static __always_inline __u64 line_time(struct __sk_buff *skb, int egress)
{
	__u64 t = egress ? skb->tstamp : 0;

	return t ? t : bpf_ktime_get_ns();
}

/*
 * A payload packet in the request direction: a new request, the rest of a request line, or a request's body.
 * `ack` is the packet's ack number: it moves once response bytes arrived, so a packet whose ack differs from
 * the current request's first packet's starts the next request (HTTP/1.x clients send it after the answer).
 */
static __always_inline void request_packet(struct __sk_buff *skb, struct bpf_sock *sk, struct http_conn *c, __u32 off,
					   __u32 len, __u32 ack, int egress)
{
	struct http_req_side *rq = bpf_sk_storage_get(&http_reqs, sk, 0, 0);
	__u64 stack[HTTP_PREFIX / 8];
	const __u8 *p;
	__u8 method = 0;
	__u32 n, id;
	int r;

	if (!rq)
		return;
	rq->unflushed += len;
	if (rq->unflushed >= 65536)
		flush_bytes(c, 0, &rq->unflushed, 1);
	if (rq->state == HTTP_RQ_NOT_HTTP)
		return;
	if (rq->state == HTTP_RQ_NONE || ack != rq->ack) {
		rq->start_ns = line_time(skb, egress);
		rq->ack = ack;
		rq->pfx_len = 0;
	} else if (rq->state == HTTP_RQ_LINE) {
		return; /* not answered yet: the current request's body */
	}
	p = prefix(skb, off, len, (__u8 *)stack, rq->pfx, &rq->pfx_len, &n);
	r = n == HTTP_PREFIX ? parse_method_prefix(p, &method) : parse_method(p, n, &method);
	if (r == PARSE_OK) {
		id = rq->id + 1 ? rq->id + 1 : 1; /* 0 means "none" to the response direction */
		rq->id = id;
		rq->state = HTTP_RQ_LINE;
		/* Stores only (a load would take the line back from the other CPU), the id last: the response
		 * direction reads the id first and trusts the rest once it changed (x86 keeps stores in order). */
		c->ex.start_ns = rq->start_ns;
		c->ex.method = method;
		barrier();
		c->ex.id = id;
	} else if (r == PARSE_BAD) {
		rq->state = HTTP_RQ_NOT_HTTP;
		count(HTTP_C_NOT_HTTP);
	} else {
		rq->state = HTTP_RQ_PFX;
	}
}

/*
 * A payload packet in the response direction: the start of the current request's response, the rest of its
 * status line, or its body. Reads the hand-over (the other CPU's line, once per exchange); writes only its own.
 */
static __always_inline void response_packet(struct __sk_buff *skb, struct http_conn *c, __u32 off, __u32 len,
					    int egress)
{
	struct http_resp_side *rs = &c->resp;
	__u64 stack[HTTP_PREFIX / 8];
	const __u8 *p;
	__u16 status = 0;
	__u64 start;
	__u32 id, n;
	int r;

	rs->unflushed += len;
	if (rs->unflushed >= 65536)
		flush_bytes(c, 0, &rs->unflushed, 0);
	/* No request handed over yet (none, its line in pieces, or not HTTP), or answered: this is its body. */
	id = *(volatile __u32 *)&c->ex.id;
	if (id == 0 || id == rs->done_id)
		return;
	barrier();
	/* The response's start: this packet's time, or kept from the packet that began an incomplete status line. */
	if (rs->pfx_id != id) {
		start = line_time(skb, egress);
		rs->pfx_len = 0;
	} else {
		start = rs->start_ns;
	}
	p = prefix(skb, off, len, (__u8 *)stack, rs->pfx, &rs->pfx_len, &n);
	r = n == HTTP_PREFIX ? parse_status_prefix(p, &status) : parse_status(p, n, &status);
	if (r == PARSE_MORE) {
		rs->pfx_id = id;
		rs->start_ns = start;
		return;
	}
	if (r == PARSE_BAD) {
		count(HTTP_C_UNPARSED_STATUS);
		status = 0;
	}
	record(c, c->ex.method, c->ex.start_ns, status, start);
	rs->done_id = id;
}

static __always_inline int handle(struct __sk_buff *skb, int egress)
{
	struct bpf_sock *sk = skb->sk;
	struct http_conn *c;
	struct l4_pair_value *t;
	struct tcphdr *th;
	__u32 ip_len, off;

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
	/* Header lengths and the ack number by direct packet access (the headers are in the linear part). */
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
		th = data + ip_len;
		if ((void *)(th + 1) > end)
			return 1;
	}
	off = ip_len + th->doff * 4;
	/* Pure ACKs and other packets without payload change nothing. */
	if (skb->len <= off)
		return 1;
	if ((c->role == HTTP_ROLE_CLIENT) == (egress != 0))
		request_packet(skb, sk, c, off, skb->len - off, bpf_ntohl(th->ack_seq), egress);
	else
		response_packet(skb, c, off, skb->len - off, egress);
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
	struct http_req_side *rq;
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
		/* Without its request side the connection is counted (TCP metrics) but its requests are not. */
		bpf_sk_storage_get(&http_reqs, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
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
		if (!t)
			return 1;
		t->closed += 1;
		rq = bpf_sk_storage_get(&http_reqs, sk, 0, 0);
		if (rq)
			flush_bytes(c, t, &rq->unflushed, 1);
		flush_bytes(c, t, &c->resp.unflushed, 0);
		break;
	}
	}
	return 1;
}
