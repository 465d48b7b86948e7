/* io_uring zerocopy verdicts from the kernel's notification path (fentry/kprobe tiers).
 *
 * io_tx_ubuf_complete(skb, uarg, success) runs for every skb that held the notification's
 * ubuf_info, and once more without an skb when the send flushes its notification;
 * io_notif_tw_complete(notif) posts the notification CQE(s) (a chain of linked notifications
 * since 6.10). We mirror the kernel's REPORT_USAGE rule — copied if any skb was copied or none
 * carried the pages — for every request, with or without REPORT_USAGE.
 *
 * Hot path: a notification's flags live in a direct-mapped array slot (its address hashed),
 * claimed with a compare-and-swap and freed when its CQE is posted: no map insert or delete per
 * request. A notification whose slot another one holds spills into a hash map.
 * Uses zc_rings, zc_ring_add and zc_uring_take_failed of uring_send.bpf.c (loaded on every tier).
 */

#define ZC_ND_USED 1
#define ZC_ND_COPIED 2
#define ZC_MAX_CHAIN 256 /* linked notifications walked per completion (6.18's verifier refuses 1,024; 512 passes) */
#define ZC_ND_SLOTS 4096

struct zc_nd_slot {
	u64 nd;    /* the io_notif_data holding the slot, or 0 */
	u64 flags; /* ZC_ND_USED / ZC_ND_COPIED */
};
BPF_ARRAY(zc_nd_slots, struct zc_nd_slot, ZC_ND_SLOTS);
BPF_HASH(zc_nd_spill, u64, u64, 16384);

static __always_inline u32 zc_nd_index(u64 nd)
{
	return (u32)((nd * 0x9E3779B97F4A7C15ULL) >> 52) & (ZC_ND_SLOTS - 1);
}

ZC_KFUNC3(io_tx_ubuf_complete, skb, uarg, success)
{
	u64 flag = ((u64)success & 0xff) ? (skb ? ZC_ND_USED : 0) : ZC_ND_COPIED;
	if (!flag)
		return 0; /* the send's own flush: nothing to tell */
	u64 nd = zc_scalar((u64)uarg) - ZC_OFF_io_notif_data_uarg;
	u32 i = zc_nd_index(nd);
	struct zc_nd_slot *slot = zc_nd_slots.lookup(&i);
	if (!slot)
		return 0;
	if (slot->nd != nd) {
		u64 held = __sync_val_compare_and_swap(&slot->nd, 0, nd);
		if (held && held != nd) { /* another notification's slot */
			u64 zero = 0, *f = zc_nd_spill.lookup_or_try_init(&nd, &zero);
			if (f)
				__sync_fetch_and_or(f, flag);
			else
				zc_lose(ZC_ERR_NOTIFS_FULL, 1, 0);
			return 0;
		}
	}
	__sync_fetch_and_or(&slot->flags, flag);
	return 0;
}

/* The flags of notification `nd`, forgotten (every skb has let go of it by now). */
static __always_inline u64 zc_nd_take(u64 nd)
{
	u32 i = zc_nd_index(nd);
	struct zc_nd_slot *slot = zc_nd_slots.lookup(&i);
	u64 flags = 0, *f;

	if (slot && slot->nd == nd) {
		flags = slot->flags;
		slot->flags = 0;
		slot->nd = 0;
		return flags;
	}
	f = zc_nd_spill.lookup(&nd);
	if (!f)
		return 0;
	flags = *f;
	zc_nd_spill.delete(&nd);
	return flags;
}

ZC_KFUNC1(io_notif_tw_complete, notif)
{
	u64 nd = zc_scalar((u64)notif) + ZC_OFF_io_kiocb_cmd;
	u8 head_late = 0; /* the chain head's late copy: its skbs carried the linked requests' pages */
	int head_stack = -1;

	for (int i = 0; i < ZC_MAX_CHAIN && nd; i++) {
		u64 req = nd - ZC_OFF_io_kiocb_cmd, ctx = 0, user_data = 0;
		u64 flags = zc_nd_take(nd);

		ZC_READ(ctx, (void *)req, ZC_OFF_io_kiocb_ctx);
		struct zc_ring *ring = zc_rings.lookup(&ctx);
		if (ring && ring->failed)
			ZC_READ(user_data, (void *)req, ZC_OFF_io_kiocb_cqe_user_data);
		if (ring && !zc_uring_take_failed(ring, ctx, user_data)) {
			u8 proto = ring->proto;
			if (flags == ZC_ND_USED) {
				zc_ring_add(ring, proto, ZC_ZEROCOPIED, 1);
			} else {
				int late_stack = -1;
				u8 late = zc_late_take(nd + ZC_OFF_io_notif_data_uarg, &late_stack);
				if (i == 0) {
					head_late = late;
					head_stack = late_stack;
				} else if (!late && !flags && head_late) { /* linked: no skb of its own */
					late = head_late;
					late_stack = head_stack;
				}
				zc_ring_add(ring, proto, ZC_COPIED, 1);
				zc_reason_add(ring->tgid, ZC_API_IO_URING, proto,
					      late ? late : (flags & ZC_ND_COPIED) ? ZC_R_UNKNOWN : ZC_R_IO_URING_NOT_USED,
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
	if (nd) /* a chain longer than ZC_MAX_CHAIN: the rest get no verdict */
		zc_lose(ZC_ERR_NOTIFS_FULL, 1, 0);
	return 0;
}
