// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A program run that reads what the split programs read and holds it, as a connect() slowed between its two
 * lookups would: it looks up the service entry keyed by hold_key, notes its version, spins until hold_ns have
 * passed, then looks up that version's first endpoint slot. Run by BPF_PROG_TEST_RUN in one process while
 * another applies a config that replaces the version (the slot must still be there), or waits for a grace
 * period (it must not end before this run does). Times are bpf_ktime_get_ns (CLOCK_MONOTONIC).
 * The split maps are the pinned ones of a SplitDatapath (split_maps.h: the split's own definitions).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "split.h"
#include "split_maps.h"
#include "testprogs.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hold_state);
} hold_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct svc_key);
} hold_key SEC(".maps");

static long spin(__u32 i, void *deadline)
{
	return bpf_ktime_get_ns() >= *(__u64 *)deadline;
}

/* One bpf_loop runs at most 2^23 iterations (~0.3 s here): loops of loops, until the deadline. */
static long spin_more(__u32 i, void *deadline)
{
	bpf_loop(1 << 23, spin, deadline, 0);
	return bpf_ktime_get_ns() >= *(__u64 *)deadline;
}

SEC("tc")
int hold_pick(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct hold_state *st = bpf_map_lookup_elem(&hold_state, &zero);
	struct svc_key *key = bpf_map_lookup_elem(&hold_key, &zero);
	struct svc_value *svc;
	struct ep_key ek = {};
	__u64 deadline;

	if (!st || !key)
		return 0;
	st->began = bpf_ktime_get_ns();
	svc = bpf_map_lookup_elem(&split_services, key);
	if (svc) {
		ek.svc_id = svc->id;
		ek.version = svc->version;
		st->version = ek.version;
		st->read = bpf_ktime_get_ns();
	}
	deadline = bpf_ktime_get_ns() + st->hold_ns;
	bpf_loop(1 << 10, spin_more, &deadline, 0);
	if (svc)
		st->found = bpf_map_lookup_elem(&split_endpoints, &ek) != NULL;
	st->ended = bpf_ktime_get_ns();
	return 0;
}
