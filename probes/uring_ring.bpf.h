/* uring_ring.bpf.h: the state of an io_uring instance that both io_uring files keep: its entry
 * in zc_rings (struct zc_ring: counters per proto, socket, sampling, chain state), its failed
 * sends (zc_uring_failed: their notifications are no verdicts), and the send-time copy reason of
 * a notification no skb carried (zc_uring_send_copy). uring_send.bpf.c registers rings and counts
 * CQEs; uring_chain.bpf.h (uring_notif) gives verdicts into them; zc_kernel.bpf.c counts a ring's
 * software-GSO copies (zc_ring_early before the ring is registered). Included by uring_send.bpf.c,
 * uring_chain.bpf.h and zc_kernel.bpf.c. */
#ifndef ZC_URING_RING_BPF_H
#define ZC_URING_RING_BPF_H

#include "maps.bpf.h"
#include "predict.bpf.h"

#define ZC_IORING_CQE_F_MORE (1U << 1)
#define ZC_IORING_CQE_F_NOTIF (1U << 3)

BPF_HASH(zc_rings, u64, struct zc_ring, 4096);

/* fentry/kprobe with uring_notif compiled in: a notification is counted (with the bytes it
 * releases and its latency sample) where uring_notif gives its verdict, which has the ring's
 * entry at hand; its CQE program then leaves after the CQE's flags (one program's work less
 * per request). The tracepoint tier counts it at its CQE. (If io_notif_tw_complete does not
 * attach, notifications go uncounted with their verdicts: the attach point's status says so.) */
#if defined(ZC_PROG_URING_NOTIF) && !defined(ZC_TIER_TRACEPOINT)
#define ZC_NOTIF_COUNTED_AT_COMPLETION 1
#endif

/* Software-GSO copies (zc_kernel's skb_segment) of a ring not registered yet: a ring's first
 * sends are transmitted, and may be segmented, before their CQEs register it (up to a batch of
 * submissions). Taken into its entry when it is (zc_ring_take_early); a ring never registered (not
 * traced) ages out, and io_uring_create forgets a reused address's. */
#ifdef ZC_PROG_ZC_KERNEL /* only zc_kernel (fentry/kprobe) fills it */
struct zc_ring_early {
	u64 copies;
	u64 bytes;
	u8 proto;
};
BPF_TABLE("lru_hash", u64, struct zc_ring_early, zc_ring_early, 1024);
#endif

struct zc_ureq {
	u64 ctx;
	u64 user_data;
};
BPF_HASH(zc_uring_failed, struct zc_ureq, u8, 4096);

/* The ring's counters of `proto`: a constant offset per protocol, so that no verifier has to
 * bound proto * ZC_NR_COUNTERS + counter (6.1's rejected that arithmetic on a path it could not
 * tell was impossible). */
static __always_inline u64 *zc_ring_counters(struct zc_ring *ring, u8 proto)
{
	if (proto == ZC_PROTO_TCP)
		return &ring->c[ZC_PROTO_TCP * ZC_NR_COUNTERS];
	if (proto == ZC_PROTO_UDP)
		return &ring->c[ZC_PROTO_UDP * ZC_NR_COUNTERS];
	return &ring->c[ZC_PROTO_OTHER * ZC_NR_COUNTERS];
}

static __always_inline void zc_ring_add(struct zc_ring *ring, u8 proto, int counter, u64 n)
{
	__sync_fetch_and_add(&zc_ring_counters(ring, proto)[counter], n);
}

/* The bytes a notification releases: the average of the sends of the ring's protocol still
 * waiting for theirs (exact for sends of one size; the last one takes what is left). Read off
 * the counters: a successful send always has a notification to follow. */
static __always_inline u64 zc_uring_released(struct zc_ring *ring, u8 proto)
{
	u64 *c = zc_ring_counters(ring, proto);
	u64 waiting = c[ZC_REQUESTS] + ring->failed_notified - c[ZC_NOTIFICATIONS];
	u64 bytes = c[ZC_BYTES] - c[ZC_COMPLETED_BYTES];

	if ((s64)waiting <= 0 || (s64)bytes <= 0)
		return 0;
	return waiting > 1 ? bytes / waiting : bytes;
}

/* A notification of `ring` (its request's user_data): counted with the bytes it releases, and
 * the end of the ring's timed send if it is that one's. */
static __always_inline void zc_ring_notified(struct zc_ring *ring, u64 user_data)
{
	u8 proto = ring->proto;

	zc_ring_add(ring, proto, ZC_COMPLETED_BYTES, zc_uring_released(ring, proto));
	zc_ring_add(ring, proto, ZC_NOTIFICATIONS, 1);
	if (ring->sample_ts && ring->sample_id == user_data)
		zc_sample_done(ZC_API_IO_URING, &ring->sample_ts);
}

/* A ring just registered: the software-GSO copies of its sends from before (zc_ring_early). */
static __always_inline void zc_ring_take_early(struct zc_ring *ring, u64 ctx)
{
#ifdef ZC_PROG_ZC_KERNEL
	struct zc_ring_early *e = zc_ring_early.lookup(&ctx);

	if (!e)
		return;
	zc_ring_add(ring, e->proto, ZC_SW_GSO_COPIES, e->copies);
	zc_ring_add(ring, e->proto, ZC_SW_GSO_BYTES, e->bytes);
	zc_ring_early.delete(&ctx);
#endif
}

/* A ring's address free again (io_uring_create): a ring that never registered leaves nothing
 * in zc_ring_early for the new one. */
static __always_inline void zc_ring_forget_early(u64 ctx)
{
#ifdef ZC_PROG_ZC_KERNEL
	zc_ring_early.delete(&ctx);
#endif
}

/* True (and forgotten) if the notification (ctx, user_data) belongs to a failed send. */
static __always_inline int zc_uring_take_failed(struct zc_ring *ring, u64 ctx, u64 user_data)
{
	struct zc_ureq key = {.ctx = ctx, .user_data = user_data};

	if (!ring->failed || !zc_uring_failed.lookup(&key))
		return 0;
	zc_uring_failed.delete(&key);
	__sync_fetch_and_add(&ring->failed, -1);
	return 1;
}

/* The reason of a copied notification that no skb carried (zc_used unset: the kernel dropped the
 * request's msg_ubuf at send): the copy at send that MSG_ZEROCOPY's rule (zc_predict_copy) gives
 * for the ring's socket and route as they are now, with the length and MSG_MORE of the ring's
 * latest send (one after a send with MSG_MORE appended to the datagram that one left pending);
 * else io_uring_not_used. Read only for such notifications: sends pay two plain stores. */
static __always_inline u8 zc_uring_send_copy(struct zc_ring *ring)
{
	u32 ifindex = 0;
	u8 reason = ZC_R_NONE;

	if (ring && ring->sk) {
		u64 flags = (ring->more & 1 ? ZC_MSG_MORE : 0) | (ring->more & 2 ? ZC_SEND_APPENDS : 0);
		reason = zc_predict_copy((void *)ring->sk, zc_sk_dev((void *)ring->sk), ring->proto, ring->len,
					 flags, &ifindex);
	}
	return reason ? reason : ZC_R_IO_URING_NOT_USED;
}

#endif /* ZC_URING_RING_BPF_H */
