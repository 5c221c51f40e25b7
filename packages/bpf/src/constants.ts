/** Kernel UAPI enumerations (include/uapi/linux/bpf.h) as names, up to Linux 6.18. The build machine's
 *  headers are older than the kernels this runs on, so the tables live here rather than in native code. */

function table<const T extends readonly string[]>(names: T) {
  const byName = Object.fromEntries(names.map((n, i) => [n, i])) as { [K in T[number]]: number };
  return { names, byName };
}

export const programTypes = table([
  'unspec', 'socket_filter', 'kprobe', 'sched_cls', 'sched_act', 'tracepoint', 'xdp', 'perf_event',
  'cgroup_skb', 'cgroup_sock', 'lwt_in', 'lwt_out', 'lwt_xmit', 'sock_ops', 'sk_skb', 'cgroup_device',
  'sk_msg', 'raw_tracepoint', 'cgroup_sock_addr', 'lwt_seg6local', 'lirc_mode2', 'sk_reuseport',
  'flow_dissector', 'cgroup_sysctl', 'raw_tracepoint_writable', 'cgroup_sockopt', 'tracing', 'struct_ops',
  'ext', 'lsm', 'sk_lookup', 'syscall', 'netfilter',
] as const);
export type ProgramType = (typeof programTypes.names)[number];

export const mapTypes = table([
  'unspec', 'hash', 'array', 'prog_array', 'perf_event_array', 'percpu_hash', 'percpu_array', 'stack_trace',
  'cgroup_array', 'lru_hash', 'lru_percpu_hash', 'lpm_trie', 'array_of_maps', 'hash_of_maps', 'devmap',
  'sockmap', 'cpumap', 'xskmap', 'sockhash', 'cgroup_storage', 'reuseport_sockarray', 'percpu_cgroup_storage',
  'queue', 'stack', 'sk_storage', 'devmap_hash', 'struct_ops', 'ringbuf', 'inode_storage', 'task_storage',
  'bloom_filter', 'user_ringbuf', 'cgrp_storage', 'arena',
] as const);
export type MapType = (typeof mapTypes.names)[number];

export const attachTypes = table([
  'cgroup_inet_ingress', 'cgroup_inet_egress', 'cgroup_inet_sock_create', 'cgroup_sock_ops',
  'sk_skb_stream_parser', 'sk_skb_stream_verdict', 'cgroup_device', 'sk_msg_verdict', 'cgroup_inet4_bind',
  'cgroup_inet6_bind', 'cgroup_inet4_connect', 'cgroup_inet6_connect', 'cgroup_inet4_post_bind',
  'cgroup_inet6_post_bind', 'cgroup_udp4_sendmsg', 'cgroup_udp6_sendmsg', 'lirc_mode2', 'flow_dissector',
  'cgroup_sysctl', 'cgroup_udp4_recvmsg', 'cgroup_udp6_recvmsg', 'cgroup_getsockopt', 'cgroup_setsockopt',
  'trace_raw_tp', 'trace_fentry', 'trace_fexit', 'modify_return', 'lsm_mac', 'trace_iter',
  'cgroup_inet4_getpeername', 'cgroup_inet6_getpeername', 'cgroup_inet4_getsockname',
  'cgroup_inet6_getsockname', 'xdp_devmap', 'cgroup_inet_sock_release', 'xdp_cpumap', 'sk_lookup', 'xdp',
  'sk_skb_verdict', 'sk_reuseport_select', 'sk_reuseport_select_or_migrate', 'perf_event',
  'trace_kprobe_multi', 'lsm_cgroup', 'struct_ops', 'netfilter', 'tcx_ingress', 'tcx_egress',
  'trace_uprobe_multi', 'cgroup_unix_connect', 'cgroup_unix_sendmsg', 'cgroup_unix_recvmsg',
  'cgroup_unix_getpeername', 'cgroup_unix_getsockname', 'netkit_primary', 'netkit_peer',
  'trace_kprobe_session',
] as const);
export type AttachType = (typeof attachTypes.names)[number];

export const linkTypes = table([
  'unspec', 'raw_tracepoint', 'tracing', 'cgroup', 'iter', 'netns', 'xdp', 'perf_event', 'kprobe_multi',
  'struct_ops', 'netfilter', 'tcx', 'uprobe_multi', 'netkit', 'sockmap',
] as const);
export type LinkType = (typeof linkTypes.names)[number];

/** Map types whose values are one slot per possible CPU. */
export const perCpuMapTypes: ReadonlySet<MapType> = new Set([
  'percpu_hash', 'percpu_array', 'lru_percpu_hash', 'percpu_cgroup_storage',
]);

/** The attach types a cgroup accepts (BPF_PROG_ATTACH / cgroup links). */
export const cgroupAttachTypes: ReadonlySet<AttachType> = new Set(
  attachTypes.names.filter((n) => n.startsWith('cgroup_') || n === 'lsm_cgroup'),
);

/** Update flags of BPF_MAP_UPDATE_ELEM. */
export const updateFlags = { any: 0, noexist: 1, exist: 2 } as const;
export type UpdateFlag = keyof typeof updateFlags;
/** BPF_F_LOCK: update/lookup under the value's bpf_spin_lock. */
export const BPF_F_LOCK = 4;

export function nameOf<T extends readonly string[]>(t: { names: T }, n: number): T[number] | `unknown(${number})` {
  return t.names[n] ?? `unknown(${n})`;
}

/**
 * The attach type a program was loaded for. The kernel's field is 0 both for "none" (tc, xdp on old libbpf,
 * socket filters) and for cgroup_inet_ingress, so 0 counts only for cgroup_skb programs.
 */
export function expectedAttachType(programType: number, attachType: number): AttachType | undefined {
  if (attachType < 0) return undefined;
  if (attachType === 0 && programType !== programTypes.byName.cgroup_skb) return undefined;
  return attachTypes.names[attachType];
}
