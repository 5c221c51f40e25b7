// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The least that per-connection state costs on the cgroup_skb hooks, as a yardstick for the metrics programs:
 * sockops gives every established TCP socket 8 bytes of socket storage, and the skb programs look it up on every
 * packet. With write_state set they also add the packet's length to it, so the storage's cache line is written
 * by whichever CPU handles the packet; unset, they only read it, and the line stays shared between CPUs.
 * bench:metrics runs both beside the metrics programs (which look up, read and write such a line per packet).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile __u8 write_state = 0;

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} sk_state SEC(".maps");

static __always_inline int touch(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	__u64 *v, seen;

	if (!sk)
		return 1;
	v = bpf_sk_storage_get(&sk_state, sk, 0, 0);
	if (!v)
		return 1;
	if (write_state) {
		*v += skb->len;
	} else {
		/* A read the compiler cannot drop: the value goes into a register the program then ignores. */
		seen = *v;
		asm volatile("" : : "r"(seen));
	}
	return 1;
}

SEC("cgroup_skb/egress")
int state_egress(struct __sk_buff *skb)
{
	return touch(skb);
}

SEC("cgroup_skb/ingress")
int state_ingress(struct __sk_buff *skb)
{
	return touch(skb);
}

SEC("sockops")
int state_sockops(struct bpf_sock_ops *skops)
{
	if (skops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB || skops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
		struct bpf_sock *sk = skops->sk;

		if (sk)
			bpf_sk_storage_get(&sk_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	}
	return 1;
}
