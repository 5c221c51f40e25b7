// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cgroup_skb programs: drop TCP/UDP packets to blocked destination ports, count the rest per direction. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "bpf_consts.h"
#include "parse.h"
#include "testprogs.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* skb_stats slots */
#define SLOT_INGRESS 0
#define SLOT_EGRESS 1

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct skb_counters);
} skb_stats SEC(".maps");

/* Destination port (host order) → packets dropped for it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u16);
	__type(value, __u64);
} blocked_ports SEC(".maps");

/* Returns the cgroup_skb verdict: 0 drops, 1 lets the packet through. */
static __always_inline int guard(struct __sk_buff *skb, __u32 slot)
{
	struct skb_counters *c;
	struct pkt_info pi;

	if (parse_cgroup_skb(skb, &pi) == 0 && (pi.proto == IPPROTO_TCP || pi.proto == IPPROTO_UDP)) {
		__u16 port = pi.dport;
		__u64 *hits = bpf_map_lookup_elem(&blocked_ports, &port);

		if (hits) {
			/* Shared hash value: other CPUs hit the same port. */
			__sync_fetch_and_add(hits, 1);
			return 0;
		}
	}

	c = bpf_map_lookup_elem(&skb_stats, &slot);
	if (c) {
		c->packets += 1;
		c->bytes += skb->len;
	}
	return 1;
}

SEC("cgroup_skb/ingress")
int skb_ingress(struct __sk_buff *skb)
{
	return guard(skb, SLOT_INGRESS);
}

SEC("cgroup_skb/egress")
int skb_egress(struct __sk_buff *skb)
{
	return guard(skb, SLOT_EGRESS);
}
