// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Calls a helper its program type is not offered (bpf_set_retval is for cgroup programs): feature probes must
 * name it. Never loaded. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int retval_from_tc(struct __sk_buff *skb)
{
	bpf_set_retval(-1);
	return 0;
}
