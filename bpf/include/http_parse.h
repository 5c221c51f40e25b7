/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The first bytes of HTTP/1.x request and status lines, read and checked in the kernel (bpf/metrics/http.bpf.c).
 * Needs vmlinux.h, bpf_helpers.h and http.h included first.
 */
#ifndef MESH_BPF_HTTP_PARSE_H
#define MESH_BPF_HTTP_PARSE_H

#define PARSE_MORE 0
#define PARSE_OK 1
#define PARSE_BAD 2
#define PARSE_H2 3 /* the HTTP/2 connection preface: not HTTP/1.x */

/* Little-endian words of the tokens the fast paths compare with. */
#define W4(a, b, c, d) ((__u32)(a) | (__u32)(b) << 8 | (__u32)(c) << 16 | (__u32)(d) << 24)
#define W8_HTTP_1_1 ((__u64)W4('H', 'T', 'T', 'P') | (__u64)W4('/', '1', '.', '1') << 32)

/* Whether a request target may start with ch: origin-form '/', '*', absolute-form "http://…", and for
 * CONNECT the authority form (host:port, any host). */
static __always_inline int target_start(__u8 method, __u8 ch)
{
	if (method == HTTP_M_CONNECT)
		return ch > ' ' && ch < 0x7f;
	return ch == '/' || ch == '*' || ch == 'h';
}

/* "PRI * HTTP/2.0\r\n", the first 16 bytes of the HTTP/2 preface (h2c with prior knowledge, gRPC without TLS). */
static __always_inline int is_h2_preface(const __u8 *p)
{
	return *(const __u32 *)p == W4('P', 'R', 'I', ' ') && *(const __u32 *)(p + 4) == W4('*', ' ', 'H', 'T') &&
	       *(const __u32 *)(p + 8) == W4('T', 'P', '/', '2') && *(const __u32 *)(p + 12) == W4('.', '0', '\r', '\n');
}

static __always_inline int is_upper(__u8 ch)
{
	return ch >= 'A' && ch <= 'Z';
}

/*
 * The request line's method: an upper-case token, a space, then a request target (see target_start). The
 * HTTP/2 preface starts like a request line ("PRI * HTTP/2.0"): it is read whole before it is decided.
 */
static __always_inline int parse_method(const __u8 *p, __u32 n, __u8 *method)
{
	__u32 len = 0;
	__u8 m = HTTP_M_OTHER;

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
	if (len == 3 && p[0] == 'G' && p[1] == 'E' && p[2] == 'T')
		m = HTTP_M_GET;
	else if (len == 3 && p[0] == 'P' && p[1] == 'U' && p[2] == 'T')
		m = HTTP_M_PUT;
	else if (len == 4 && p[0] == 'H' && p[1] == 'E' && p[2] == 'A' && p[3] == 'D')
		m = HTTP_M_HEAD;
	else if (len == 4 && p[0] == 'P' && p[1] == 'O' && p[2] == 'S' && p[3] == 'T')
		m = HTTP_M_POST;
	else if (len == 5 && p[0] == 'P' && p[1] == 'A' && p[2] == 'T' && p[3] == 'C' && p[4] == 'H')
		m = HTTP_M_PATCH;
	else if (len == 5 && p[0] == 'T' && p[1] == 'R' && p[2] == 'A' && p[3] == 'C' && p[4] == 'E')
		m = HTTP_M_TRACE;
	else if (len == 6 && p[0] == 'D' && p[1] == 'E' && p[2] == 'L' && p[3] == 'E' && p[4] == 'T' && p[5] == 'E')
		m = HTTP_M_DELETE;
	else if (len == 7 && p[0] == 'O' && p[1] == 'P' && p[2] == 'T' && p[3] == 'I' && p[4] == 'O' && p[5] == 'N' &&
		 p[6] == 'S')
		m = HTTP_M_OPTIONS;
	else if (len == 7 && p[0] == 'C' && p[1] == 'O' && p[2] == 'N' && p[3] == 'N' && p[4] == 'E' && p[5] == 'C' &&
		 p[6] == 'T')
		m = HTTP_M_CONNECT;
	if (!target_start(m, p[(len + 1) & (HTTP_PREFIX - 1)]))
		return PARSE_BAD;
	if (len == 3 && p[0] == 'P' && p[1] == 'R' && p[2] == 'I' && p[4] == '*') {
		if (n < HTTP_PREFIX)
			return PARSE_MORE;
		if (is_h2_preface(p))
			return PARSE_H2;
	}
	*method = m;
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
	if (!target_start(m, t))
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

/* Where skip_header_block stands: bpf_loop's context. */
struct hdr_scan {
	struct __sk_buff *skb;
	__u32 pos;  /* the next byte to look at */
	__u32 end;
	__u32 last; /* the last four bytes seen, the latest lowest */
	__u32 found;
};

#define CRLFCRLF 0x0d0a0d0aU

/*
 * One step of skip_header_block: HTTP_PREFIX bytes. The bytes go through a shift register rather than a small
 * state machine: the verifier then follows one path per byte, not one per state.
 */
static long scan_step(__u32 i, void *ctx)
{
	struct hdr_scan *x = ctx;
	__u8 buf[HTTP_PREFIX];
	__u32 n = x->end - x->pos, last = x->last;

	if (x->pos >= x->end)
		return 1;
	if (n > HTTP_PREFIX)
		n = HTTP_PREFIX;
	asm volatile("" : "+r"(n));
	n = ((n - 1) & (HTTP_PREFIX - 1)) + 1;
	/* Again, so that the compiler keeps the loop's own bound: Linux 6.1's verifier would not stop at j == n. */
	asm volatile("" : "+r"(n));
	if (bpf_skb_load_bytes(x->skb, x->pos, buf, n))
		return 1;
	for (__u32 j = 0; j < HTTP_PREFIX; j++) {
		if (j >= n)
			break;
		last = last << 8 | buf[j & (HTTP_PREFIX - 1)];
		if (last == CRLFCRLF) {
			x->pos += j + 1;
			x->found = 1;
			return 1;
		}
	}
	x->last = last;
	x->pos += n;
	return 0;
}

/*
 * The end of a header block ("\r\n\r\n") in [off, off + len) of the payload, *crlf bytes of it having ended the
 * previous packet: returns the bytes up to and including it, or -1 when it is not there (then *crlf is what
 * the packet ends with). Only interim responses are walked like this (100 Continue, 103 Early Hints: rare and
 * short); up to 1 KiB per packet.
 */
static __always_inline int skip_header_block(struct __sk_buff *skb, __u32 off, __u32 len, __u8 *crlf)
{
	__u8 k = *crlf;
	struct hdr_scan x = { .skb = skb, .pos = off, .end = off + len };

	x.last = k == 3 ? 0x0d0a0d : k == 2 ? 0x0d0a : k == 1 ? 0x0d : 0;
	bpf_loop(1024 / HTTP_PREFIX, scan_step, &x, 0);
	if (x.found) {
		*crlf = 0;
		return (int)(x.pos - off);
	}
	*crlf = (x.last & 0xffffff) == 0x0d0a0d ? 3 : (x.last & 0xffff) == 0x0d0a ? 2 : (x.last & 0xff) == 0x0d ? 1 : 0;
	return -1;
}

#endif /* MESH_BPF_HTTP_PARSE_H */
