/* Evidence of local delivery for the tracepoint tier, which cannot see skb_copy_ubufs.
 *
 * A zerocopy skb reaching __netif_receive_skb_core (loopback, a veth peer) is about to be
 * copied by skb_orphan_frags_rx. Its ubuf_info names the sender: a MSG_ZEROCOPY socket (the
 * notification skb around the uarg holds the socket) or an io_uring notification (whose CQE
 * takes the evidence). Runs for every received packet: two reads (skb head and end,
 * skb_shinfo()->flags) for one that is not zerocopy.
 */

RAW_TRACEPOINT_PROBE(netif_receive_skb)
{
	void *skb = (void *)ctx->args[0];
	u64 uarg = zc_skb_uarg(skb), sk = 0;

	if (!uarg)
		return 0;
	ZC_READ(sk, uarg - ZC_OFF_sk_buff_cb, ZC_OFF_sk_buff_sk);
	struct zc_sock *st = zc_socks.lookup(&sk);
	if (st) {
		st->late_reason = ZC_R_LOCAL_DELIVERY;
		return 0;
	}
	/* Else an io_uring notification (or another zerocopy skb, which nobody asks about: it ages
	 * out): evidence about this notification alone, taken when its CQE says copied. */
	struct zc_late late = {.stackid = -1, .reason = ZC_R_LOCAL_DELIVERY};
	zc_late_copies.insert(&uarg, &late);
	return 0;
}
