// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Deliberately invalid: reads packet data with no bounds check, so the verifier must reject it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int oob_read(struct __sk_buff *skb)
{
	__u8 *data = (__u8 *)(long)skb->data;

	return data[0];
}
