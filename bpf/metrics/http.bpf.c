// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * HTTP/1.x golden signals and TCP metrics for the sockets of a cgroup subtree, aggregated in the kernel.
 *
 * sockops marks each established TCP connection (client or server side) with per-socket state. cgroup_skb
 * egress and ingress see its packets: a connection alternates request, response, request, …; the first bytes
 * of a request give the method, the first bytes of its response the status, and their times the duration.
 * Bytes are collected across segments and writes until the line can be read, so requests written in small
 * pieces still count. Streams that do not start like HTTP/1.x are marked and ignored. A connection whose two
 * ends are both measured here is measured once, at the server's socket, for both sides (http.h, enum http_pair).
 * User space reads per-CPU aggregates; no per-request event leaves the kernel.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "bpf_consts.h"
#include "http.h"
#include "http_parse.h"

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
 * are handed out by the programs from http_cells_used, from 1: cell 0 means no series (counted in http_overflow).
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

/* What found no series of its own (http_requests or http_cells full), per direction (enum http_dir). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct http_value);
} http_overflow SEC(".maps");

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

/* Client connections waiting for their server's socket to join (see enum http_pair in http.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct http_pending_key);
	__type(value, struct http_pending_value);
} http_pending SEC(".maps");

/* The addresses of the mesh's workloads and endpoints, written by user space (see struct http_peer_key). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct http_peer_key);
	__type(value, __u32);
} http_peers SEC(".maps");

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

/* The key user space inserts at load: what cannot get its own entry once a map is full is counted here. */
#define OVERFLOW_CGROUP 0xffffffffffffffffULL

static __always_inline void count(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&http_counters, &idx);

	if (v)
		*v += n;
}

/* The sides a socket measures: its own, and with HTTP_PAIR_SERVER its client's too. */
static __always_inline __u64 sides(const struct http_conn *c)
{
	return c->pair == HTTP_PAIR_SERVER ? 2 : 1;
}

/* One side of a connection, as the aggregation keys name it. */
struct side {
	__u64 cgroup_id;
	__u32 remote_ip[4];
	__u16 port; /* client: the server port dialled; server: the local port served */
	__u8 dir;   /* enum http_dir */
	__u8 family;
};

static __always_inline void set_side(struct side *s, __u64 cgroup_id, const __u32 *remote_ip, __u16 port, __u8 dir,
				     __u8 family)
{
	s->cgroup_id = cgroup_id;
	__builtin_memcpy(s->remote_ip, remote_ip, sizeof(s->remote_ip));
	s->port = port;
	s->dir = dir;
	s->family = family;
}

/* The socket's own side; a peer that is not known is named by the all-zero address ("unknown"). */
static __always_inline void own_side(const struct http_conn *c, struct side *s)
{
	int client = c->role == HTTP_ROLE_CLIENT;

	set_side(s, c->cgroup_id, c->remote_ip, client ? c->remote_port : c->local_port,
		 client ? HTTP_DIR_CLIENT : HTTP_DIR_SERVER, c->family);
	if (!(c->peers & HTTP_PEER_REMOTE))
		__builtin_memset(s->remote_ip, 0, sizeof(s->remote_ip));
}

/* A server socket's client, as the client's own socket would name itself: it dialled this address and port. */
static __always_inline void peer_side(const struct http_conn *c, struct side *s)
{
	set_side(s, c->peer_cgroup, c->local_ip, c->local_port, HTTP_DIR_CLIENT, c->family);
	if (!(c->peers & HTTP_PEER_LOCAL))
		__builtin_memset(s->remote_ip, 0, sizeof(s->remote_ip));
}

/* Whether series may name this address (see struct http_peer_key): once per connection, at its first packet. */
static __always_inline int peer_known(const __u32 *ip, __u8 family)
{
	struct http_peer_key k = {};

	__builtin_memcpy(k.ip, ip, sizeof(k.ip));
	k.family = family;
	if (bpf_map_lookup_elem(&http_peers, &k))
		return 1;
	__builtin_memset(&k, 0, sizeof(k));
	return bpf_map_lookup_elem(&http_peers, &k) != 0;
}

static __always_inline struct l4_pair_value *tcp_entry(const struct side *s)
{
	struct l4_pair_key key = {};
	struct l4_pair_value *t;

	key.cgroup_id = s->cgroup_id;
	__builtin_memcpy(key.remote_ip, s->remote_ip, sizeof(key.remote_ip));
	key.port = s->port;
	key.dir = s->dir;
	key.family = s->family;
	t = bpf_map_lookup_elem(&tcp_stats, &key);
	if (t)
		return t;
	/* Zero and the overflow key are built only on a miss. EEXIST (another CPU created it meanwhile) is fine;
	 * E2BIG (full) leaves the lookup empty and the connection goes to the overflow entry. */
	{
		struct l4_pair_key over = { .cgroup_id = OVERFLOW_CGROUP };
		struct l4_pair_value zero = {};

		bpf_map_update_elem(&tcp_stats, &key, &zero, BPF_NOEXIST);
		t = bpf_map_lookup_elem(&tcp_stats, &key);
		if (t)
			return t;
		count(HTTP_C_TCP_OVERFLOW, 1);
		return bpf_map_lookup_elem(&tcp_stats, &over);
	}
}

/*
 * Adds one direction's bytes counted since its last flush (*n) to tcp_stats: the socket's own side and, for a
 * server socket that measures both, its client's. Each direction flushes only its own counter: the other one is
 * written on another CPU.
 */
static __always_inline void add_bytes(const struct side *s, __u32 n, int sent)
{
	struct l4_pair_value *t = tcp_entry(s);

	if (!t)
		return;
	if (sent)
		t->bytes_sent += n;
	else
		t->bytes_received += n;
}

static __always_inline void flush_bytes(struct http_conn *c, __u32 *n, int request_dir)
{
	/* Requests go from the client to the server. */
	int sent = (c->role == HTTP_ROLE_CLIENT) == (request_dir != 0);
	struct side s;

	own_side(c, &s);
	add_bytes(&s, *n, sent);
	if (c->pair == HTTP_PAIR_SERVER || c->pair == HTTP_PAIR_H2_BOTH) {
		peer_side(c, &s);
		add_bytes(&s, *n, !sent);
	}
	*n = 0;
}

/* The cell of a series: its own, a new one, or 0 when no cell or key is left (the exchange goes to http_overflow). */
static __always_inline __u32 series_cell(const struct side *s, __u8 method, __u16 status)
{
	struct http_key key = {};
	__u32 zero = 0, *p, *used, cell;

	key.cgroup_id = s->cgroup_id;
	__builtin_memcpy(key.remote_ip, s->remote_ip, sizeof(key.remote_ip));
	key.port = s->port;
	key.status = status;
	key.dir = s->dir;
	key.method = method;
	key.family = s->family;
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

/*
 * Counts one exchange for one side. *cell and *tag remember the side's last series, so the next response with
 * the same method and status skips the hash (the epoch is checked by the caller, once for both sides).
 */
static __always_inline void record(const struct http_conn *c, int peer, __u32 *cell, __u32 *tag, __u8 method,
				   __u16 status, __u64 d, int fresh)
{
	__u32 t = method | (__u32)status << 8 | 1U << 31, b = http_bucket_of(d);
	struct http_value *v;

	if (fresh || *tag != t) {
		/* The side's name only for the hash: a response like the last one does not build it. */
		struct side s;

		if (peer)
			peer_side(c, &s);
		else
			own_side(c, &s);
		*cell = series_cell(&s, method, status);
		*tag = t;
	}
	if (*cell == 0) {
		__u32 dir = peer || c->role == HTTP_ROLE_CLIENT ? HTTP_DIR_CLIENT : HTTP_DIR_SERVER;

		count(HTTP_C_HTTP_OVERFLOW, 1);
		v = bpf_map_lookup_elem(&http_overflow, &dir);
	} else {
		/* The key from the stack: a global function's (upgrade_packet) socket state is plain memory to the
		 * verifier, which Linux 6.1 does not take as a map key. */
		__u32 k = *cell;

		v = bpf_map_lookup_elem(&http_cells, &k);
	}
	if (!v)
		return;
	v->count += 1;
	v->sum_ns += d;
	v->buckets[b < HTTP_BUCKETS ? b : HTTP_BOUNDS] += 1;
}

/* Counts an exchange for the socket's own side and, with `both`, its client's (HTTP_PAIR_SERVER). */
static __always_inline void record_exchange(struct http_conn *c, __u8 method, __u64 req_start, __u16 status,
					    __u64 resp_start, int both)
{
	struct http_resp_side *rs = &c->resp;
	/* A paced packet's departure time can be slightly ahead of the receive side's clock: no negative durations. */
	__u64 d = resp_start > req_start ? resp_start - req_start : 0;
	/* Cells remembered under another load's maps do not count (see cell_epoch). */
	int fresh = rs->cell_epoch != cell_epoch;

	rs->cell_epoch = cell_epoch;
	record(c, 0, &rs->cell, &rs->cell_tag, method, status, d, fresh);
	if (both)
		record(c, 1, &rs->peer_cell, &rs->peer_cell_tag, method, status, d, fresh);
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

/* a is after b in sequence space. */
static __always_inline int seq_after(__u32 a, __u32 b)
{
	return (__s32)(a - b) > 0;
}

/* ---- HTTP/2 (see struct h2_record in http.h) ---- */

/* Per socket, only for connections that carried the HTTP/2 preface (or whose server spoke first with SETTINGS). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct h2_conn);
} h2_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, H2_RINGBUF_SIZE);
} h2_events SEC(".maps");

/*
 * A packet's record is put together here, then copied into the ring in one bpf_ringbuf_output of its own size
 * (a reservation's size must be a constant). Per CPU, one buffer per nesting level: a program run in process
 * context (a send) can be interrupted by one in softirq context on the same CPU (a receive, or a send that an
 * incoming ACK released), never deeper; h2_depth says how many runs use the CPU's buffers now.
 */
#define H2_SCRATCH (2 * H2_RECORD_MAX)

/* The entry's bookkeeping lives here too, not in the walk's context on the stack: the verifier follows values in
 * map memory as unknowns, so the frame walk's callback is verified once, not once per length it could reach. */
struct h2_scratch {
	__u32 base;    /* where this packet's record starts in buf (after a held one) */
	__u32 pos;     /* the entry's length so far */
	__u16 frames;  /* the record's items */
	__u8 holdable; /* the record's items are all header blocks that end no stream (see H2_HOLD) */
	__u8 ident;    /* buf starts with the connection's identity (H2_REC_CONN), before base */
	__u8 pad[4];
	__u8 buf[H2_SCRATCH];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct h2_scratch);
} h2_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} h2_depth SEC(".maps");

/*
 * Records are submitted without waking the consumer, which drains the ring on a timer (its thread's pollMs, 20 ms),
 * until this many more bytes wait: then the submit wakes it. A wake-up per record cost more than everything else
 * per request (bench:metrics, docs/metrics.md). Set at load to a quarter of the ring: more than the timer lets
 * gather under h2load (~200 KiB in 20 ms), so the timer drains it and a wake-up is for bursts; the other three
 * quarters are room for what arrives before the woken consumer runs.
 */
const volatile __u32 h2_wakeup_bytes = H2_RINGBUF_SIZE / 4;

/*
 * The submit flag for a record of `size` bytes: a wake-up only for the record whose bytes reach the next multiple
 * of h2_wakeup_bytes waiting, not for every record while they wait. A wake-up is the kernel's irq_work, a
 * self-interrupt (on this VM an APIC write that traps, ~20 µs): asked for by each record until the woken thread
 * ran, with a 32nd of the ring, wake-ups were 11-14 % of the programs' time under h2load (perf). Two CPUs
 * submitting at once may both miss a crossing: the next one, or the consumer's timer, drains the ring.
 */
static __always_inline __u64 h2_wakeup(__u32 size)
{
	__u64 avail = bpf_ringbuf_query(&h2_events, BPF_RB_AVAIL_DATA), every = h2_wakeup_bytes;

	/* Each record's 8-byte ring header counts in what waits. */
	if (!every || avail / every == (avail + size + 8) / every)
		return BPF_RB_NO_WAKEUP;
	count(HTTP_C_H2_WAKEUPS, 1);
	return BPF_RB_FORCE_WAKEUP;
}

/* Frame types (RFC 9113 §6) and flags the programs look at. */
#define H2_DATA 0
#define H2_HEADERS 1
#define H2_RST_STREAM 3
#define H2_SETTINGS 4
#define H2_PUSH_PROMISE 5
#define H2_GOAWAY 7
#define H2_CONTINUATION 9
#define H2_END_STREAM 1
#define H2_ACK 1

/*
 * A payload packet as the HTTP/2 functions get it, in two words (subprograms take five arguments at most, and a
 * struct on the caller's stack would count against the 512 bytes all frames share, bpf_loop's callback included):
 * ol = the payload's offset << 32 | its length; se = egress << 32 | the sequence number of its first byte.
 */
#define H2_OL(off, len) ((__u64)(off) << 32 | (__u32)(len))
#define H2_SE(seq, egress) ((__u64)((egress) != 0) << 32 | (__u32)(seq))

/* bpf_loop's context while walking one packet's frames. */
struct h2_walk {
	struct __sk_buff *skb;
	struct http_conn *c;
	struct h2_dir *d;
	__u32 off;    /* the payload's offset in the packet */
	__u32 len;    /* its length */
	__u32 seq;    /* the sequence number of its first byte */
	__u32 o;      /* where the next frame header starts, from off */
	struct h2_scratch *s; /* the ring entry being put together: a held record, then this packet's */
	__u64 cookie; /* the socket's (h2_conn keeps it: one helper call per connection, not per record) */
	__u8 flags;   /* H2_F_* of the records */
	__u8 lost;    /* set when the walk gave up */
	__u8 egress;
};

/* The record's fixed part: which direction, when. */
static __always_inline void h2_fill(struct h2_record *r, struct h2_dir *d, __u8 flags, __u64 ts, __u8 kind, __u64 cookie)
{
	r->cookie = cookie;
	r->ts_ns = ts;
	r->seq = d ? d->seq++ : 0;
	r->length = 0;
	r->frames = 0;
	r->kind = kind;
	r->flags = flags;
	r->method = 0;
	__builtin_memset(r->pad, 0, sizeof(r->pad));
}

/* The connection's identity (H2_IDENT_RECORD bytes at r): who its records are about, sent once per direction. */
static __always_inline void h2_ident(struct h2_record *r, const struct http_conn *c, __u64 cookie)
{
	struct h2_ident *id = (struct h2_ident *)(r + 1);
	/* A paired server socket (HTTP_PAIR_SERVER before the preface arrives: its SETTINGS often go out first). */
	int paired = c->pair == HTTP_PAIR_H2_BOTH || c->pair == HTTP_PAIR_SERVER;

	h2_fill(r, 0, 0, 0, H2_REC_CONN, cookie);
	r->length = sizeof(*id);
	id->cgroup_id = c->cgroup_id;
	id->peer_cgroup = paired ? c->peer_cgroup : 0;
	if (c->peers & HTTP_PEER_REMOTE)
		__builtin_memcpy(id->remote_ip, c->remote_ip, sizeof(id->remote_ip));
	else
		__builtin_memset(id->remote_ip, 0, sizeof(id->remote_ip));
	if (c->peers & HTTP_PEER_LOCAL)
		__builtin_memcpy(id->local_ip, c->local_ip, sizeof(id->local_ip));
	else
		__builtin_memset(id->local_ip, 0, sizeof(id->local_ip));
	id->remote_port = c->remote_port;
	id->local_port = c->local_port;
	id->family = c->family;
	id->flags = (c->role == HTTP_ROLE_SERVER ? H2_F_SERVER : 0) | (paired ? H2_F_PAIRED : 0);
	id->pad[0] = id->pad[1] = 0;
}

/* Payload bytes [1, max] for bpf_skb_load_bytes, in a form every verifier follows (see collect in http_parse.h). */
#define H2_BOUND(n, max) ((((n) - 1) & ((max) - 1)) + 1)

/*
 * The record put together so far (its items), numbered in its direction, to the ring after the held one it follows
 * (if any); with `hold` (the packet's last record) held back instead when it may be (see H2_HOLD). The next
 * record starts empty.
 */
static __always_inline void h2_flush(struct h2_walk *w, struct h2_conn *h, int hold)
{
	struct h2_scratch *x = w->s;
	__u32 base = x->base & (H2_RECORD_MAX - 1), size = x->pos;
	struct h2_record *r = (struct h2_record *)(x->buf + base);
	__u16 frames = x->frames;

	/* Nothing, or only the identity: it waits for the direction's first record. */
	if (!frames && (!base || x->ident))
		return;
	if (frames) {
		h2_fill(r, w->d, w->flags, line_time(w->skb, w->egress), H2_REC_FRAME, w->cookie);
		r->length = size - base - sizeof(*r);
		r->frames = frames;
	} else {
		size = base; /* only the held record */
	}
	/* Held only once the direction's identity is out: a held record goes first in its entry. */
	if (hold && x->holdable && frames && !base && size <= H2_HOLD && h && (w->flags & H2_F_RESPONSE) && w->d->ident) {
		__builtin_memcpy(h->hold, x->buf, H2_HOLD);
		h->hold_len = size;
	} else {
		if (size > H2_RECORD_MAX)
			size = H2_RECORD_MAX;
		asm volatile("" : "+r"(size));
		/* The sequence numbers moved all the same: when the ring is full, user space sees the gap. */
		if (bpf_ringbuf_output(&h2_events, x->buf, H2_BOUND(size, H2_RECORD_MAX), h2_wakeup(size)))
			count(HTTP_C_H2_DROPS, 1);
		else if (x->ident)
			w->d->ident = 1; /* else the direction's next entry carries it again */
	}
	x->ident = 0;
	x->base = 0;
	x->pos = sizeof(*r);
	x->frames = 0;
	x->holdable = 1;
}

/* A held record to the ring on its own (before a record that does not go through a walk: lost, closed). */
static __always_inline void h2_release(struct h2_conn *h)
{
	__u32 n;

	if (!h || !h->hold_len)
		return;
	n = h->hold_len;
	h->hold_len = 0;
	if (n > H2_HOLD)
		n = H2_HOLD;
	asm volatile("" : "+r"(n));
	if (bpf_ringbuf_output(&h2_events, h->hold, n, h2_wakeup(n)))
		count(HTTP_C_H2_DROPS, 1);
}

/* A frame for user space: its header and the part of its payload in this packet (up to H2_MAX_PAYLOAD; none for
 * DATA), added to the packet's record. */
static __always_inline void h2_add(struct h2_walk *w, const __u8 *h, __u32 at, __u32 flen)
{
	__u32 n = flen, avail = at < w->len ? w->len - at : 0, pos;
	struct h2_scratch *x = w->s;
	struct h2_item *it;

	if (n > avail)
		n = avail;
	if (n > H2_MAX_PAYLOAD)
		n = H2_MAX_PAYLOAD;
	if (x->pos + sizeof(*it) + n > H2_RECORD_MAX)
		h2_flush(w, 0, 0);
	if ((h[3] != H2_HEADERS && h[3] != H2_CONTINUATION) || (h[4] & H2_END_STREAM))
		x->holdable = 0;
	/* For the verifier: the offset and the length within the buffer, by masks it follows (H2_SCRATCH is twice
	 * H2_RECORD_MAX). */
	pos = x->pos & (H2_RECORD_MAX - 1);
	it = (struct h2_item *)(x->buf + pos);
	__builtin_memcpy(it->frame, h, H2_FRAME_HEADER);
	it->pad = 0;
	pos = (pos + sizeof(*it)) & (H2_RECORD_MAX - 1);
	asm volatile("" : "+r"(n));
	if (n && bpf_skb_load_bytes(w->skb, w->off + at, x->buf + pos, H2_BOUND(n, H2_MAX_PAYLOAD)))
		n = 0;
	it->captured = n;
	x->pos += sizeof(*it) + n;
	x->frames++;
}

/* One frame header of the packet (bpf_loop's callback): read it (or its rest), send the frame if it carries
 * what user space needs, move past its payload. 1 ends the walk. */
static long h2_step(__u32 i, void *ctx)
{
	struct h2_walk *w = ctx;
	struct h2_dir *d = w->d;
	__u32 o = w->o, flen;
	__u8 type, fl;

	if (o >= w->len)
		return 1;
	if (d->have || w->len - o < H2_FRAME_HEADER) {
		/* A frame header split across packets: collected byte by byte (at most 8 bytes per side of a split). */
		for (int k = 0; k < H2_FRAME_HEADER; k++) {
			__u32 have = d->have;
			__u8 b;

			if (o >= w->len)
				break;
			/* For the verifier: the index checked is the register that indexes. */
			asm volatile("" : "+r"(have));
			if (have >= H2_FRAME_HEADER)
				break;
			if (bpf_skb_load_bytes(w->skb, w->off + o, &b, 1)) {
				w->lost = 1;
				return 1;
			}
			d->hdr[have] = b;
			d->have = have + 1;
			o++;
		}
		if (d->have < H2_FRAME_HEADER) {
			w->o = o;
			return 1;
		}
		d->have = 0;
	} else {
		/* Read into the direction's state, not the stack (see H2_OL). */
		if (bpf_skb_load_bytes(w->skb, w->off + o, d->hdr, H2_FRAME_HEADER)) {
			w->lost = 1;
			return 1;
		}
		o += H2_FRAME_HEADER;
	}
	flen = (__u32)d->hdr[0] << 16 | (__u32)d->hdr[1] << 8 | d->hdr[2];
	type = d->hdr[3];
	fl = d->hdr[4];
	/* What user space reads: header blocks (HPACK needs every one), SETTINGS (table sizes), resets, the server's
	 * GOAWAY, and where a response ends (a client's GOAWAY and its DATA end no stream it counts). */
	if (type == H2_HEADERS || type == H2_CONTINUATION || type == H2_PUSH_PROMISE || type == H2_RST_STREAM ||
	    (type == H2_SETTINGS && !(fl & H2_ACK)) ||
	    ((w->flags & H2_F_RESPONSE) && (type == H2_GOAWAY || (type == H2_DATA && (fl & H2_END_STREAM)))))
		h2_add(w, d->hdr, o, type == H2_DATA ? 0 : flen);
	d->next = w->seq + o + flen;
	w->o = o + flen;
	return w->o >= w->len;
}

/* A direction lost for good: user space is told (after the record held back, if any), and its later frames are
 * not followed. */
static __always_inline void h2_lose(struct h2_walk *w, struct h2_conn *h)
{
	struct h2_record *r;

	if (w->flags & H2_F_RESPONSE)
		h2_release(h);
	w->d->state = H2_DIR_LOST;
	count(HTTP_C_H2_LOST, 1);
	r = bpf_ringbuf_reserve(&h2_events, sizeof(*r), 0);
	if (!r) {
		w->d->seq++;
		count(HTTP_C_H2_DROPS, 1);
		return;
	}
	h2_fill(r, w->d, w->flags, line_time(w->skb, w->egress), H2_REC_LOST, w->cookie);
	bpf_ringbuf_submit(r, h2_wakeup(sizeof(*r)));
}

/*
 * A payload packet of an HTTP/2 direction: the frame headers that start in it (and the rest of one split at the
 * previous packet's end). Bytes before the next expected one (retransmissions) are skipped; bytes after it mean
 * the walk lost its place.
 */
static __always_inline int h2_packet(struct __sk_buff *skb, struct http_conn *c, struct h2_conn *h, __u64 ol, __u64 se)
{
	__u32 off = ol >> 32, len = (__u32)ol, seq = (__u32)se, pos, skip, zero = 0, level, *depth;
	int egress = se >> 32, response;
	struct h2_walk w = {};
	struct h2_dir *d;

	if (!c || !h)
		return 0;
	response = (c->role == HTTP_ROLE_CLIENT) != (egress != 0);
	d = &h->dir[response ? 1 : 0];
	if (d->state != H2_DIR_ON)
		return 0;
	pos = d->next + d->have;
	if (seq_after(seq, pos))
		skip = 0xffffffff; /* a gap: bytes the programs never saw */
	else
		skip = pos - seq;
	if (skip != 0xffffffff && skip >= len)
		return 0; /* within a frame's payload, or a retransmission */
	if (!h->cookie)
		h->cookie = bpf_get_socket_cookie(skb);
	w.skb = skb;
	w.c = c;
	w.d = d;
	w.cookie = h->cookie;
	w.egress = egress;
	w.flags = response ? H2_F_RESPONSE : 0;
	if (skip == 0xffffffff) {
		h2_lose(&w, h);
		return 0;
	}
	w.off = off;
	w.len = len;
	w.seq = seq;
	w.o = skip;
	depth = bpf_map_lookup_elem(&h2_depth, &zero);
	if (!depth)
		return 0;
	level = *depth;
	/* Deeper than a softirq run inside a process-context one cannot happen; were it to, the record would be lost. */
	w.s = level < 2 ? bpf_map_lookup_elem(&h2_scratch, &level) : 0;
	if (!w.s) {
		h2_lose(&w, h);
		return 0;
	}
	*depth = level + 1;
	w.s->base = 0;
	w.s->pos = sizeof(struct h2_record);
	w.s->frames = 0;
	w.s->holdable = 1;
	w.s->ident = 0;
	if (!d->ident) {
		/* The connection's identity first, in the entry of the direction's first record (see H2_REC_CONN). */
		h2_ident((struct h2_record *)w.s->buf, c, w.cookie);
		w.s->ident = 1;
		w.s->base = H2_IDENT_RECORD;
		w.s->pos = H2_IDENT_RECORD + sizeof(struct h2_record);
	} else if (response && h->hold_len) {
		/* A record held back goes first, in the same ring entry. */
		__u32 held = h->hold_len;

		__builtin_memcpy(w.s->buf, h->hold, H2_HOLD);
		h->hold_len = 0;
		if (held > H2_HOLD)
			held = H2_HOLD;
		w.s->base = held;
		w.s->pos = held + sizeof(struct h2_record);
	}
	bpf_loop(H2_MAX_FRAMES, h2_step, &w, 0);
	h2_flush(&w, h, !w.lost && w.o >= w.len);
	*depth = level;
	if (w.lost || w.o < w.len)
		h2_lose(&w, h);
	return 0;
}

/* The socket's HTTP/2 state, created on first use with each direction's first frame header's place (the request
 * direction's after the preface). A direction already followed (the response direction, when the server spoke
 * first) keeps its place. */
static __always_inline struct h2_conn *h2_state(struct bpf_sock *sk, const struct http_conn *c)
{
	struct h2_conn *h = bpf_sk_storage_get(&h2_conns, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	int client = c->role == HTTP_ROLE_CLIENT;

	if (!h)
		return 0;
	if (h->dir[0].state == H2_DIR_OFF) {
		h->dir[0].next = (client ? c->snd_seq : c->rcv_seq) + H2_PREFACE_LEN;
		h->dir[0].state = H2_DIR_ON;
	}
	if (h->dir[1].state == H2_DIR_OFF) {
		h->dir[1].next = client ? c->rcv_seq : c->snd_seq;
		h->dir[1].state = H2_DIR_ON;
	}
	return h;
}

/*
 * The request direction's first packet after an h2c upgrade (H2_DIR_PREFACE): the client's preface starts it,
 * and the direction's frames follow it (1: walk this packet). Anything else, and the direction is not followed
 * (user space never had a record of it).
 */
static __always_inline int h2_preface(struct __sk_buff *skb, struct h2_conn *h, __u64 ol, __u64 se)
{
	__u32 off = ol >> 32, len = (__u32)ol;
	__u8 b[8];

	if (len >= H2_PREFACE_LEN && !bpf_skb_load_bytes(skb, off, b, sizeof(b)) && b[0] == 'P' && b[1] == 'R' &&
	    b[2] == 'I' && b[3] == ' ' && b[4] == '*' && b[5] == ' ' && b[6] == 'H' && b[7] == 'T') {
		h->dir[0].next = (__u32)se + H2_PREFACE_LEN;
		h->dir[0].state = H2_DIR_ON;
		return 1;
	}
	h->dir[0].state = H2_DIR_LOST;
	count(HTTP_C_H2_LOST, 1);
	return 0;
}

/*
 * The frames of a packet of a connection with HTTP/2 state (h2_packet): called once, from handle(), after the
 * functions that decide what a packet is (h2_start, h2_early, upgrade_packet, h2_conn_packet) asked for it, so
 * it is verified once and its stack is not stacked on theirs. Global: the socket is the packet's.
 */
__noinline int h2_frames(struct __sk_buff *skb, struct http_conn *c, __u64 ol, __u64 se)
{
	struct bpf_sock *sk = skb->sk;
	struct h2_conn *h;

	if (!c || !sk)
		return 0;
	h = bpf_sk_storage_get(&h2_conns, sk, 0, 0);
	if (!h)
		return 0;
	/* The request direction's first packet after an h2c upgrade. */
	if (h->dir[0].state == H2_DIR_PREFACE && (c->role == HTTP_ROLE_CLIENT) == ((se >> 32) != 0) &&
	    !h2_preface(skb, h, ol, se))
		return 0;
	return h2_packet(skb, c, h, ol, se);
}

/*
 * The request a 101 answered, as a tunnel's first exchange: recorded once the 101 turned out not to be h2c. A
 * preface the client sent meanwhile (h2_start) made the connection HTTP/2 (H2_BOTH for a paired server socket):
 * its request direction is not followed any further.
 */
static __always_inline void upgrade_tunnel(struct bpf_sock *sk, struct http_conn *c)
{
	struct http_resp_side *rs = &c->resp;
	const struct http_req_info *info = &c->ex.req[rs->up_slot & 1];
	struct h2_conn *h;

	record_exchange(c, info->method, info->start_ns, 101, rs->start_ns,
			c->pair == HTTP_PAIR_SERVER || c->pair == HTTP_PAIR_H2_BOTH);
	rs->flags = (rs->flags & ~(HTTP_RS_UPGRADE | HTTP_RS_UPGRADE_AT)) | HTTP_RS_TUNNEL;
	h = bpf_sk_storage_get(&h2_conns, sk, 0, 0);
	if (h)
		h->dir[0].state = H2_DIR_LOST;
}

/*
 * A response-direction packet after a 101 (HTTP_RS_UPGRADE): the rest of its header block, then the first bytes
 * after it. An HTTP/2 server answering "Upgrade: h2c" sends its SETTINGS first (RFC 9113 §3.2): then the
 * connection is HTTP/2 from that byte on, the upgrade request is stream 1 (user space gets its method and start
 * in an H2_REC_UPGRADE record, its answer as HTTP/2 frames on stream 1), and the client's preface, next in the
 * request direction, starts that direction's frames. Anything else: a tunnel (WebSocket, …), the 101 recorded.
 * 1: the packet's frames are to be followed (h2_frames).
 * Rare, so out of line, and global: verified once, not at each call (the socket is the packet's).
 */
__noinline int upgrade_packet(struct __sk_buff *skb, struct http_conn *c, __u64 ol, __u64 se)
{
	__u32 off = ol >> 32, len = (__u32)ol, seq = (__u32)se, skip;
	struct bpf_sock *sk = skb->sk;
	struct http_resp_side *rs;
	const struct http_req_info *info;
	struct h2_record *r;
	struct h2_conn *h;
	__u8 b[H2_FRAME_HEADER];

	if (!c || !sk)
		return 0;
	rs = &c->resp;
	if (!(rs->flags & HTTP_RS_UPGRADE_AT)) {
		int e = skip_header_block(skb, off, len, &rs->crlf);

		if (e < 0)
			return 0; /* the header block goes on in the next packet */
		rs->flags |= HTTP_RS_UPGRADE_AT;
		rs->start_seq = seq + e;
		if ((__u32)e >= len)
			return 0;
		off += e;
		len -= e;
		seq += e;
	}
	if (seq_after(seq, rs->start_seq)) {
		upgrade_tunnel(sk, c); /* bytes after the block were missed: not followed */
		return 0;
	}
	skip = rs->start_seq - seq;
	if (skip >= len)
		return 0; /* a retransmission */
	off += skip;
	len -= skip;
	seq += skip;
	if (len < H2_FRAME_HEADER || bpf_skb_load_bytes(skb, off, b, H2_FRAME_HEADER) || b[3] != H2_SETTINGS || b[4] != 0 ||
	    (b[5] | b[6] | b[7] | b[8]) != 0) {
		upgrade_tunnel(sk, c);
		return 0;
	}
	h = bpf_sk_storage_get(&h2_conns, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!h) {
		upgrade_tunnel(sk, c);
		return 0;
	}
	rs->flags &= ~(HTTP_RS_UPGRADE | HTTP_RS_UPGRADE_AT);
	if (c->pair < HTTP_PAIR_H2) {
		count(HTTP_C_HTTP2, sides(c));
		c->pair = c->pair == HTTP_PAIR_SERVER ? HTTP_PAIR_H2_BOTH : HTTP_PAIR_H2;
	}
	if (h->dir[0].state == H2_DIR_OFF)
		h->dir[0].state = H2_DIR_PREFACE;
	h->dir[1].next = seq;
	h->dir[1].state = H2_DIR_ON;
	info = &c->ex.req[rs->up_slot & 1];
	/* The identity, then the upgrade record: the response direction's first entry. */
	r = bpf_ringbuf_reserve(&h2_events, H2_IDENT_RECORD + sizeof(*r), 0);
	if (r) {
		__u64 cookie = bpf_get_socket_cookie(skb);
		struct h2_record *u = (struct h2_record *)((__u8 *)r + H2_IDENT_RECORD);

		h2_ident(r, c, cookie);
		h2_fill(u, &h->dir[1], H2_F_RESPONSE, info->start_ns, H2_REC_UPGRADE, cookie);
		u->method = info->method;
		h->dir[1].ident = 1;
		bpf_ringbuf_submit(r, h2_wakeup(H2_IDENT_RECORD + sizeof(*r)));
	} else {
		h->dir[1].seq++; /* user space sees the gap */
		count(HTTP_C_H2_DROPS, 1);
	}
	return 1; /* its frames, from seq on (dir[1].next) */
}

/* The request direction carried the preface: HTTP/2 from here on, this packet included (1: h2_frames). */
static __noinline int h2_start(struct __sk_buff *skb, struct bpf_sock *sk, struct http_conn *c, __u64 ol, __u64 se)
{
	struct h2_conn *h;

	if (!c)
		return 0;
	c->pair = c->pair == HTTP_PAIR_SERVER ? HTTP_PAIR_H2_BOTH : HTTP_PAIR_H2;
	/* After a 101 still being decided (the client's preface came before the server's SETTINGS): the request
	 * direction's frames start after this preface; upgrade_packet decides the response direction. */
	if (c->resp.flags & HTTP_RS_UPGRADE) {
		h = bpf_sk_storage_get(&h2_conns, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!h || h->dir[0].state != H2_DIR_OFF)
			return 0;
		h->dir[0].state = H2_DIR_PREFACE; /* h2_frames checks the preface */
	} else {
		/* Followed only when the preface starts the stream in one packet: with a preface in pieces where the
		 * other direction's frames begin is not known here, so the connection is counted only. */
		if ((__u32)se != (c->role == HTTP_ROLE_CLIENT ? c->snd_seq : c->rcv_seq))
			return 0;
		h = h2_state(sk, c);
	}
	return h != 0;
}

/*
 * The response direction before any request: an HTTP/2 server sends its SETTINGS without waiting for the
 * client's preface, so a stream whose first bytes are a SETTINGS frame header on stream 0 is followed from its
 * first byte (otherwise the frame lengths after it would be unknown once the preface arrives). Anything else
 * marks the response side, which then skips this check.
 */
static __noinline int h2_early(struct __sk_buff *skb, struct bpf_sock *sk, struct http_conn *c, __u64 ol, __u64 se)
{
	__u32 off = ol >> 32, len = (__u32)ol, seq = (__u32)se;
	int egress = se >> 32;
	struct h2_conn *h;

	if (!c)
		return 0;
	h = bpf_sk_storage_get(&h2_conns, sk, 0, 0);
	if (!h) {
		__u8 b[H2_FRAME_HEADER];

		if (seq != (egress ? c->snd_seq : c->rcv_seq) || len < H2_FRAME_HEADER ||
		    bpf_skb_load_bytes(skb, off, b, H2_FRAME_HEADER) || b[3] != H2_SETTINGS || b[4] != 0 ||
		    (b[5] | b[6] | b[7] | b[8]) != 0) {
			c->resp.flags |= HTTP_RS_NOT_H2;
			return 0;
		}
		h = bpf_sk_storage_get(&h2_conns, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!h)
			return 0;
		h->dir[1].next = seq;
		h->dir[1].state = H2_DIR_ON;
	}
	/* Not HTTP/2 yet: the response direction's place in the stream is followed; its SETTINGS are sent. */
	return 1;
}

/* An HTTP/2 connection's packet: bytes counted as for HTTP/1 (1: its frames are followed, h2_frames). */
static __noinline int h2_conn_packet(struct __sk_buff *skb, struct bpf_sock *sk, struct http_conn *c, __u64 ol, __u64 se)
{
	__u32 len = (__u32)ol;
	int request;

	if (!c)
		return 0;
	request = (c->role == HTTP_ROLE_CLIENT) == ((se >> 32) != 0);
	if (request) {
		struct http_req_side *rq = bpf_sk_storage_get(&http_reqs, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

		if (rq) {
			rq->unflushed += len;
			if (rq->unflushed >= 65536)
				flush_bytes(c, &rq->unflushed, 1);
		}
	} else {
		c->resp.unflushed += len;
		if (c->resp.unflushed >= 65536)
			flush_bytes(c, &c->resp.unflushed, 0);
	}
	return 1;
}

/*
 * A payload packet in the request direction: a new request, the rest of a request line, or a request's body.
 * `ack` is the packet's ack number: it moves once response bytes arrived, so a packet whose ack differs from
 * the current request's first packet's starts the next request (HTTP/1.x clients send it after the answer).
 * Not always: after an interim response ("Expect: 100-continue", then 100 Continue) or an early final one, the
 * rest of the request's body follows a moved ack. So on a connection that has carried a request, bytes after a
 * moved ack that are not a request line are the current request's body; only a connection's first bytes decide
 * that it is not HTTP.
 */
static __always_inline int request_packet(struct __sk_buff *skb, struct bpf_sock *sk, struct http_conn *c, __u32 off,
					  __u32 len, __u32 ack, int egress)
{
	/* Created here for a client socket (a server's has it from the handshake): a client whose server's socket
	 * measures both sides never needs one. */
	struct http_req_side *rq = bpf_sk_storage_get(&http_reqs, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	__u64 stack[HTTP_PREFIX / 8];
	const __u8 *p;
	__u8 method = 0;
	__u32 n, id;
	int r;

	if (!rq)
		return 0;
	rq->unflushed += len;
	if (rq->unflushed >= 65536)
		flush_bytes(c, &rq->unflushed, 1);
	if (rq->state == HTTP_RQ_NOT_HTTP)
		return 0;
	if (rq->state == HTTP_RQ_NONE || ack != rq->ack) {
		rq->start_ns = line_time(skb, egress);
		rq->ack = ack;
		rq->pfx_len = 0;
	} else if (rq->state == HTTP_RQ_LINE) {
		return 0; /* not answered yet: the current request's body */
	}
	p = prefix(skb, off, len, (__u8 *)stack, rq->pfx, &rq->pfx_len, &n);
	r = n == HTTP_PREFIX ? parse_method_prefix(p, &method) : parse_method(p, n, &method);
	if (r == PARSE_OK) {
		struct http_req_info *info;

		id = rq->id + 1 ? rq->id + 1 : 1; /* 0 means "none" to the response direction */
		rq->id = id;
		rq->state = HTTP_RQ_LINE;
		/* Stores only (a load would take the line back from the other CPU), the id last: the response
		 * direction reads the id first and trusts the rest once it changed (x86 keeps stores in order). */
		info = &c->ex.req[id & 1];
		info->start_ns = rq->start_ns;
		info->method = method;
		barrier();
		c->ex.id = id;
	} else if (r == PARSE_H2) {
		/* HTTP/2 with prior knowledge: not HTTP/1.x from here on; the caller hands the packet to h2_start. */
		rq->state = HTTP_RQ_NOT_HTTP;
		count(HTTP_C_HTTP2, sides(c));
		return 1;
	} else if (r == PARSE_BAD && rq->id) {
		rq->state = HTTP_RQ_LINE;
	} else if (r == PARSE_BAD) {
		rq->state = HTTP_RQ_NOT_HTTP;
		count(HTTP_C_NOT_HTTP, sides(c));
	} else {
		rq->state = HTTP_RQ_PFX;
	}
	return 0;
}

/* A status line as read from a packet: the parse's result, and for PARSE_OK its code, time and place. */
struct status_line {
	__u64 start;  /* the time of its first byte; 0 when that is this packet's (read it only when needed) */
	__u32 seq;    /* the sequence number of its first byte */
	__u16 status;
	__u8 r;       /* PARSE_*; PARSE_MORE: the packet ended first */
	__u8 egress;
	/* For after_interim: the rest of the packet, from the interim response's start. */
	__u32 off;
	__u32 len;
};

/*
 * The status line that starts at off, or the rest of one collected from earlier packets: the collection's
 * bookkeeping in rs (HTTP_RS_COLLECT).
 */
static __always_inline void read_status(struct __sk_buff *skb, struct http_resp_side *rs, __u32 off, __u32 len,
					__u32 seq, int egress, struct status_line *sl)
{
	__u64 stack[HTTP_PREFIX / 8];
	const __u8 *p;
	__u16 status = 0;
	__u32 n;
	int r;

	if (!(rs->flags & HTTP_RS_COLLECT))
		rs->pfx_len = 0;
	p = prefix(skb, off, len, (__u8 *)stack, rs->pfx, &rs->pfx_len, &n);
	r = n == HTTP_PREFIX ? parse_status_prefix(p, &status) : parse_status(p, n, &status);
	sl->r = r;
	sl->status = status;
	sl->start = 0;
	sl->seq = seq;
	if (r == PARSE_MORE) {
		if (!(rs->flags & HTTP_RS_COLLECT)) {
			rs->start_ns = line_time(skb, egress);
			rs->start_seq = seq;
			rs->flags |= HTTP_RS_COLLECT;
		}
		return;
	}
	if (rs->flags & HTTP_RS_COLLECT) {
		sl->start = rs->start_ns;
		sl->seq = rs->start_seq;
		rs->flags &= ~HTTP_RS_COLLECT;
	}
	/* An interim response (100 Continue, 103 Early Hints; 101 is final): the final status comes after it. */
	if (r == PARSE_OK && status >= 100 && status < 200 && status != 101) {
		rs->flags |= HTTP_RS_INTERIM;
		rs->crlf = 0;
	}
}

/*
 * The rest of a packet that began or continues an interim response: past its header block, the next status
 * line (after up to two more interim responses). Rare, so out of line: a function of its own, verified once.
 * Sets sl->r to PARSE_MORE when the packet ends before a final status line.
 */
__noinline int after_interim(struct __sk_buff *skb, struct http_resp_side *rs, struct status_line *sl)
{
	__u32 off, len, seq;
	int egress;

	if (!rs || !sl)
		return 0;
	off = sl->off;
	len = sl->len;
	seq = sl->seq;
	egress = sl->egress;
	sl->r = PARSE_MORE;
	for (int k = 0; k < 3; k++) {
		int e = skip_header_block(skb, off, len, &rs->crlf);

		if (e < 0 || (__u32)e >= len) {
			if (e >= 0)
				rs->flags &= ~HTTP_RS_INTERIM;
			return 0;
		}
		rs->flags &= ~HTTP_RS_INTERIM;
		off += e;
		len -= e;
		seq += e;
		read_status(skb, rs, off, len, seq, egress, sl);
		if (!(rs->flags & HTTP_RS_INTERIM))
			return 0;
	}
	sl->r = PARSE_MORE;
	return 0;
}

/*
 * A payload packet in the response direction: a response's first bytes, the rest of its status line, or a body.
 * Reads the hand-over (the other CPU's line, once per exchange); writes only its own.
 *
 * Each final status line at the start of a packet answers one request: the oldest handed over and not answered
 * (the two last are kept), or, when none waits, a request pipelined behind the last one answered (sent in the
 * same write, so with the same start; see docs/metrics.md). Every request handed over by then was sent before
 * this response began (a client sends its next request after it reads the answer), so none of them waits any
 * longer: a request body sent after an interim response whose bytes look like a request line is not a request.
 */
static __always_inline int response_packet(struct __sk_buff *skb, struct bpf_sock *sk, struct http_conn *c, __u32 off,
					   __u32 len, __u32 seq, int egress)
{
	struct http_resp_side *rs = &c->resp;
	const struct http_req_info *info;
	struct status_line sl;
	__u32 id, done, ans, skip;
	__u16 status;

	rs->unflushed += len;
	if (rs->unflushed >= 65536)
		flush_bytes(c, &rs->unflushed, 0);
	if (rs->flags & HTTP_RS_TUNNEL)
		return 0;
	if (rs->flags & HTTP_RS_UPGRADE)
		return upgrade_packet(skb, c, H2_OL(off, len), H2_SE(seq, egress));
	/* No request handed over yet (none, its line in pieces, or not HTTP). */
	id = *(volatile __u32 *)&c->ex.id;
	if (id == 0) {
		/* Before any request (rare for HTTP/1.x): maybe an HTTP/2 server's SETTINGS. */
		if (!(rs->flags & HTTP_RS_NOT_H2))
			return h2_early(skb, sk, c, H2_OL(off, len), H2_SE(seq, egress));
		return 0;
	}
	barrier();
	sl.off = off;
	sl.len = len;
	sl.seq = seq;
	sl.egress = egress;
	if (rs->flags & HTTP_RS_INTERIM) {
		after_interim(skb, rs, &sl);
	} else {
		read_status(skb, rs, off, len, seq, egress, &sl);
		if (rs->flags & HTTP_RS_INTERIM) {
			sl.seq = seq;
			after_interim(skb, rs, &sl);
		}
	}
	if (sl.r == PARSE_MORE)
		return 0;
	done = rs->done_id;
	status = sl.status;
	ans = id;
	if (id == done) {
		/* None waits: a body, or the answer to a request pipelined behind the last one answered, unless it is
		 * that answer again (a retransmission). */
		if (sl.r != PARSE_OK || !seq_after(sl.seq, rs->final_seq))
			return 0;
	} else {
		if (sl.r != PARSE_OK) {
			count(HTTP_C_UNPARSED_STATUS, sides(c));
			status = 0;
		}
		if (id - done >= 2)
			ans = id - 1;
	}
	info = &c->ex.req[ans & 1];
	rs->done_id = id;
	rs->final_seq = sl.seq;
	if (status == 101) {
		/* h2c or a tunnel: decided by the bytes after its header block (upgrade_packet), from its start. */
		rs->start_ns = sl.start ? sl.start : line_time(skb, egress);
		rs->up_slot = ans & 1;
		rs->crlf = 0;
		rs->flags |= HTTP_RS_UPGRADE;
		/* From the status line's first byte in this packet (its start, when collected from earlier ones). */
		skip = seq_after(seq, sl.seq) ? 0 : sl.seq - seq;
		return skip < len ? upgrade_packet(skb, c, H2_OL(off + skip, len - skip), H2_SE(seq + skip, egress)) : 0;
	}
	record_exchange(c, info->method, info->start_ns, status, sl.start ? sl.start : line_time(skb, egress),
			c->pair == HTTP_PAIR_SERVER);
	if (info->method == HTTP_M_CONNECT && status >= 200 && status < 300)
		rs->flags |= HTTP_RS_TUNNEL;
	return 0;
}

/* A client socket's connection as http_pending knows it. */
static __always_inline void pending_key(const struct http_conn *c, struct http_pending_key *k)
{
	__builtin_memcpy(k->client_ip, c->local_ip, sizeof(k->client_ip));
	__builtin_memcpy(k->server_ip, c->remote_ip, sizeof(k->server_ip));
	k->client_port = c->local_port;
	k->server_port = c->remote_port;
	k->client_seq = c->snd_seq;
	k->server_seq = c->rcv_seq;
	k->family = c->family;
}

/*
 * A client socket's first payload (either direction): whether its server's socket joined and measures both sides,
 * decided once. Until now the server's socket could join; from now on it cannot (the compare-and-swap orders
 * the two), so exactly one socket measures the client's side.
 */
static __always_inline void decide_pair(struct http_conn *c)
{
	struct http_pending_key k = {};
	struct http_pending_value *v;
	__u8 pair = HTTP_PAIR_NONE;

	pending_key(c, &k);
	v = bpf_map_lookup_elem(&http_pending, &k);
	if (v) {
		if (__sync_val_compare_and_swap(&v->state, HTTP_PEND_OPEN, HTTP_PEND_CLOSED) == HTTP_PEND_JOINED)
			pair = HTTP_PAIR_CLIENT;
		bpf_map_delete_elem(&http_pending, &k);
	}
	c->pair = pair;
}

static __always_inline int handle(struct __sk_buff *skb, int egress)
{
	struct bpf_sock *sk = skb->sk;
	struct http_conn *c;
	struct l4_pair_value *t;
	struct tcphdr *th;
	__u32 ip_len, off, seq;
	int walk = 0;

	if (!sk)
		return 1;
	/* Only sockops gives a socket this storage, and only an established TCP one: finding it says TCP. */
	c = bpf_sk_storage_get(&http_conns, sk, 0, 0);
	if (!c)
		return 1;
	/* Its server's socket, on this node, measures this connection for both sides (decided below, at its first
	 * payload): nothing to read, not even the packet's headers. */
	if (c->pair == HTTP_PAIR_CLIENT)
		return 1;
	if (c->cgroup_id == 0) {
		struct side s;

		/* The first packet after the handshake: now the socket's cgroup is known, the connection counts. */
		c->cgroup_id = bpf_skb_cgroup_id(skb);
		c->peers = (peer_known(c->remote_ip, c->family) ? HTTP_PEER_REMOTE : 0) |
			   (c->pair == HTTP_PAIR_SERVER && peer_known(c->local_ip, c->family) ? HTTP_PEER_LOCAL : 0);
		own_side(c, &s);
		t = tcp_entry(&s);
		if (t)
			t->opened += 1;
		/* A client tells a server socket that may join (at the handshake's last packet, this one) who it is. */
		if (c->pair == HTTP_PAIR_UNKNOWN) {
			struct http_pending_key k = {};
			struct http_pending_value *v;

			pending_key(c, &k);
			v = bpf_map_lookup_elem(&http_pending, &k);
			if (v)
				v->client_cgroup = c->cgroup_id;
		}
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
	if (c->pair == HTTP_PAIR_UNKNOWN) {
		decide_pair(c);
		if (c->pair == HTTP_PAIR_CLIENT)
			return 1;
	}
	seq = bpf_ntohl(th->seq);
	if (c->pair >= HTTP_PAIR_H2) {
		walk = h2_conn_packet(skb, sk, c, H2_OL(off, skb->len - off), H2_SE(seq, egress));
		/* The response direction of an h2c upgrade whose 101 is still being decided (see h2_start). */
		if ((c->role == HTTP_ROLE_CLIENT) != (egress != 0) && (c->resp.flags & HTTP_RS_UPGRADE))
			walk = upgrade_packet(skb, c, H2_OL(off, skb->len - off), H2_SE(seq, egress));
	} else if ((c->role == HTTP_ROLE_CLIENT) == (egress != 0)) {
		if (request_packet(skb, sk, c, off, skb->len - off, bpf_ntohl(th->ack_seq), egress))
			walk = h2_start(skb, sk, c, H2_OL(off, skb->len - off), H2_SE(seq, egress));
	} else {
		walk = response_packet(skb, sk, c, off, skb->len - off, seq, egress);
	}
	if (walk)
		h2_frames(skb, c, H2_OL(off, skb->len - off), H2_SE(seq, egress));
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

/* The third word of an IPv4-mapped IPv6 address, ::ffff:0:0/96 (network order). */
#define V4_MAPPED bpf_htonl(0x0000ffff)

/* Who the connection is, from sockops' view of it at the handshake. */
static __always_inline void identify(struct bpf_sock_ops *skops, struct http_conn *c, __u8 role)
{
	c->role = role;
	c->family = skops->family == AF_INET6 ? AF_INET6 : AF_INET;
	if (c->family == AF_INET) {
		c->remote_ip[0] = skops->remote_ip4;
		c->local_ip[0] = skops->local_ip4;
	} else {
		c->remote_ip[0] = skops->remote_ip6[0];
		c->remote_ip[1] = skops->remote_ip6[1];
		c->remote_ip[2] = skops->remote_ip6[2];
		c->remote_ip[3] = skops->remote_ip6[3];
		c->local_ip[0] = skops->local_ip6[0];
		c->local_ip[1] = skops->local_ip6[1];
		c->local_ip[2] = skops->local_ip6[2];
		c->local_ip[3] = skops->local_ip6[3];
	}
	/*
	 * An IPv4 connection accepted by a dual-stack listener is an IPv6 socket with IPv4-mapped addresses
	 * (::ffff:a.b.c.d): named as IPv4, as its client names it, so the two ends pair and the peer is one address.
	 */
	if (c->family == AF_INET6 && c->remote_ip[0] == 0 && c->remote_ip[1] == 0 && c->remote_ip[2] == V4_MAPPED &&
	    c->local_ip[0] == 0 && c->local_ip[1] == 0 && c->local_ip[2] == V4_MAPPED) {
		c->family = AF_INET;
		c->remote_ip[0] = c->remote_ip[3];
		c->local_ip[0] = c->local_ip[3];
		c->remote_ip[2] = c->remote_ip[3] = 0;
		c->local_ip[2] = c->local_ip[3] = 0;
	}
	c->remote_port = (__u16)bpf_ntohl(skops->remote_port);
	c->local_port = (__u16)skops->local_port;
	c->snd_seq = skops->snd_nxt;
	c->rcv_seq = skops->rcv_nxt;
}

SEC("sockops")
int http_sockops(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct http_pending_key k = {};
	struct http_pending_value *v;
	struct http_req_side *rq;
	struct http_conn *c;
	struct l4_pair_value *t;
	struct side s;

	if (!sk)
		return 1;
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		struct http_pending_value open = { .state = HTTP_PEND_OPEN };

		c = bpf_sk_storage_get(&http_conns, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!c)
			return 1;
		identify(skops, c, HTTP_ROLE_CLIENT);
		/* Registered for its server's socket to join; when the table is full it measures its own side. */
		pending_key(c, &k);
		c->pair = bpf_map_update_elem(&http_pending, &k, &open, BPF_NOEXIST) ? HTTP_PAIR_NONE : HTTP_PAIR_UNKNOWN;
		break;
	}
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		c = bpf_sk_storage_get(&http_conns, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!c)
			return 1;
		/* Without its request side the connection is counted (TCP metrics) but its requests are not. */
		bpf_sk_storage_get(&http_reqs, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		identify(skops, c, HTTP_ROLE_SERVER);
		c->pair = HTTP_PAIR_NONE;
		/* The client's socket, as it registered itself: the same addresses, ports and sequence numbers. */
		__builtin_memcpy(k.client_ip, c->remote_ip, sizeof(k.client_ip));
		__builtin_memcpy(k.server_ip, c->local_ip, sizeof(k.server_ip));
		k.client_port = c->remote_port;
		k.server_port = c->local_port;
		k.client_seq = c->rcv_seq;
		k.server_seq = c->snd_seq;
		k.family = c->family;
		v = bpf_map_lookup_elem(&http_pending, &k);
		if (v && v->client_cgroup &&
		    __sync_val_compare_and_swap(&v->state, HTTP_PEND_OPEN, HTTP_PEND_JOINED) == HTTP_PEND_OPEN) {
			c->peer_cgroup = v->client_cgroup;
			c->pair = HTTP_PAIR_SERVER;
			count(HTTP_C_PAIRED, 1);
		}
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE)
			return 1;
		c = bpf_sk_storage_get(&http_conns, sk, 0, 0);
		if (!c)
			return 1;
		/* A client that never carried a byte is still registered. */
		if (c->pair == HTTP_PAIR_UNKNOWN) {
			pending_key(c, &k);
			bpf_map_delete_elem(&http_pending, &k);
		}
		if (c->cgroup_id == 0)
			return 1;
		/* A 101 whose server never spoke after it: a tunnel (upgrade_packet decides on the server's bytes). */
		if (c->resp.flags & HTTP_RS_UPGRADE)
			upgrade_tunnel(sk, c);
		if (c->pair >= HTTP_PAIR_H2) {
			struct h2_conn *h = bpf_sk_storage_get(&h2_conns, sk, 0, 0);
			struct h2_record *r;

			if (h)
				h2_release(h);
			r = bpf_ringbuf_reserve(&h2_events, sizeof(*r), 0);

			if (r) {
				h2_fill(r, 0, 0, bpf_ktime_get_ns(), H2_REC_CLOSE, bpf_get_socket_cookie(skops));
				bpf_ringbuf_submit(r, h2_wakeup(sizeof(*r)));
			} else {
				count(HTTP_C_H2_DROPS, 1);
			}
		}
		own_side(c, &s);
		t = tcp_entry(&s);
		if (t)
			t->closed += 1;
		rq = bpf_sk_storage_get(&http_reqs, sk, 0, 0);
		if (rq)
			flush_bytes(c, &rq->unflushed, 1);
		flush_bytes(c, &c->resp.unflushed, 0);
		return 1;
	default:
		return 1;
	}
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	return 1;
}
