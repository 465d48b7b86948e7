/* predict.bpf.h: the copies the kernel will make, read from a socket, its route and device:
 * at send time (zc_predict_copy: no SG, over the MTU, no checksum offload, a corked datagram)
 * and late (zc_predict_late: a packet tap, a tun device, a TX timestamp with payload). No maps.
 * Included by msgzc_send.bpf.c, msgzc_ranges.bpf.h and uring_ring.bpf.h. */
#ifndef ZC_PREDICT_BPF_H
#define ZC_PREDICT_BPF_H

#include "kread.bpf.h"

/* Would this send be copied at send time? (__ip_append_data / tcp_sendmsg_locked rules, read
 * from the socket's cached route: no SG -> copy; UDP needs CHECKSUM_PARTIAL, i.e. payload and
 * headers within the MTU (or UDP GSO), checksum offload, and a datagram that is not corked:
 * MSG_MORE or UDP_CORK without GSO, or an append to a pending corked datagram, checksums in
 * software; so does an IPv4 xfrm route without ESP TX checksum offload.) The one rule for
 * MSG_ZEROCOPY (msgzc_send, before the send) and io_uring (uring_send,
 * when a notification says no skb carried the pages): the kernel decides both alike (it leaves
 * an io_uring request's msg_ubuf unused where it would mark a MSG_ZEROCOPY range copied).
 * `flags`: the send's MSG_MORE, and ZC_SEND_APPENDS if it is known to append to a datagram an
 * earlier send left pending (the socket's own `pending` says so only before the send).
 * Also the egress ifindex. */
#define ZC_SEND_APPENDS (1ULL << 32) /* not a MSG_ flag: those are 32 bits */

static __always_inline u8 zc_predict_copy(void *sk, void *dev, u8 proto, u64 len, u64 flags, u32 *ifindex)
{
	u64 features = 0;
	u32 mtu = 0;
	u16 family = 0, gso = 0;

	if (dev) {
		ZC_READ(*ifindex, dev, ZC_OFF_net_device_ifindex);
		ZC_READ(features, dev, ZC_OFF_net_device_features);
		ZC_READ(mtu, dev, ZC_OFF_net_device_mtu);
	}
	if (proto == ZC_PROTO_TCP) {
		u64 caps = 0;
		ZC_READ(caps, sk, ZC_OFF_sock_sk_route_caps);
		return (caps >> ZC_NETIF_F_SG_BIT) & 1 ? ZC_R_NONE : ZC_R_NO_SG;
	}
	if (proto != ZC_PROTO_UDP || !dev)
		return ZC_R_NONE;
	if (!((features >> ZC_NETIF_F_SG_BIT) & 1))
		return ZC_R_NO_SG;
	ZC_READ(family, sk, ZC_OFF_sock_skc_family);
	ZC_READ(gso, sk, ZC_OFF_udp_sock_gso_size);
	u64 hdr = family == ZC_AF_INET6 ? 48 : 28;
	if (len + hdr > mtu && !gso)
		return ZC_R_OVER_MTU;
	u64 csum = (1ULL << ZC_NETIF_F_HW_CSUM_BIT) |
		   (1ULL << (family == ZC_AF_INET6 ? ZC_NETIF_F_IPV6_CSUM_BIT : ZC_NETIF_F_IP_CSUM_BIT));
	if (!(features & csum))
		return ZC_R_NO_CSUM_OFFLOAD;
	int pending = 0;
	u32 cork = 0;
	ZC_READ(pending, sk, ZC_OFF_udp_sock_pending);
#ifdef ZC_UDP_CORK_OFF
	ZC_READ(cork, sk, ZC_UDP_CORK_OFF);
	cork = (cork >> ZC_UDP_CORK_BIT) & 1;
#endif
	if (pending || (flags & ZC_SEND_APPENDS) || ((flags & ZC_MSG_MORE || cork) && !gso))
		return ZC_R_NO_CSUM_OFFLOAD;
	/* IPv4: an xfrm route's header room (dst->header_len: __ip_append_data's exthdrlen) needs
	 * ESP TX checksum offload for CHECKSUM_PARTIAL. (__ip6_append_data has no such term.) */
	if (family != ZC_AF_INET6 && !((features >> ZC_NETIF_F_HW_ESP_TX_CSUM_BIT) & 1)) {
		void *dst = 0;
		u16 header_len = 0;
		ZC_READ(dst, sk, ZC_OFF_sock_sk_dst_cache);
		if (dst)
			ZC_READ(header_len, dst, ZC_OFF_dst_entry_header_len);
		if (header_len)
			return ZC_R_IPSEC_NO_ESP_OFFLOAD;
	}
	return ZC_R_NONE;
}

/* The late copy the kernel makes of a socket's zerocopy skbs, from the state it checks when
 * they go out through `dev` (the route's device, or 0): dev_queue_xmit_nit copies for an active
 * packet tap, tun_net_xmit for its reader, __skb_tstamp_tx for a SCHED TX timestamp that carries
 * the payload (no SOF_TIMESTAMPING_OPT_TSONLY). The tracepoint tier's evidence, since it cannot
 * see skb_copy_ubufs: read when a COPIED notification arrives, so sends that were zero-copy
 * pay nothing. */
#define ZC_SOF_TIMESTAMPING_TX_SCHED (1U << 8)     /* uapi linux/net_tstamp.h */
#define ZC_SOF_TIMESTAMPING_OPT_TSONLY (1U << 11)

static __always_inline u8 zc_predict_late(void *sk, void *dev)
{
	u16 tsflags = 0; /* sk_tsflags: u16 before 6.6, u32 since; the flags are in the low half */

	if (dev && zc_tap_active(dev))
		return ZC_R_PACKET_TAP;
	if (dev && zc_dev_is_tun(dev))
		return ZC_R_TUN_TAP;
	ZC_READ(tsflags, sk, ZC_OFF_sock_sk_tsflags);
	if ((tsflags & ZC_SOF_TIMESTAMPING_TX_SCHED) && !(tsflags & ZC_SOF_TIMESTAMPING_OPT_TSONLY))
		return ZC_R_TX_TIMESTAMP;
	return ZC_R_NONE;
}

#endif /* ZC_PREDICT_BPF_H */
