/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Constants the BPF programs use that vmlinux.h lacks: BTF carries types and enums, never #defines. */
#ifndef MESH_BPF_CONSTS_H
#define MESH_BPF_CONSTS_H

/* tc verdicts (uapi linux/pkt_cls.h) */
#ifndef TC_ACT_OK
#define TC_ACT_OK 0
#endif
#ifndef TC_ACT_SHOT
#define TC_ACT_SHOT 2
#endif

/* Ethernet (uapi linux/if_ether.h) */
#ifndef ETH_HLEN
#define ETH_HLEN 14
#endif
#ifndef ETH_P_IP
#define ETH_P_IP 0x0800
#endif
#ifndef ETH_P_IPV6
#define ETH_P_IPV6 0x86DD
#endif

/* Address families (linux/socket.h) */
#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* IPv4 fragment offset field (net/ip.h), host order */
#ifndef IP_OFFSET
#define IP_OFFSET 0x1FFF
#endif

/* IPv6 extension headers (uapi linux/in6.h) */
#ifndef IPPROTO_HOPOPTS
#define IPPROTO_HOPOPTS 0
#endif
#ifndef IPPROTO_ROUTING
#define IPPROTO_ROUTING 43
#endif
#ifndef IPPROTO_DSTOPTS
#define IPPROTO_DSTOPTS 60
#endif

/* errno (uapi asm-generic/errno.h) */
#ifndef ECONNREFUSED
#define ECONNREFUSED 111
#endif

#endif /* MESH_BPF_CONSTS_H */
