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

/* HTTP_BOUNDS, HTTP_BUCKETS, http_bucket_of() and enum http_counter, from bpf/include/shared.json. */
#include "http_gen.h"

#define HTTP_PREFIX 16
/* Most cells the programs hand out (http_cells is sized by user space, at most this). */
#define HTTP_MAX_CELLS (1U << 24)

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

/*
 * A connection alternates request, response, request, … Its request direction (client: egress; server: ingress)
 * and its response direction (client: ingress; server: egress) each keep state of their own, written only by
 * their own packets, and the request direction tells the response direction about each request it sees.
 *
 * Laid out by which CPU touches what. On loopback and veth a packet is received on the CPU that sent it, so a
 * client's requests are handled on its CPU and its responses on the server's (the server's socket the other way
 * round). A cache line one CPU writes and the other reads moves between them each time; on the machines this
 * was measured on (bench:metrics, docs/metrics.md) a line the other CPU has read is gone from the writer's cache
 * too, and the hardware prefetchers drag neighbouring lines of an allocation along with the one asked for. So:
 * the request side's own state is a socket storage of its own (struct http_req_side, a separate allocation that
 * no packet of the response direction reads), the request is handed over in one line the request direction only
 * stores to and the response direction reads once per exchange (struct http_exchange), and whether the peer has
 * answered is read from the packet itself (the ack number of a request-direction packet moves once response bytes
 * arrived), not from anything the other direction writes.
 */
enum http_req_state {
	HTTP_RQ_NONE = 0, /* no request yet */
	HTTP_RQ_PFX,      /* a request started; its first bytes are being collected to read the method */
	HTTP_RQ_LINE,     /* the request line is known and handed over; later bytes before the answer are its body */
	HTTP_RQ_NOT_HTTP, /* the stream is not HTTP/1.x: ignored from here on */
};

/* The request direction's own state (a socket storage of its own). */
struct http_req_side {
	__u64 start_ns;  /* when the current request's first byte left (client) or arrived (server) */
	__u32 ack;       /* the ack number of its first packet: where the response direction stood */
	__u32 id;        /* requests seen on the connection; never 0 once one was */
	__u32 unflushed; /* payload bytes in this direction not yet added to tcp_stats */
	__u8 state;      /* enum http_req_state */
	__u8 pfx_len;    /* bytes in pfx */
	__u8 pad[2];
	__u8 pfx[HTTP_PREFIX]; /* a request line that arrives in pieces */
}; /* 40 bytes */

/* A request as the response direction needs it. */
struct http_req_info {
	__u64 start_ns;
	__u8 method;     /* enum http_method */
	__u8 pad[7];
}; /* 16 bytes */

/*
 * The requests handed to the response direction: stored by the request direction, id last. The last two are
 * kept (request id in req[id & 1]): a request's body after an interim response can look like a new request
 * line, and the final response then answers the older one (see response_packet in http.bpf.c).
 */
struct http_exchange {
	__u32 id;        /* 0: no request yet */
	__u32 pad;
	struct http_req_info req[2];
}; /* 40 bytes */

/* struct http_resp_side's flags. */
#define HTTP_RS_COLLECT 1 /* a status line is being collected across segments (from start_ns, start_seq) */
#define HTTP_RS_INTERIM 2 /* in an interim response's header block: its end comes before the next status line */
#define HTTP_RS_TUNNEL 4  /* after 101 Switching Protocols or a 2xx to CONNECT: no longer HTTP/1.x */
#define HTTP_RS_NOT_H2 8  /* the peer's first bytes, before any request, were not an HTTP/2 server's SETTINGS */
/* After a 101 (recorded only once what follows it is known): its header block is being skipped; with
 * HTTP_RS_UPGRADE_AT it ended, and start_seq is the next byte's: an h2c server's SETTINGS there switch the
 * connection to HTTP/2 (the request is stream 1), anything else makes it a tunnel. start_ns: the 101's time. */
#define HTTP_RS_UPGRADE 16
#define HTTP_RS_UPGRADE_AT 32

/* The response direction's own state. */
struct http_resp_side {
	__u64 start_ns;  /* when the response's first byte was seen, while its status line is incomplete */
	__u32 done_id;   /* the last request handed over when a response was recorded: later ones wait for theirs */
	__u32 final_seq; /* the sequence number of the last recorded response's first byte */
	__u32 unflushed; /* payload bytes in this direction not yet added to tcp_stats */
	/* The http_cells cell of the last response's series (method and status in cell_tag), under the maps of
	 * the load numbered cell_epoch: the next response with the same method and status goes straight there.
	 * peer_cell: the same for the client's side, when this server socket measures both. */
	__u32 cell;
	__u32 cell_tag;
	__u32 peer_cell;
	__u32 peer_cell_tag;
	__u32 cell_epoch;
	__u32 start_seq; /* the sequence number of start_ns's byte */
	__u8 pfx_len;
	__u8 flags;      /* HTTP_RS_* */
	__u8 crlf;       /* bytes of an interim response's "\r\n\r\n" seen at the end of the last packet */
	__u8 up_slot;    /* HTTP_RS_UPGRADE: the c->ex.req slot of the request the 101 answered */
	__u8 pfx[HTTP_PREFIX];
}; /* 64 bytes */

/*
 * Connections whose two ends are both measured on this node (a client and a server workload talking over loopback
 * or veth) are measured once, at the server's socket, for both sides: the client's socket does nothing per
 * packet. The server's socket sees every request arrive and every response leave, which is what the client's
 * socket would see a few microseconds apart (on this node a packet is received in the same pass that sends it),
 * and the work of one socket instead of two halves the cost of such a connection (bench:metrics).
 * The two sockets find each other at the handshake: the client's registers its connection in http_pending
 * (addresses, ports and both initial sequence numbers, which no other connection shares), the server's joins it.
 */
enum http_pair {
	HTTP_PAIR_UNKNOWN = 0, /* a client socket before its first payload: registered, maybe joined */
	HTTP_PAIR_NONE,        /* measures its own side only */
	HTTP_PAIR_CLIENT,      /* a client socket whose server's socket measures both sides: does nothing */
	HTTP_PAIR_SERVER,      /* a server socket that measures both sides */
	/* HTTP/2 (the preface was seen): frames go to user space (struct h2_record), nothing is parsed as HTTP/1. */
	HTTP_PAIR_H2,          /* measures its own side */
	HTTP_PAIR_H2_BOTH,     /* a server socket that was HTTP_PAIR_SERVER: its records name the client's side too */
};

/* A client connection waiting for its server's socket, keyed as the client sees it. */
struct http_pending_key {
	__u32 client_ip[4];  /* network order; IPv4 in [0] */
	__u32 server_ip[4];
	__u16 client_port;   /* host order */
	__u16 server_port;
	__u32 client_seq;    /* the client's and the server's initial sequence numbers, plus one */
	__u32 server_seq;
	__u8 family;
	__u8 pad[3];
}; /* 48 bytes */

enum http_pending_state {
	HTTP_PEND_OPEN = 0,  /* the server's socket may join */
	HTTP_PEND_JOINED,    /* it did: it measures both sides */
	HTTP_PEND_CLOSED,    /* the client's socket decided to measure its own side: too late to join */
};

struct http_pending_value {
	__u64 client_cgroup; /* the client's cgroup, known from its first packet (0 before) */
	__u32 state;         /* enum http_pending_state, changed by compare-and-swap */
	__u32 pad;
}; /* 16 bytes */

/*
 * Per socket (sk_storage). The storage's data starts on a cache line after an 8-byte header that every lookup
 * reads, and its 256-byte element starts 64 bytes before that, so line 0 pairs with the element's own header and
 * lines 1 and 2 with each other (x86's adjacent-line prefetcher fetches 128-byte pairs).
 */
struct http_conn {
	/* Line 0, read by every packet: who the connection is; written at establishment and at its first packet. */
	__u64 cgroup_id;     /* the socket's cgroup (the local workload); 0 until the first packet */
	__u32 remote_ip[4];  /* network order; IPv4 in [0] */
	__u32 local_ip[4];
	__u16 remote_port;   /* host order */
	__u16 local_port;    /* host order */
	__u8 role;
	__u8 family;
	__u8 pair;           /* enum http_pair */
	__u8 peers;          /* HTTP_PEER_*: which addresses name a known peer (else the series say "unknown") */
	__u32 snd_seq;       /* initial sequence numbers plus one, to find the other end (http_pending) */
	__u32 rcv_seq;
	/* Line 1: the hand-over, and who the client is when this server socket measures both sides. */
	struct http_exchange ex;
	__u64 peer_cgroup;
	__u8 pad1[16];
	/* Line 2: the response side. */
	struct http_resp_side resp;
}; /* 184 bytes */

/*
 * Known peers (http_peers): the addresses series may name. A peer that is not one (any local process can connect
 * from any 127/8 address) is folded into one "unknown" peer, the all-zero address, so what a peer can create in
 * the aggregation tables is bounded by the mesh's config, not by the peer. The all-zero key (family 0) means
 * "every address is known", until user space writes the set.
 */
#define HTTP_PEER_REMOTE 1 /* remote_ip is known */
#define HTTP_PEER_LOCAL 2  /* local_ip is known: the address a paired server's client dialled */

struct http_peer_key {
	__u32 ip[4];   /* network order; IPv4 in [0] */
	__u8 family;
	__u8 pad[3];
}; /* 20 bytes */

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

/*
 * HTTP/2 (h2c): per connection direction the programs follow the frame headers (skipping DATA by its length,
 * never copying it) and hand header-carrying frames to user space through the h2_events ring buffer, where HPACK
 * is decoded with one dynamic table per direction (packages/metrics/src/h2/). Directions are numbered by record,
 * so a record that found no room shows as a gap and user space stops trusting that direction's table.
 */
#define H2_PREFACE_LEN 24
#define H2_FRAME_HEADER 9
#define H2_MAX_PAYLOAD 4096    /* a longer payload is cut here (captured < length): user space marks the direction */
#define H2_RINGBUF_SIZE (1U << 20)
#define H2_RECORD_MAX 8192     /* a record of frames (header and items) stays within this; more frames go in the next */
#define H2_MAX_FRAMES 512      /* frame headers followed per packet; more and the direction is lost */

/* H2_DIR_PREFACE: the request direction after an h2c upgrade, until the client's preface (its next bytes). */
enum h2_dir_state { H2_DIR_OFF = 0, H2_DIR_ON, H2_DIR_LOST, H2_DIR_PREFACE };

/* One direction's position in the frame stream (dir[0]: client to server; dir[1]: server to client). */
struct h2_dir {
	__u32 next;   /* TCP sequence number of the next frame header's first byte */
	__u32 seq;    /* records sent for this direction */
	__u8 state;   /* enum h2_dir_state */
	__u8 have;    /* bytes of a frame header split across packets, collected in hdr */
	__u8 hdr[H2_FRAME_HEADER];
	__u8 ident;   /* a ring entry with the connection's identity (H2_REC_CONN) went out for this direction */
}; /* 20 bytes */

/*
 * A response packet whose record would hold only header blocks that end no stream (a response's HEADERS, which
 * many servers write apart from the DATA that follows) is held back, up to this size, and goes out with the
 * direction's next record in one ring entry: a stream then costs two records (request, response) instead of three.
 * Nothing is counted before its stream ends, and the end comes in that next record, so holding delays no count.
 */
#define H2_HOLD 320

struct h2_conn {
	struct h2_dir dir[2];
	__u32 hold_len;      /* bytes held (a whole record of the response direction), 0 for none */
	__u32 pad;
	__u64 cookie;        /* the socket's, read once for the records (0: not yet) */
	__u8 hold[H2_HOLD];
}; /* 376 bytes */

/* A ring entry holds one record or more, back to back (a held record, then the next; see H2_HOLD). */
enum h2_kind {
	/* The frames of one packet that user space needs (struct h2_item each, after the record's header): one
	 * record per packet, not one per frame. */
	H2_REC_FRAME = 1,
	H2_REC_LOST = 2,  /* the direction's frames can no longer be followed (a gap in the TCP stream, too many frames) */
	H2_REC_CLOSE = 3, /* the connection closed: its decoders can go */
	/* An HTTP/1.1 request switched to HTTP/2 ("Upgrade: h2c", then 101): it is stream 1, whose answer comes as
	 * HTTP/2. ts_ns: the request's first byte; method: its method (enum http_method). Numbered in the
	 * response direction, before that direction's first frame. */
	H2_REC_UPGRADE = 4,
	/* The connection's identity (struct h2_ident after the header; seq 0, not numbered): in the ring entry of each
	 * direction's first record, before it, and again in the direction's next entry as long as no entry carrying it
	 * found room in the ring (a reservation that failed is known). A record of a connection whose identity never
	 * came is counted on no side: its direction is marked lost in user space. */
	H2_REC_CONN = 5,
};

#define H2_F_RESPONSE 1 /* a record's: the server-to-client direction */
#define H2_F_SERVER 2   /* an identity's: the socket is the server's */
#define H2_F_PAIRED 4   /* an identity's: a server socket that measures its client's side too (peer_cgroup, local_ip) */

/* Frames handed over: HEADERS, PUSH_PROMISE, CONTINUATION, SETTINGS (not ACKs), RST_STREAM, the server's GOAWAY,
 * and the 9-byte header of a response DATA frame that ends a stream. What names the connection (cgroups,
 * addresses, ports) is in its H2_REC_CONN record, once per direction, not in every record: 96 bytes per record
 * before, 32 now. */
struct h2_record {
	__u64 cookie;        /* the socket's */
	__u64 ts_ns;         /* when the packet left (egress) or arrived (ingress); bpf_ktime_get_ns's clock */
	__u32 seq;           /* records of this direction before this one (kind LOST counts too) */
	__u32 length;        /* bytes after this header: H2_REC_FRAME's items, H2_REC_CONN's struct h2_ident */
	__u16 frames;        /* H2_REC_FRAME: items */
	__u8 kind;           /* enum h2_kind */
	__u8 flags;          /* H2_F_RESPONSE */
	__u8 method;         /* H2_REC_UPGRADE: the request's enum http_method */
	__u8 pad[3];
	__u8 data[];
}; /* 32 bytes, then the items */

/* An H2_REC_CONN record's payload: who the connection's records are about. */
struct h2_ident {
	__u64 cgroup_id;
	__u64 peer_cgroup;   /* H2_F_PAIRED: the client's cgroup */
	__u32 remote_ip[4];  /* network order; IPv4 in [0]; all zero for a peer that is not known */
	__u32 local_ip[4];   /* H2_F_PAIRED: the address the client dialled (all zero when not known) */
	__u16 remote_port;   /* host order */
	__u16 local_port;
	__u8 family;
	__u8 flags;          /* H2_F_SERVER, H2_F_PAIRED */
	__u8 pad[2];
}; /* 56 bytes */

#define H2_IDENT_RECORD 88 /* an H2_REC_CONN record: header and struct h2_ident */

/* One frame in an H2_REC_FRAME record: its header, then `captured` bytes of its payload (none for DATA). */
struct h2_item {
	__u8 frame[H2_FRAME_HEADER];
	__u8 pad;
	__u16 captured;
}; /* 12 bytes, then the payload */

#ifdef __cplusplus
#define HTTP_ASSERT static_assert
#define HTTP_SIZE_CHECK(type, size) static_assert(sizeof(struct type) == (size), "sizeof(struct " #type ")")
#else
#define HTTP_ASSERT _Static_assert
#define HTTP_SIZE_CHECK(type, size) _Static_assert(sizeof(struct type) == (size), "sizeof(struct " #type ")")
#endif
HTTP_SIZE_CHECK(http_req_side, 40);
HTTP_SIZE_CHECK(http_req_info, 16);
HTTP_SIZE_CHECK(http_exchange, 40);
HTTP_SIZE_CHECK(http_resp_side, 64);
HTTP_SIZE_CHECK(http_conn, 184);
HTTP_SIZE_CHECK(http_pending_key, 48);
HTTP_SIZE_CHECK(http_pending_value, 16);
/* The element (64-byte header, 8-byte data header, data) stays in the 256-byte size class. */
HTTP_ASSERT(64 + 8 + sizeof(struct http_conn) <= 256, "http_conn fits a 256-byte element");
/* Line k of the storage's data starts at offset 64 * k - 8 (after its 8-byte header). */
HTTP_ASSERT(__builtin_offsetof(struct http_conn, ex) + 8 == 64, "ex starts line 1");
HTTP_ASSERT(__builtin_offsetof(struct http_conn, peer_cgroup) + 8 < 128, "peer_cgroup in line 1");
HTTP_ASSERT(__builtin_offsetof(struct http_conn, resp) + 8 == 128, "resp starts line 2");
HTTP_SIZE_CHECK(http_peer_key, 20);
HTTP_SIZE_CHECK(http_key, 40);
HTTP_SIZE_CHECK(http_value, 136);
HTTP_SIZE_CHECK(l4_pair_key, 32);
HTTP_SIZE_CHECK(l4_pair_value, 32);
HTTP_SIZE_CHECK(h2_dir, 20);
HTTP_SIZE_CHECK(h2_conn, 376);
HTTP_SIZE_CHECK(h2_record, 32);
HTTP_SIZE_CHECK(h2_ident, 56);
HTTP_ASSERT(sizeof(struct h2_record) + sizeof(struct h2_ident) == H2_IDENT_RECORD, "H2_IDENT_RECORD");
HTTP_SIZE_CHECK(h2_item, 12);

#endif /* MESH_BPF_HTTP_H */
