/* Where the kernel copies zerocopy pages late (fentry/kprobe).
 *
 * skb_copy_ubufs keeps the kernel stack of each late copy: its caller is the reason
 * (local delivery, a packet tap, a TX timestamp, ...), resolved on the Python side; the stack
 * is remembered per notification (zc_late_copies) for the completion probes. A copy of an skb
 * a tc BPF program redirected (bpf_redirect.bpf.c) is ZC_R_BPF_REDIRECT whatever the copying
 * frame: the copy happens later, where the redirect delivered the skb (local delivery after
 * bpf_redirect(..., BPF_F_INGRESS), tun_net_xmit, ...), and the program chose that path.
 *
 * __pskb_pull_tail pulling every byte of a zerocopy skb's frags into its head ends with
 * skb_zcopy_clear(skb, false): the notification completes copied without skb_copy_ubufs (MSG_ZEROCOPY
 * and io_uring skbs carry SKBFL_DONT_ORPHAN). Who pulls names the reason: skb_checksum_help (a
 * checksum computed in software after the send: WireGuard before it encrypts, xfrm_output before
 * ESP, skb_csum_hwoffload_help for a device without checksum offload) linearizes frags that may
 * change under it (SKBFL_SHARED_FRAG, which zerocopy sets); validate_xmit_skb linearizes for a
 * device without scatter-gather (one a tc redirect reached); drivers call skb_linearize. Its
 * program records that copy like skb_copy_ubufs's, with its stack.
 *
 * skb_segment without scatter-gather (features lacking NETIF_F_SG: WireGuard's wg_xmit segments
 * with no features at all) copies a GSO skb's payload into linear segments and frees the
 * original normally: the notification says zero-copy although the payload was copied. Its
 * program records the copy site with its stack (kernel event sw_gso_copy), but not as the
 * notification's late copy: the verdict stays the kernel's. The copy is counted for its sender
 * too (ZC_SW_GSO_COPIES/_BYTES of its process row or ring, zc_sw_gso_owner).
 */

#include "kfunc.bpf.h"
#include "kread.bpf.h"
#include "maps.bpf.h"
#include "uring_ring.bpf.h"

struct zc_copy_site {
	u64 count;
	u64 bytes;
};
/* ZC_STACK_DEPTH frames (zctrace.h): the unwinding stops there. */
struct zc_stack {
	u64 ip[ZC_STACK_DEPTH];
};
BPF_TABLE("stacktrace", int, struct zc_stack, zc_copy_stacks, 4096);
BPF_HASH(zc_copy_sites, int, struct zc_copy_site, 1024);

/* One late copy of `skb`: its stack and copy site counted, and `uarg`'s (0: no notification)
 * first late copy remembered with `reason` for the completion probes. Returns skb->len. */
static __always_inline u32 zc_copy_record(void *ctx, void *skb, u64 uarg, u8 reason)
{
	u32 len = 0;
	/* REUSE: a new stack whose bucket is taken replaces it rather than getting no id */
	int stackid = zc_copy_stacks.get_stackid(ctx, BPF_F_REUSE_STACKID);
	struct zc_copy_site zero = {}, *site = zc_copy_sites.lookup_or_try_init(&stackid, &zero);

	if (uarg) {
		struct zc_late late = {.stackid = stackid, .reason = reason};
		zc_late_copies.insert(&uarg, &late);
	}
	ZC_READ(len, skb, ZC_OFF_sk_buff_len);
	if (site) {
		__sync_fetch_and_add(&site->count, 1);
		__sync_fetch_and_add(&site->bytes, len);
	}
	return len;
}

/* The reason of a late copy of zerocopy `skb` (notification `uarg`): ZC_R_BPF_REDIRECT where a BPF
 * program sent this skb where it is copied (bpf_redirect.bpf.c), else its stack's (ZC_R_LATE_COPY). */
static __always_inline u8 zc_late_reason(void *skb, u64 uarg)
{
	u64 key = (u64)skb, *redirected = zc_redirected.lookup(&key);
	u8 reason = ZC_R_LATE_COPY;

	if (redirected) {
		if (*redirected == uarg)
			reason = ZC_R_BPF_REDIRECT;
		zc_redirected.delete(&key);
	}
	return reason;
}

ZC_KFUNC1(skb_copy_ubufs, skb)
{
	u64 uarg = zc_skb_uarg(skb);

	zc_kevent(ZC_KEV_COPY_UBUFS, zc_copy_record(ctx, skb, uarg, uarg ? zc_late_reason(skb, uarg) : ZC_R_LATE_COPY));
	return 0;
}

/* The sender of a software-GSO copy of `bytes` of `skb`: a MSG_ZEROCOPY socket (the notification skb
 * around the ubuf_info holds it, as in rx_evidence) or else an io_uring notification (its
 * request's ring). Counted in that process's row; a copy of neither stays host-wide only. */
static __always_inline void zc_sw_gso_owner(void *skb, u64 uarg, u64 bytes)
{
	u64 sk = 0, ctx = 0;

	ZC_READ(sk, (void *)(uarg - ZC_OFF_sk_buff_cb), ZC_OFF_sk_buff_sk);
	struct zc_sock *st = sk ? zc_socks.lookup(&sk) : 0;
	if (st) {
		struct zc_stats *s = zc_stats_get(st->tgid, ZC_API_MSG_ZEROCOPY, st->proto, 0);
		zc_add(s, ZC_SW_GSO_COPIES, 1);
		zc_add(s, ZC_SW_GSO_BYTES, bytes);
		return;
	}
	ZC_READ(ctx, (void *)(uarg - ZC_OFF_io_notif_data_uarg - ZC_OFF_io_kiocb_cmd), ZC_OFF_io_kiocb_ctx);
	if ((s64)ctx >= 0)
		return; /* not a kernel address: not an io_uring request's either */
	struct zc_ring *ring = zc_rings.lookup(&ctx);
	if (ring) {
		zc_ring_add(ring, ring->proto, ZC_SW_GSO_COPIES, 1);
		zc_ring_add(ring, ring->proto, ZC_SW_GSO_BYTES, bytes);
		return;
	}
	/* Not registered yet (its first sends' CQEs are not posted): kept in zc_ring_early, under
	 * the protocol of the skb's socket, until its registration takes it (zc_ring_take_early). */
	u16 ipproto = 0;
	ZC_READ(sk, skb, ZC_OFF_sk_buff_sk);
	if (sk)
		ZC_READ(ipproto, (void *)sk, ZC_OFF_sock_sk_protocol);
	struct zc_ring_early fresh = {.proto = zc_proto_of(ipproto)};
	struct zc_ring_early *e = zc_ring_early.lookup_or_try_init(&ctx, &fresh);
	if (e) {
		__sync_fetch_and_add(&e->copies, 1);
		__sync_fetch_and_add(&e->bytes, bytes);
	}
}

/* A zerocopy skb with payload in frags segmented without SG: skb_segment copies that payload. */
ZC_KFUNC2(skb_segment, skb, features)
{
	void *shinfo;
	u32 data_len = 0;
	u8 flags = 0, nr_frags = 0;

	if ((u64)features & (1ULL << ZC_NETIF_F_SG_BIT))
		return 0; /* frags are referenced by the segments, not copied */
	shinfo = zc_skb_shinfo(skb);
	u64 uarg = zc_shinfo_uarg_flags(shinfo, &flags);
	if (!uarg)
		return 0;
	ZC_READ(nr_frags, shinfo, ZC_OFF_skb_shared_info_nr_frags);
	if (!nr_frags)
		return 0; /* the payload is in the head: nothing of the user's pages */
	ZC_READ(data_len, skb, ZC_OFF_sk_buff_data_len);
	zc_copy_record(ctx, skb, 0, ZC_R_NONE);
	zc_kevent(ZC_KEV_SW_GSO_COPY, data_len);
	zc_sw_gso_owner(skb, uarg, data_len);
	return 0;
}

/* __pskb_pull_tail(skb, delta) pulling all data_len bytes of a zerocopy skb into its head: a late
 * copy (the stack names the caller: reasons.py). Most calls, receive paths pulling headers, leave
 * after one read: delta short of data_len. */
ZC_KFUNC2(__pskb_pull_tail, skb, delta)
{
	u32 data_len = 0;

#ifdef ZC_TIER_FENTRY
	/* a typed argument here: a plain load the verifier checks against BTF, no helper call (this
	 * runs for every tail pull on the machine) */
	data_len = *(u32 *)((char *)skb + ZC_OFF_sk_buff_data_len);
#else
	ZC_READ(data_len, skb, ZC_OFF_sk_buff_data_len);
#endif
	if (!data_len || (s32)(u64)delta < (s32)data_len)
		return 0; /* a partial pull: the skb keeps frags and its notification */
	u64 uarg = zc_skb_uarg(skb);
	if (uarg)
		zc_copy_record(ctx, skb, uarg, zc_late_reason(skb, uarg));
	return 0;
}
