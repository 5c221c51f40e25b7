/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps of the HTTP/1.x and TCP metrics programs (bpf/metrics/http.bpf.c), shared with @mesh/metrics.
 * Fixed-width types, explicit padding, sizes asserted below.
 */
#ifndef MESH_BPF_HTTP_H
#define MESH_BPF_HTTP_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* OpenTelemetry's default http.*.request.duration buckets: 14 bounds (seconds) and +Inf. */
#define HTTP_BOUNDS 14
#define HTTP_BUCKETS (HTTP_BOUNDS + 1)
#define HTTP_PREFIX 16

enum http_dir { HTTP_DIR_CLIENT = 0, HTTP_DIR_SERVER = 1 };
enum http_role { HTTP_ROLE_CLIENT = 1, HTTP_ROLE_SERVER = 2 };

enum http_method {
	HTTP_M_NONE = 0,
	HTTP_M_GET,
	HTTP_M_HEAD,
	HTTP_M_POST,
	HTTP_M_PUT,
	HTTP_M_DELETE,
	HTTP_M_CONNECT,
	HTTP_M_OPTIONS,
	HTTP_M_TRACE,
	HTTP_M_PATCH,
	HTTP_M_OTHER,
};

/* Per connection, in alternation: a request starts, its response starts, the next request starts, … */
enum http_state {
	HTTP_ST_NEW = 0,
	HTTP_ST_IDLE,      /* between exchanges */
	HTTP_ST_REQ_PFX,   /* a request started; its first bytes are being collected to read the method */
	HTTP_ST_AWAIT,     /* the request line is known; waiting for the first byte of the response */
	HTTP_ST_RESP_PFX,  /* a response started; its first bytes are being collected to read the status */
	HTTP_ST_NOT_HTTP,  /* the stream is not HTTP/1.x: ignored from here on */
};

/*
 * Per socket (sk_storage). Both directions of a connection use it, often on two CPUs (a client's requests leave
 * on its own CPU, its responses are processed on the CPU that received them), so it is laid out by who writes
 * what. Everything a packet reads or writes is in the first 56 bytes: with the storage's 8-byte header, one cache
 * line, which moves between the CPUs once per direction change anyway. The byte counters are there too: with a
 * line of their own per direction (the layout before), the sending and the receiving CPU each wrote one line of a
 * 128-byte pair, which x86's adjacent-line prefetcher moves as one, so the two counters travelled every packet
 * (bench:metrics, docs/metrics.md). The second line holds what only a line that arrives in pieces needs.
 */
struct http_conn {
	/* Line 0 (after the storage's header): the exchange, who the connection is, the bytes not yet counted. */
	__u64 cgroup_id;     /* the socket's cgroup (the local workload); 0 until the first packet */
	__u64 req_start_ns;  /* when the current request's first byte left (client) or arrived (server) */
	__u32 remote_ip[4];  /* network order; IPv4 in [0] */
	__u16 remote_port;   /* host order */
	__u16 local_port;    /* host order */
	__u8 role;
	__u8 family;
	__u8 state;
	__u8 method;
	__u8 req_len;        /* bytes in req_pfx, when a request line arrives in pieces */
	__u8 resp_len;
	__u8 pad0[2];
	/* Payload bytes not yet added to tcp_stats: flushed at 64 KiB and when the connection closes. */
	__u32 unflushed_sent;
	__u32 unflushed_received;
	__u8 pad1[4];
	/* Line 1: request and status lines that arrive in pieces (rare). */
	__u64 resp_start_ns; /* when the response's first byte was seen, while its status line is incomplete */
	__u8 req_pfx[HTTP_PREFIX];
	__u8 resp_pfx[HTTP_PREFIX];
	__u8 pad2[24];
}; /* 120 bytes */

/* Aggregation key of the request metrics (per-CPU hash). */
struct http_key {
	__u64 cgroup_id;
	__u32 remote_ip[4];
	__u16 port;   /* client: the server port dialled; server: the local port served */
	__u16 status; /* 0: the response did not start with a status line */
	__u8 dir;     /* enum http_dir */
	__u8 method;  /* enum http_method */
	__u8 family;
	__u8 pad[5];
}; /* 40 bytes */

struct http_value {
	__u64 count;
	__u64 sum_ns;
	__u64 buckets[HTTP_BUCKETS]; /* non-cumulative: buckets[i] counts durations in (bound[i-1], bound[i]] */
}; /* 136 bytes */

/* TCP metrics per local workload and peer (per-CPU hash). */
struct l4_pair_key {
	__u64 cgroup_id;
	__u32 remote_ip[4];
	__u16 port; /* as in http_key */
	__u8 dir;
	__u8 family;
	__u32 pad;
}; /* 32 bytes */

struct l4_pair_value {
	__u64 opened;
	__u64 closed;
	__u64 bytes_sent;
	__u64 bytes_received;
}; /* 32 bytes */

enum http_counter {
	HTTP_C_NOT_HTTP,         /* connections whose data was not HTTP/1.x */
	HTTP_C_UNPARSED_STATUS,  /* responses that did not start with a status line (recorded with status 0) */
	HTTP_C_HTTP_OVERFLOW,    /* exchanges recorded under the overflow key: http_requests was full */
	HTTP_C_TCP_OVERFLOW,
	HTTP_C_MAX,
};

#ifdef __cplusplus
#define HTTP_ASSERT static_assert
#define HTTP_SIZE_CHECK(type, size) static_assert(sizeof(struct type) == (size), "sizeof(struct " #type ")")
#else
#define HTTP_ASSERT _Static_assert
#define HTTP_SIZE_CHECK(type, size) _Static_assert(sizeof(struct type) == (size), "sizeof(struct " #type ")")
#endif
HTTP_SIZE_CHECK(http_conn, 120);
/* Line 1 starts 64 bytes into the storage's line-aligned data (8 of them its header). */
HTTP_ASSERT(__builtin_offsetof(struct http_conn, resp_start_ns) + 8 == 64, "resp_start_ns starts line 1");
HTTP_SIZE_CHECK(http_key, 40);
HTTP_SIZE_CHECK(http_value, 136);
HTTP_SIZE_CHECK(l4_pair_key, 32);
HTTP_SIZE_CHECK(l4_pair_value, 32);

#endif /* MESH_BPF_HTTP_H */
