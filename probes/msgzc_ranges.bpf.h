/* msgzc_ranges.bpf.h: a completed MSG_ZEROCOPY notification range (zc_msgzc_range) counted
 * into its socket (zc_socks) and process, and the reasons of its copied ids (zc_range_reasons,
 * whose last resort differs by tier: ZC_TIER_TRACEPOINT). Included by msgzc_errqueue.bpf.c,
 * msgzc_callback.bpf.c and kernel_events.bpf.c. */
#ifndef ZC_MSGZC_RANGES_BPF_H
#define ZC_MSGZC_RANGES_BPF_H

#include "maps.bpf.h"
#include "predict.bpf.h"

/* How many of the ids lo..hi are in a..b (ids wrap: distances taken from lo). */
static __always_inline u32 zc_ids_within(u32 lo, u32 hi, u32 a, u32 b)
{
	s32 from = (s32)(a - lo), to = (s32)(b - lo), last = (s32)(hi - lo);

	if (from < 0)
		from = 0;
	if (to > last)
		to = last;
	return to >= from ? (u32)(to - from) + 1 : 0;
}

/* The reasons of a copied range lo..hi, each id by evidence about its own send: the send-time
 * copy the route predicted for it (append_prev before append_since, append_reason from there:
 * it comes first, and a later copy of what was already copied is not the cause), else the late
 * copy seen for this range (`late`, with its stack: fentry/kprobe), else local delivery seen
 * for it (tracepoint tier), else what the socket's device and flags say now (tracepoint tier),
 * else unknown. */
static __always_inline void zc_range_reasons(struct zc_sock *st, void *sk, u32 lo, u32 hi, u8 late,
					     int stackid)
{
	u32 n = hi - lo + 1, unexplained = 0, local = 0;
	s32 d = (s32)(st->append_since - lo);
	u32 before = d <= 0 ? 0 : (u32)d >= n ? n : (u32)d; /* ids sent before the current prediction */

	if (before && st->append_prev)
		zc_reason_add(st->tgid, ZC_API_MSG_ZEROCOPY, st->proto, st->append_prev, -1, before);
	else if (before) {
		unexplained += before;
		if (st->local)
			local += zc_ids_within(lo, lo + before - 1, st->local_lo, st->local_hi);
	}
	if (n > before && st->append_reason)
		zc_reason_add(st->tgid, ZC_API_MSG_ZEROCOPY, st->proto, st->append_reason, -1, n - before);
	else if (n > before) {
		unexplained += n - before;
		if (st->local)
			local += zc_ids_within(lo + before, hi, st->local_lo, st->local_hi);
	}
	if (unexplained && late) {
		zc_reason_add(st->tgid, ZC_API_MSG_ZEROCOPY, st->proto, late, stackid, unexplained);
		return;
	}
	if (local)
		zc_reason_add(st->tgid, ZC_API_MSG_ZEROCOPY, st->proto, ZC_R_LOCAL_DELIVERY, -1, local);
	if (unexplained <= local)
		return;
	u8 reason = ZC_R_UNKNOWN;
#ifdef ZC_TIER_TRACEPOINT
	u8 now = zc_predict_late(sk, zc_sk_dev(sk));
	if (now)
		reason = now;
#endif
	zc_reason_add(st->tgid, ZC_API_MSG_ZEROCOPY, st->proto, reason, -1, unexplained - local);
}

/* The verdict of ids lo..hi: zerocopied or copied, in the process's row and the socket's, and the
 * reasons of copied ones. */
static __always_inline void zc_range_verdict(struct zc_sock *st, struct zc_stats *s, u64 sk, u32 lo, u32 hi,
					     int copied, u8 late, int stackid)
{
	u64 n = (u64)(hi - lo) + 1;

	if (!copied) {
		zc_add(s, ZC_ZEROCOPIED, n);
		__sync_fetch_and_add(&st->zerocopied, n);
		return;
	}
	zc_add(s, ZC_COPIED, n);
	__sync_fetch_and_add(&st->copied, n);
	zc_range_reasons(st, (void *)sk, lo, hi, late, stackid);
}

/* A completed MSG_ZEROCOPY notification range lo..hi (inclusive ids) of socket sk.
 * `verdict`: this tier takes its verdict from here (else only count what the app read);
 * `late`/`stackid`: the reason and stack of a late copy seen for this range (fentry/kprobe
 * tiers), else ZC_R_NONE. `bytes`: the range's bytes as the kernel's bytelen counts them, which
 * for UDP holds an 8-byte header for each of its `bytelen_ids` ids. */
static __always_inline void zc_msgzc_range(u64 sk, u32 lo, u32 hi, int copied, int verdict,
					   int read, u8 late, int stackid, u64 bytes, u32 bytelen_ids)
{
	struct zc_sock *st = zc_socks.lookup(&sk);

	if (!st)
		return; /* a socket we never saw send */
	if (lo < st->first_id)
		lo = st->first_id; /* ids sent before tracing started */
	struct zc_stats *s = zc_stats_get(st->tgid, ZC_API_MSG_ZEROCOPY, st->proto, 0);
	if (!s || hi < lo)
		return;
	u64 n = (u64)(hi - lo) + 1;
	if (read)
		zc_add(s, ZC_READ_REQUESTS, n);
	if (!verdict) {
		if (!read)
			return;
		/* The callback's program ran before the kernel queued what the application reads now, so
		 * every id read has had its verdict, unless the kernel skipped that run (a kprobe while
		 * another BPF program ran on the CPU: netem's timer softirq inside a send's program).
		 * Ids read beyond the verdicts seen take this range's verdict (the kernel merges only
		 * adjacent ranges; its code is the first one's), with the socket's mean request size. */
		__sync_fetch_and_add(&st->read_ids, n);
		s64 missing = (s64)(st->read_ids - (st->zerocopied + st->copied));
		if (missing <= 0)
			return; /* (ids decided but never read, their notifications dropped, only lower it) */
		if ((u64)missing < n)
			n = (u64)missing;
		hi = lo + (u32)n - 1;
		bytes = st->requests ? st->bytes / st->requests * n : 0;
		zc_kevents_add(ZC_KEV_ERRQUEUE_VERDICT, n, bytes);
		zc_add(s, ZC_COMPLETED_BYTES, bytes);
		zc_range_verdict(st, s, sk, lo, hi, copied, ZC_R_NONE, -1);
		return;
	}
	zc_add(s, ZC_NOTIFICATIONS, 1);
	if (st->proto == ZC_PROTO_UDP && bytes >= 8 * (u64)bytelen_ids)
		bytes -= 8 * (u64)bytelen_ids;
	zc_add(s, ZC_COMPLETED_BYTES, bytes);
	zc_hist(ZC_HIST_RANGE, ZC_API_MSG_ZEROCOPY, n);
	if (st->sample_ts && (u32)(st->sample_id - lo) <= hi - lo)
		zc_sample_done(ZC_API_MSG_ZEROCOPY, &st->sample_ts);
	zc_range_verdict(st, s, sk, lo, hi, copied, late, stackid);
}

#endif /* ZC_MSGZC_RANGES_BPF_H */
