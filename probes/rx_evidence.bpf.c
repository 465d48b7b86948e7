/* Evidence of local delivery for the tracepoint tier, which cannot see skb_copy_ubufs.
 *
 * A zerocopy skb reaching __netif_receive_skb_core (loopback, a veth peer) is about to be
 * copied by skb_orphan_frags_rx. Its ubuf_info names the sender: a MSG_ZEROCOPY socket (the
 * notification skb around the uarg holds the socket) or an io_uring notification (whose CQE
 * takes the evidence). Runs for every received packet: two reads (skb head and end,
 * skb_shinfo()->flags) for one that is not zerocopy.
 */

#include "kread.bpf.h"
#include "maps.bpf.h"

RAW_TRACEPOINT_PROBE(netif_receive_skb)
{
	void *skb = (void *)ctx->args[0];
	u64 uarg = zc_skb_uarg(skb), sk = 0;

	if (!uarg)
		return 0;
	ZC_READ(sk, uarg - ZC_OFF_sk_buff_cb, ZC_OFF_sk_buff_sk);
	struct zc_sock *st = zc_socks.lookup(&sk);
	if (st) { /* the ids of this notification range were delivered locally */
		u32 id = 0;
		u16 len = 0;
		ZC_READ(id, (void *)uarg, ZC_OFF_ubuf_info_msgzc_id);
		ZC_READ(len, (void *)uarg, ZC_OFF_ubuf_info_msgzc_len);
		if (!len)
			return 0;
		u32 hi = id + len - 1;
		if (st->local && (s32)(id - st->local_hi) <= 1 && (s32)(hi - st->local_lo) >= -1) {
			if ((s32)(id - st->local_lo) < 0)
				st->local_lo = id;
			if ((s32)(hi - st->local_hi) > 0)
				st->local_hi = hi;
		} else { /* a new run: evidence about earlier sends does not carry over */
			st->local_lo = id;
			st->local_hi = hi;
			st->local = 1;
		}
		return 0;
	}
	/* Else an io_uring notification (or another zerocopy skb, which nobody asks about: it ages
	 * out): evidence about this notification alone, taken when its CQE says copied. */
	struct zc_late late = {.stackid = -1, .reason = ZC_R_LOCAL_DELIVERY};
	zc_late_copies.insert(&uarg, &late);
	return 0;
}
