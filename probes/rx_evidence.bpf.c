/* Evidence of local delivery for the tracepoint tier, which cannot see skb_copy_ubufs.
 *
 * A zerocopy skb reaching __netif_receive_skb_core (loopback, a veth peer) is about to be
 * copied by skb_orphan_frags_rx. Its ubuf_info names the sender: a MSG_ZEROCOPY socket (the
 * notification skb around the uarg holds the socket) or an io_uring ring (the notification
 * request holds the ring). Runs for every received packet: two reads (skb head and end,
 * skb_shinfo()->flags) for one that is not zerocopy.
 */

RAW_TRACEPOINT_PROBE(netif_receive_skb)
{
	void *skb = (void *)ctx->args[0];
	u64 uarg = zc_skb_uarg(skb), sk = 0, ring_ctx = 0;

	if (!uarg)
		return 0;
	ZC_READ(sk, uarg - ZC_OFF_sk_buff_cb, ZC_OFF_sk_buff_sk);
	struct zc_sock *st = zc_socks.lookup(&sk);
	if (st) {
		st->late_reason = ZC_R_LOCAL_DELIVERY;
		return 0;
	}
	u64 req = uarg - ZC_OFF_io_notif_data_uarg - ZC_OFF_io_kiocb_cmd;
	ZC_READ(ring_ctx, req, ZC_OFF_io_kiocb_ctx);
	struct zc_ring *ring = zc_rings.lookup(&ring_ctx);
	if (ring)
		ring->late_reason = ZC_R_LOCAL_DELIVERY;
	return 0;
}
