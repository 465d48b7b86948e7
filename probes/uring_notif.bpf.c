/* io_uring zerocopy verdicts from the kernel's notification path (fentry/kprobe tiers).
 *
 * io_tx_ubuf_complete(skb, uarg, success) runs for every skb that held the notification's
 * ubuf_info; io_notif_tw_complete(notif) posts the notification CQE(s) (a chain of linked
 * notifications since 6.10). We mirror the kernel's REPORT_USAGE rule — copied if any skb
 * was copied or none carried the pages — for every request, with or without REPORT_USAGE.
 * Uses zc_rings, zc_ring_add and zc_uring_take_failed of uring_send.bpf.c (loaded on every tier).
 */

#define ZC_ND_USED 1
#define ZC_ND_COPIED 2
#define ZC_MAX_CHAIN 16

struct zc_nd {
	u8 flags;
	u8 proto; /* from the skb's socket: the notification request has none */
};
BPF_HASH(zc_notif_flags, u64, struct zc_nd, 65536);

ZC_KFUNC3(io_tx_ubuf_complete, skb, uarg, success)
{
	u64 nd = (u64)uarg - ZC_OFF_io_notif_data_uarg;
	struct zc_nd zero = {}, *st = zc_notif_flags.lookup_or_try_init(&nd, &zero);
	void *sk = 0;
	u16 ipproto = 0;

	if (!st)
		return 0;
	if (((u64)success & 0xff) && skb)
		st->flags |= ZC_ND_USED;
	else if (!((u64)success & 0xff))
		st->flags |= ZC_ND_COPIED;
	if (skb && !st->proto) {
		ZC_READ(sk, skb, ZC_OFF_sk_buff_sk);
		if (sk)
			ZC_READ(ipproto, sk, ZC_OFF_sock_sk_protocol);
		st->proto = zc_proto_of(ipproto);
	}
	return 0;
}

ZC_KFUNC1(io_notif_tw_complete, notif)
{
	u64 nd = (u64)notif + ZC_OFF_io_kiocb_cmd;

	for (int i = 0; i < ZC_MAX_CHAIN && nd; i++) {
		u64 req = nd - ZC_OFF_io_kiocb_cmd, ctx = 0, user_data = 0;
		struct zc_nd *ndp = zc_notif_flags.lookup(&nd);
		u8 flags = ndp ? ndp->flags : 0, proto = ndp ? ndp->proto : 0;

		zc_notif_flags.delete(&nd);
		ZC_READ(ctx, (void *)req, ZC_OFF_io_kiocb_ctx);
		ZC_READ(user_data, (void *)req, ZC_OFF_io_kiocb_cqe_user_data);
		struct zc_ring *ring = zc_rings.lookup(&ctx);
		int late_stack;
		u8 late = zc_late_take(nd + ZC_OFF_io_notif_data_uarg, &late_stack);
		if (ring && !zc_uring_take_failed(ring, ctx, user_data)) {
			if (!proto)
				proto = ring->proto;
			if (!(flags & ZC_ND_COPIED) && (flags & ZC_ND_USED)) {
				zc_ring_add(ring, proto, ZC_ZEROCOPIED, 1);
			} else {
				zc_ring_add(ring, proto, ZC_COPIED, 1);
				zc_reason_add(ring->tgid, ZC_API_IO_URING, proto,
					      late ? late :
					      (flags & ZC_ND_COPIED) ? ZC_R_UNKNOWN : ZC_R_IO_URING_NOT_USED,
					      late_stack, 1);
			}
		}
#ifdef ZC_NOTIF_CHAIN
		u64 next = 0;
		ZC_READ(next, (void *)nd, ZC_OFF_io_notif_data_next);
		nd = next;
#else
		nd = 0;
#endif
	}
	return 0;
}
