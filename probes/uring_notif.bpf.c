/* io_uring zerocopy verdicts from the kernel's notification path (fentry/kprobe tiers).
 *
 * io_tx_ubuf_complete(skb, uarg, success) runs for every skb that held the notification's
 * ubuf_info; io_notif_tw_complete(notif) posts the notification CQE(s) (a chain of linked
 * notifications since 6.10). We mirror the kernel's REPORT_USAGE rule — copied if any skb
 * was copied or none carried the pages — for every request, with or without REPORT_USAGE.
 * Uses zc_rings and zc_uring_take_failed of uring_send.bpf.c (loaded on every tier).
 */

#define ZC_ND_USED 1
#define ZC_ND_COPIED 2
#define ZC_MAX_CHAIN 16

BPF_HASH(zc_notif_flags, u64, u8, 65536);

ZC_KFUNC3(io_tx_ubuf_complete, skb, uarg, success)
{
	u64 nd = (u64)uarg - ZC_OFF_io_notif_data_uarg;
	u8 zero = 0, *flags = zc_notif_flags.lookup_or_try_init(&nd, &zero);

	if (!flags)
		return 0;
	if (((u64)success & 0xff) && skb)
		*flags |= ZC_ND_USED;
	else if (!((u64)success & 0xff))
		*flags |= ZC_ND_COPIED;
	return 0;
}

ZC_KFUNC1(io_notif_tw_complete, notif)
{
	u64 nd = (u64)notif + ZC_OFF_io_kiocb_cmd;

	for (int i = 0; i < ZC_MAX_CHAIN && nd; i++) {
		u64 req = nd - ZC_OFF_io_kiocb_cmd, ctx = 0, user_data = 0;
		u8 *flagsp = zc_notif_flags.lookup(&nd), flags = flagsp ? *flagsp : 0;

		zc_notif_flags.delete(&nd);
		ZC_READ(ctx, (void *)req, ZC_OFF_io_kiocb_ctx);
		ZC_READ(user_data, (void *)req, ZC_OFF_io_kiocb_cqe_user_data);
		struct zc_ring *ring = zc_rings.lookup(&ctx);
		u64 uarg = nd + ZC_OFF_io_notif_data_uarg;
		int *stackid = zc_late_copies.lookup(&uarg), late_stack = stackid ? *stackid : -1;
		if (stackid)
			zc_late_copies.delete(&uarg);
		if (ring && !zc_uring_take_failed(ctx, user_data)) {
			struct zc_stats *s = zc_stats_get(ring->tgid, ZC_API_IO_URING, ring->proto, 0);
			zc_latency(ZC_API_IO_URING, ctx, user_data);
			if (!(flags & ZC_ND_COPIED) && (flags & ZC_ND_USED)) {
				zc_add(s, ZC_ZEROCOPIED, 1);
			} else {
				zc_add(s, ZC_COPIED, 1);
				zc_reason_add(ring->tgid, ZC_API_IO_URING, ring->proto,
					      stackid ? ZC_R_LATE_COPY :
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
