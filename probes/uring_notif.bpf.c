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
 * A chain is walked when it completes, up to ZC_MAX_CHAIN notifications (the verifier's limit);
 * the ring's CQEs walk the rest (zc_chain_resume). Nothing is left without its verdict.
 * The rings' state (zc_rings, zc_ring_add, zc_uring_take_failed) is uring_ring.bpf.h's; the
 * hand-over from the CQE programs of uring_send.bpf.c to the walkers here is uring_chain.bpf.h's.
 */

#include "kfunc.bpf.h"
#include "maps.bpf.h"
#include "uring_ring.bpf.h"
#include "uring_chain.bpf.h"

#define ZC_ND_USED 1
#define ZC_ND_COPIED 2
#define ZC_MAX_CHAIN 48 /* linked notifications walked per completion: 6.18's verifier refused 1,024, 96 or
			 * more once a walk step also took its spilled flag and counted copies at send, and
			 * 64 once it also read REPORT_USAGE's flags (56 loads: 48 leaves room) */
#define ZC_ND_SLOTS 4096

struct zc_nd_slot {
	u64 nd;    /* the io_notif_data holding the slot, or 0 */
	u64 flags; /* ZC_ND_USED / ZC_ND_COPIED */
};
BPF_ARRAY(zc_nd_slots, struct zc_nd_slot, ZC_ND_SLOTS);
BPF_HASH(zc_nd_spill, u64, u64, 16384);
/* Entries in zc_nd_spill: while there are any, a notification found in its slot is looked for
 * there too (its first skb may have spilled while another notification held the slot, which was
 * freed before its next skb claimed it). */
BPF_ARRAY(zc_nd_spilled, u64, 1);

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
			u64 *f = zc_nd_spill.lookup(&nd);
			if (!f) {
				u64 zero = 0;
				u32 z = 0;
				u64 *spilled = zc_nd_spilled.lookup(&z);
				if (!zc_nd_spill.insert(&nd, &zero) && spilled)
					__sync_fetch_and_add(spilled, 1);
				f = zc_nd_spill.lookup(&nd);
			}
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

/* The kernel's own flags of a REPORT_USAGE notification (io_notif_data's zc_used and zc_copied,
 * set by io_tx_ubuf_complete: what its CQE says) stand in for ours, `flags`, which miss the skb
 * callback runs the kernel skipped (kprobe tier: an skb freed in a softirq that interrupted
 * another BPF program on the CPU, as netem's timer does inside a send's program). Read only where
 * ours do not say zero-copy: a skipped copy among an skb's seen success stays unseen (counted in
 * recursion_misses on 6.7+). Without REPORT_USAGE the kernel keeps no flags: ours stand. */
#define ZC_ND_USED_AT (ZC_OFF_io_notif_data_zc_used - ZC_OFF_io_notif_data_zc_report)
#define ZC_ND_COPIED_AT (ZC_OFF_io_notif_data_zc_copied - ZC_OFF_io_notif_data_zc_report)
#if ZC_ND_USED_AT <= 0 || ZC_ND_USED_AT > 3 || ZC_ND_COPIED_AT <= 0 || ZC_ND_COPIED_AT > 3
#error "io_notif_data's zc_used or zc_copied not in the 4 bytes from zc_report (docs/kernel.md)"
#endif
static __always_inline u64 zc_nd_reported(u64 nd, u64 flags)
{
	u32 word = 0;

	ZC_READ(word, (void *)nd, ZC_OFF_io_notif_data_zc_report);
	if (!(word & 0xff))
		return flags;
	u64 kernel = ((word >> (8 * ZC_ND_USED_AT)) & 0xff ? ZC_ND_USED : 0) |
		     ((word >> (8 * ZC_ND_COPIED_AT)) & 0xff ? ZC_ND_COPIED : 0);
	if (kernel != flags)
		zc_kevents_add(ZC_KEV_REPORT_USAGE_VERDICT, 1, 0);
	return kernel;
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
		u32 z = 0;
		u64 *spilled = zc_nd_spilled.lookup(&z);
		if (!spilled || !*spilled)
			return flags;
	}
	f = zc_nd_spill.lookup(&nd);
	if (!f)
		return flags;
	flags |= *f;
	if (!zc_nd_spill.delete(&nd)) {
		u32 z = 0;
		u64 *spilled = zc_nd_spilled.lookup(&z);
		if (spilled)
			__sync_fetch_and_add(spilled, -1);
	}
	return flags;
}

/* A chain walk's state: the ring of the latest notification (looked up again only when the
 * ring changes) and the carrier's reason: that of the latest member with skbs of its own
 * (its late copy, or ZC_R_LINKED_NOTIFICATION if they were not copied). A member without skbs
 * of its own had its pages in a carrier's skbs (io_link_skb): the kernel counts it copied
 * (no zc_used of its own), for the carrier's reason. The list puts every member after its
 * carrier; in a chain whose skbs met different fates the latest carrier stands for all.
 * Members no skb carried at all were copied at send: counted in their ring's `unsent`, their
 * reason found once after the walk (zc_walk_done: the route's, else io_uring_not_used), not in
 * every step of it (a count in map memory, not on the stack: the verifier would tell every count
 * apart along the walk). */
struct zc_walk {
	u64 ctx;
	struct zc_ring *ring;
	int carrier_stack;
	u8 carrier;
};

/* Notification `nd`'s verdict, its flags and late copy forgotten. */
static __always_inline void zc_nd_verdict(struct zc_walk *w, u64 nd)
{
	u64 req = nd - ZC_OFF_io_kiocb_cmd, ctx = 0, user_data = 0;
	u64 flags = zc_nd_take(nd);

	ZC_READ(ctx, (void *)req, ZC_OFF_io_kiocb_ctx);
	if (ctx != w->ctx) {
		w->ctx = ctx;
		w->ring = zc_rings.lookup(&ctx);
	}
	struct zc_ring *ring = w->ring;
	if (!ring)
		return;
	if (ring->failed || ring->sample_ts)
		ZC_READ(user_data, (void *)req, ZC_OFF_io_kiocb_cqe_user_data);
	zc_ring_notified(ring, user_data); /* (ZC_NOTIF_COUNTED_AT_COMPLETION: here, not at its CQE) */
	if (zc_uring_take_failed(ring, ctx, user_data))
		return;
	u8 proto = ring->proto;
	if (flags != ZC_ND_USED)
		flags = zc_nd_reported(nd, flags);
	if (flags == ZC_ND_USED) {
		w->carrier = ZC_R_LINKED_NOTIFICATION;
		w->carrier_stack = -1;
		zc_ring_add(ring, proto, ZC_ZEROCOPIED, 1);
		return;
	}
	int late_stack = -1;
	u8 late = zc_late_take(nd + ZC_OFF_io_notif_data_uarg, &late_stack);
	if (flags) { /* skbs of its own */
		if (!late && (flags & ZC_ND_COPIED))
			late = ZC_R_UNKNOWN;
		w->carrier = late;
		w->carrier_stack = late_stack;
	} else if (!late && w->carrier) { /* no skb: a linked member's pages rode in its carrier's */
		late = w->carrier;
		late_stack = w->carrier_stack;
	} else if (!late) { /* no skb carried its pages: copied at send */
		zc_ring_add(ring, proto, ZC_COPIED, 1);
		__sync_fetch_and_add(&ring->unsent, 1);
		return;
	}
	zc_ring_add(ring, proto, ZC_COPIED, 1);
	zc_reason_add(ring->tgid, ZC_API_IO_URING, proto, late, late_stack, 1);
}

/* After a walk: the reason of its members copied at send (the members of one chain share a ring). */
static __always_inline void zc_walk_done(struct zc_walk *w)
{
	struct zc_ring *ring = w->ring;
	u32 n = ring ? ring->unsent : 0;

	if (!n)
		return;
	__sync_fetch_and_add(&ring->unsent, -n); /* what another CPU's walk added meanwhile stays */
	zc_reason_add(ring->tgid, ZC_API_IO_URING, ring->proto, zc_uring_send_copy(ring), -1, n);
}

#ifdef ZC_NOTIF_CHAIN
/* Chains longer than ZC_MAX_CHAIN: the rest is walked from the ring's next notification CQEs
 * (zc_chain_resume, called by uring_send), ZC_CHAIN_STEP members each. Every member of the
 * chain posts its CQE (or overflows) before any of them is freed, one CQE per member: the walk
 * is over before its CQEs are. A ring's waiting chains form a queue, walked in the order they
 * completed: one batch of task work completes many chains before it posts their CQEs (eight
 * TCP connections sending in one submission: eight chains at once). */
#define ZC_CHAIN_STEP 32

struct zc_chain_cursor {
	u64 nd;   /* the next member without its verdict; 0 while a walker has it */
	u64 head; /* its chain's head (each member's io_notif_data.head: a check that it is one) */
	int carrier_stack;
	u8 carrier;
};
struct zc_chain_key {
	u64 ctx; /* the ring */
	u64 seq; /* the chain's place in the ring's queue */
};
struct zc_chain_queue {
	u64 first; /* the oldest waiting chain's seq */
	u64 last;  /* the next one's */
};
/* LRU: a ring that goes away with a chain waiting leaves its entries behind; the least recently
 * used make room (and a new ring at its address finds the chain's members gone: head check). */
BPF_TABLE("lru_hash", struct zc_chain_key, struct zc_chain_cursor, zc_chain_rest, 4096);
BPF_TABLE("lru_hash", u64, struct zc_chain_queue, zc_chain_queues, 1024); /* ring (ctx) -> its queue */
/* zc_chain_pending (chains waiting, on every ring), zc_chain_ring and the walkers' program arrays
 * are uring_chain.bpf.h's: uring_send's CQE programs tail-call the walkers below while a chain
 * waits. */

static __always_inline u64 zc_nd_next(u64 nd)
{
	u64 next = 0;

	ZC_READ(next, (void *)nd, ZC_OFF_io_notif_data_next);
	return next;
}

/* Chain `head` of ring `ctx` is walked up to `nd`: the rest waits for the ring's CQEs, at the
 * end of the ring's queue. */
static __always_inline void zc_chain_defer(u64 ctx, u64 head, u64 nd, struct zc_walk *w)
{
	struct zc_chain_queue fresh = {};
	struct zc_chain_queue *q = zc_chain_queues.lookup_or_try_init(&ctx, &fresh);
	u32 zero = 0;
	u64 *pending = zc_chain_pending.lookup(&zero);

	if (q && pending) {
		struct zc_chain_key key = {.ctx = ctx, .seq = __sync_fetch_and_add(&q->last, 1)};
		struct zc_chain_cursor cur = {.nd = nd, .head = head, .carrier = w->carrier,
					      .carrier_stack = w->carrier_stack};
		__sync_fetch_and_add(pending, 1);
		if (!zc_chain_rest.insert(&key, &cur))
			return;
		/* No room: its place stays empty (the walker steps over it). */
	}
	zc_lose(ZC_ERR_NOTIFS_FULL, 1, 0); /* the rest of the chain gets no verdict */
}

/* A notification CQE of ring `ctx` (posted or overflowed): walk on the oldest chain of it that
 * waits, ZC_CHAIN_STEP members. */
static __always_inline void zc_chain_resume(u64 ctx)
{
	u32 zero = 0;
	u64 *pending = zc_chain_pending.lookup(&zero);
	struct zc_chain_queue *q = zc_chain_queues.lookup(&ctx);

	if (!pending || !q)
		return;
	struct zc_chain_key key = {.ctx = ctx, .seq = q->first};
	if (key.seq == q->last)
		return; /* none waits on this ring */
	struct zc_chain_cursor *cur = zc_chain_rest.lookup(&key);
	if (!cur) { /* an empty place (no room at its defer): step over it */
		if (__sync_val_compare_and_swap(&q->first, key.seq, key.seq + 1) == key.seq)
			__sync_fetch_and_add(pending, -1);
		return;
	}
	u64 nd = cur->nd;
	if (!nd || __sync_val_compare_and_swap(&cur->nd, nd, 0) != nd)
		return; /* another CPU's walker has it */
	struct zc_walk w = {.carrier = cur->carrier, .carrier_stack = cur->carrier_stack};
	u64 head = 0;
#pragma clang loop unroll(disable)
	for (int i = 0; i < ZC_CHAIN_STEP && nd; i++) {
		ZC_READ(head, (void *)nd, ZC_OFF_io_notif_data_head);
		if (head != cur->head) { /* not a member any more: its ring went away mid-walk */
			zc_lose(ZC_ERR_NOTIFS_FULL, 1, 0);
			nd = 0;
			break;
		}
		zc_nd_verdict(&w, nd);
		nd = zc_nd_next(nd);
	}
	zc_walk_done(&w);
	if (nd) {
		cur->carrier = w.carrier;
		cur->carrier_stack = w.carrier_stack;
		cur->nd = nd; /* handed back: the next CQE's walker takes it */
		return;
	}
	zc_chain_rest.delete(&key);
	__sync_fetch_and_add(&q->first, 1);
	__sync_fetch_and_add(pending, -1);
}

/* The walkers uring_send's CQE programs tail-call (put in zc_chain_walker_raw/_tp by the loader,
 * as the manifest's tail_call of uring_notif says):
 * one of each program type, the same work. */
static __always_inline int zc_chain_walk(void)
{
	u32 zero = 0;
	u64 *ring = zc_chain_ring.lookup(&zero);

	if (ring)
		zc_chain_resume(*ring);
	return 0;
}

int zc_chain_walk_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return zc_chain_walk();
}

int zc_chain_walk_tp(void *ctx)
{
	return zc_chain_walk();
}
#endif

ZC_KFUNC1(io_notif_tw_complete, notif)
{
	u64 nd = zc_scalar((u64)notif) + ZC_OFF_io_kiocb_cmd;
	struct zc_walk w = {.carrier_stack = -1};

	zc_nd_verdict(&w, nd);
#ifdef ZC_NOTIF_CHAIN
	u64 head = nd, ring_ctx = w.ctx;
	nd = zc_nd_next(nd);
	for (int i = 1; i < ZC_MAX_CHAIN && nd; i++) {
		zc_nd_verdict(&w, nd);
		nd = zc_nd_next(nd);
	}
	if (nd)
		zc_chain_defer(ring_ctx, head, nd, &w);
#endif
	zc_walk_done(&w);
	return 0;
}
