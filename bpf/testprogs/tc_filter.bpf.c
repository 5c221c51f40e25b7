// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* tc classifier: drops denied source prefixes and one blocked destination port, counts the rest per L4 port. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "bpf_consts.h"
#include "parse.h"
#include "testprogs.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Destination port to drop, host order, 0 = none; in .rodata so user space sets it before load. */
const volatile __u16 cfg_blocked_port = 0;

/* Source prefixes to drop; the value is the rule id reported in drop events. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* the kernel refuses preallocated LPM tries */
	__type(key, struct lpm_v4_key);
	__type(value, __u32);
} deny_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v6_key);
	__type(value, __u32);
} deny_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct l4_key);
	__type(value, struct l4_counters);
} port_stats SEC(".maps");

/* Indexed by enum verdict_idx. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, VERDICT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} drop_events SEC(".maps");

static __always_inline void count_verdict(__u32 idx)
{
	__u64 *n = bpf_map_lookup_elem(&verdicts, &idx);

	/* Shared array: other CPUs update the same slot. */
	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline void emit_drop(struct __sk_buff *skb, const struct pkt_info *pi, __u16 reason, __u32 rule_id)
{
	struct drop_event *e = bpf_ringbuf_reserve(&drop_events, sizeof(*e), 0);

	/* Ring full: the packet is still dropped and counted in verdicts. */
	if (!e)
		return;
	e->ts_ns = bpf_ktime_get_ns();
	e->family = pi->family;
	e->proto = pi->proto;
	e->sport = pi->sport;
	e->dport = pi->dport;
	e->reason = reason;
	e->rule_id = rule_id;
	e->pkt_len = skb->len;
	__builtin_memcpy(e->saddr, pi->saddr, sizeof(e->saddr));
	__builtin_memcpy(e->daddr, pi->daddr, sizeof(e->daddr));
	bpf_ringbuf_submit(e, 0);
}

/* Longest-prefix match of the source address; NULL when no deny rule covers it. */
static __always_inline __u32 *deny_lookup(const struct pkt_info *pi)
{
	if (pi->family == AF_INET) {
		struct lpm_v4_key k4 = { .prefixlen = 32 };

		__builtin_memcpy(k4.addr, pi->saddr, sizeof(k4.addr));
		return bpf_map_lookup_elem(&deny_v4, &k4);
	}

	struct lpm_v6_key k6 = { .prefixlen = 128 };

	__builtin_memcpy(k6.addr, pi->saddr, sizeof(k6.addr));
	return bpf_map_lookup_elem(&deny_v6, &k6);
}

static __always_inline void count_port(struct __sk_buff *skb, const struct pkt_info *pi)
{
	struct l4_key key = { .family = pi->family, .proto = pi->proto, .port = pi->dport };
	struct l4_counters zero = {};
	struct l4_counters *c;

	c = bpf_map_lookup_elem(&port_stats, &key);
	if (!c) {
		/* NOEXIST: another CPU may have inserted the key meanwhile; its slot for this CPU is still ours. */
		bpf_map_update_elem(&port_stats, &key, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&port_stats, &key);
		if (!c)
			return; /* map full */
	}
	/* Per-CPU value: no other writer, so plain adds. */
	c->packets += 1;
	c->bytes += skb->len;
}

SEC("tc")
int tc_filter(struct __sk_buff *skb)
{
	struct pkt_info pi;
	__u32 *rule;

	if (parse_tc(skb, &pi)) {
		count_verdict(VERDICT_NOT_IP);
		return TC_ACT_OK;
	}

	rule = deny_lookup(&pi);
	if (rule) {
		count_verdict(VERDICT_DROP_DENY);
		emit_drop(skb, &pi, VERDICT_DROP_DENY, *rule);
		return TC_ACT_SHOT;
	}

	if (cfg_blocked_port && (pi.proto == IPPROTO_TCP || pi.proto == IPPROTO_UDP) &&
	    pi.dport == cfg_blocked_port) {
		count_verdict(VERDICT_DROP_PORT);
		emit_drop(skb, &pi, VERDICT_DROP_PORT, 0);
		return TC_ACT_SHOT;
	}

	count_port(skb, &pi);
	count_verdict(VERDICT_PASS);
	return TC_ACT_OK;
}
