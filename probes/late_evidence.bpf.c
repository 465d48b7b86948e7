/* Evidence of late copies for the tracepoint tier, which cannot see skb_copy_ubufs.
 *
 * - Local delivery: a zerocopy skb reaching __netif_receive_skb_core (loopback, a veth peer)
 *   is about to be copied by skb_orphan_frags_rx.
 * - Packet tap: net_dev_start_xmit runs in xmit_one right after dev_queue_xmit_nit, which
 *   copied the frags for every AF_PACKET tap when a tap was active: one bound to the device
 *   (dev->ptype_all), or to every device (per netns since 6.15, host-wide before).
 * - tun/tap: tun_net_xmit copies the frags of every skb it queues for its reader; a tun
 *   device is one whose rtnl_link_ops is the tun driver's (kind "tun").
 * - TX timestamp: __dev_queue_xmit, where net_dev_queue fires, takes the SCHED timestamp of
 *   an skb that asks for one (SKBTX_SCHED_TSTAMP); unless the socket set
 *   SOF_TIMESTAMPING_OPT_TSONLY, the timestamp skb is a clone whose frags are copied.
 *
 * The skb's ubuf_info names the sender: a MSG_ZEROCOPY socket (the notification skb around the
 * uarg holds the socket) or an io_uring ring (the notification request holds the ring). Each
 * runs for every packet: one read of skb_shinfo()->flags.
 */

static __always_inline void zc_late_evidence(u64 uarg, u8 reason)
{
	u64 sk = 0, ring_ctx = 0;

	ZC_READ(sk, uarg - ZC_OFF_sk_buff_cb, ZC_OFF_sk_buff_sk);
	struct zc_sock *st = zc_socks.lookup(&sk);
	if (st) {
		st->late_reason = reason;
		return;
	}
	u64 req = uarg - ZC_OFF_io_notif_data_uarg - ZC_OFF_io_kiocb_cmd;
	ZC_READ(ring_ctx, req, ZC_OFF_io_kiocb_ctx);
	struct zc_ring *ring = zc_rings.lookup(&ring_ctx);
	if (ring)
		ring->late_reason = reason;
}

/* A list_head with entries: its next pointer is not itself. */
static __always_inline int zc_list_busy(u64 head)
{
	u64 next = 0;

	ZC_READ(next, (void *)head, 0);
	return next && next != head;
}

/* dev_nit_active(): an AF_PACKET tap sees the packets this device sends. */
static __always_inline int zc_tap_active(void *dev)
{
	if (zc_list_busy((u64)dev + ZC_OFF_net_device_ptype_all))
		return 1;
#if defined(ZC_NET_PTYPE_ALL_OFF)
	u64 net = 0;
	ZC_READ(net, dev, ZC_DEV_NET_OFF);
	return net && zc_list_busy(net + ZC_NET_PTYPE_ALL_OFF);
#elif defined(ZC_PTYPE_ALL_ADDR)
	return zc_list_busy(ZC_PTYPE_ALL_ADDR);
#else
	return 0; /* taps on every device unknown here: only device taps are proved */
#endif
}

/* A tun/tap device: its rtnl_link_ops->kind is "tun". */
static __always_inline int zc_dev_is_tun(void *dev)
{
	void *ops = 0, *kind = 0;
	char name[4] = {};

	ZC_READ(ops, dev, ZC_OFF_net_device_rtnl_link_ops);
	if (!ops)
		return 0;
	ZC_READ(kind, ops, ZC_OFF_rtnl_link_ops_kind);
	if (!kind || bpf_probe_read_kernel(name, sizeof(name), kind))
		return 0;
	return name[0] == 't' && name[1] == 'u' && name[2] == 'n' && name[3] == 0;
}

RAW_TRACEPOINT_PROBE(netif_receive_skb)
{
	u64 uarg = zc_skb_uarg((void *)ctx->args[0]);

	if (uarg)
		zc_late_evidence(uarg, ZC_R_LOCAL_DELIVERY);
	return 0;
}

RAW_TRACEPOINT_PROBE(net_dev_start_xmit)
{
	u64 uarg = zc_skb_uarg((void *)ctx->args[0]);

	void *dev = (void *)ctx->args[1];

	if (!uarg)
		return 0;
	if (zc_tap_active(dev)) /* dev_queue_xmit_nit ran first */
		zc_late_evidence(uarg, ZC_R_PACKET_TAP);
	else if (zc_dev_is_tun(dev))
		zc_late_evidence(uarg, ZC_R_TUN_TAP);
	return 0;
}

RAW_TRACEPOINT_PROBE(net_dev_queue)
{
	void *skb = (void *)ctx->args[0], *sk = 0, *shinfo = zc_skb_shinfo(skb);
	u8 tx_flags = 0;
	u16 tsflags = 0; /* sk_tsflags: u16 before 6.6, u32 since; the flag is in the low half */
	u64 uarg = zc_skb_uarg(skb);

	if (!uarg)
		return 0;
	ZC_READ(tx_flags, shinfo, ZC_OFF_skb_shared_info_tx_flags);
	if (!(tx_flags & ZC_SKBTX_SCHED_TSTAMP))
		return 0;
	ZC_READ(sk, skb, ZC_OFF_sk_buff_sk);
	if (!sk)
		return 0;
	ZC_READ(tsflags, sk, ZC_OFF_sock_sk_tsflags);
	if (!(tsflags & ZC_SOF_TIMESTAMPING_OPT_TSONLY))
		zc_late_evidence(uarg, ZC_R_TX_TIMESTAMP);
	return 0;
}
