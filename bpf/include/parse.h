/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * L3/L4 header parser shared by the tc and cgroup_skb programs.
 * Needs vmlinux.h, bpf_helpers.h, bpf_endian.h and bpf_consts.h included first.
 */
#ifndef MESH_BPF_PARSE_H
#define MESH_BPF_PARSE_H

struct pkt_info {
	__u8 family;     /* AF_INET or AF_INET6 */
	__u8 proto;      /* IPv4 protocol, or the IPv6 header's next header (extension headers are not walked) */
	__u16 sport;     /* host order; 0 unless TCP/UDP with its ports in this packet */
	__u16 dport;     /* host order */
	__u8 saddr[16];  /* IPv4 uses the first 4 bytes */
	__u8 daddr[16];
};

/*
 * Parses the IP header at nh_off; l3_proto is the ethertype in network order.
 * Returns 0 when pi describes an IPv4/IPv6 packet, -1 for anything else (including a truncated IP header).
 * bpf_skb_load_bytes rather than direct packet access: one code path for both program types,
 * and it reads past the linear head of non-linear skbs.
 */
static __always_inline int parse_l3(struct __sk_buff *skb, __u32 nh_off, __u16 l3_proto, struct pkt_info *pi)
{
	__u32 l4_off;
	__be16 ports[2];

	__builtin_memset(pi, 0, sizeof(*pi));

	if (l3_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, nh_off, &ip, sizeof(ip)))
			return -1;
		if (ip.version != 4 || ip.ihl < 5)
			return -1;
		pi->family = AF_INET;
		pi->proto = ip.protocol;
		__builtin_memcpy(pi->saddr, &ip.saddr, 4);
		__builtin_memcpy(pi->daddr, &ip.daddr, 4);
		/* Only the first fragment carries the L4 header. */
		if (ip.frag_off & bpf_htons(IP_OFFSET))
			return 0;
		l4_off = nh_off + ip.ihl * 4;
	} else if (l3_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, nh_off, &ip6, sizeof(ip6)))
			return -1;
		if (ip6.version != 6)
			return -1;
		pi->family = AF_INET6;
		pi->proto = ip6.nexthdr;
		__builtin_memcpy(pi->saddr, &ip6.saddr, 16);
		__builtin_memcpy(pi->daddr, &ip6.daddr, 16);
		l4_off = nh_off + sizeof(ip6);
	} else {
		return -1;
	}

	if (pi->proto != IPPROTO_TCP && pi->proto != IPPROTO_UDP)
		return 0;
	/* TCP and UDP both start with source then destination port; a truncated L4 header leaves them 0. */
	if (bpf_skb_load_bytes(skb, l4_off, ports, sizeof(ports)) == 0) {
		pi->sport = bpf_ntohs(ports[0]);
		pi->dport = bpf_ntohs(ports[1]);
	}
	return 0;
}

/* tc: skb data starts at the Ethernet header; the ethertype is read from the frame itself. */
static __always_inline int parse_tc(struct __sk_buff *skb, struct pkt_info *pi)
{
	__be16 h_proto;

	if (bpf_skb_load_bytes(skb, __builtin_offsetof(struct ethhdr, h_proto), &h_proto, sizeof(h_proto)))
		return -1;
	return parse_l3(skb, ETH_HLEN, h_proto, pi);
}

/* cgroup_skb: skb data starts at the network header, and skb->protocol names it. */
static __always_inline int parse_cgroup_skb(struct __sk_buff *skb, struct pkt_info *pi)
{
	return parse_l3(skb, 0, (__u16)skb->protocol, pi);
}

#endif /* MESH_BPF_PARSE_H */
