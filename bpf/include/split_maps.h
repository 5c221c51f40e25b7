/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The split's service and endpoint tables, as bpf/split/split.bpf.c defines them and as any other program that
 * runs on the split's pinned maps must define them too (a pinned map is reused only when its type, key, value and
 * size match): the test program bpf/testprogs/split_hold.bpf.c. Sizes are the defaults; the agent sets them at load.
 */
#ifndef MESH_SPLIT_MAPS_H
#define MESH_SPLIT_MAPS_H

#include "split.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct svc_key);
	__type(value, struct svc_value);
} split_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct ep_key);
	__type(value, struct ep_value);
} split_endpoints SEC(".maps");

#endif
