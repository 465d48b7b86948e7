/* maps.bpf.h: the maps every probe shares and their row helpers: counters per (process, api,
 * proto) (zc_stats, zc_add), reasons (zc_reasons), histograms, kernel events, losses (zc_errors,
 * zc_lose), the traced processes (zc_targets), late copies per notification (zc_late_copies),
 * redirected skbs, and the latency sampling. The loader inlines it once per bcc module (bcc
 * rewrites map calls only in the main text). Included by every .bpf.c and by the headers that
 * count (msgzc_ranges, uring_ring, uring_chain). */
#ifndef ZC_MAPS_BPF_H
#define ZC_MAPS_BPF_H

#include <uapi/linux/ptrace.h>
#include "zctrace.h"

BPF_HASH(zc_stats, struct zc_key, struct zc_stats, 32768); /* rows of live processes: pid_max by default */
/* LRU: sockets are never seen closing; the least recently sending one makes room. */
BPF_TABLE("lru_hash", u64, struct zc_sock, zc_socks, 65536);
BPF_HASH(zc_reasons, struct zc_reason_key, u64, 4096);
BPF_ARRAY(zc_hists, u64, ZC_NR_HISTS * ZC_NR_APIS * ZC_HIST_SLOTS);
BPF_ARRAY(zc_hist_sums, u64, ZC_NR_HISTS * ZC_NR_APIS); /* the sum of each histogram's values */
BPF_ARRAY(zc_kevents, struct zc_kev, ZC_NR_KEVENTS);
BPF_ARRAY(zc_errors, struct zc_lost, ZC_NR_ERRORS);
/* Processes being traced, when the session filters (-p / -- CMD); children are added on fork. */
BPF_HASH(zc_targets, u32, u8, 4096);

/* Notification ubuf_info -> its first late copy (skb_copy_ubufs): the reason code
 * (ZC_R_LATE_COPY, classified by the stack on the Python side, or ZC_R_BPF_REDIRECT) and
 * the stack id. */
struct zc_late {
	int stackid;
	u8 reason;
	u8 pad[3];
};
BPF_TABLE("lru_hash", u64, struct zc_late, zc_late_copies, 65536);
/* Zerocopy skbs a tc BPF program redirected (skb_do_redirect, bpf_redirect.bpf.c): skb ->
 * its ubuf_info, so a freed skb's address reused for another notification does not match.
 * Forgotten when skb_copy_ubufs copies the skb; LRU: redirected skbs never copied age out. */
BPF_TABLE("lru_hash", u64, u64, zc_redirected, 16384);

static __always_inline int zc_tracked(u32 tgid)
{
#ifdef ZC_FILTER
	return zc_targets.lookup(&tgid) != 0;
#else
	return 1;
#endif
}
/* Something the probes could not record: `requests` send requests (`bytes` bytes) went uncounted
 * or lost their verdict. */
static __always_inline void zc_lose(int cause, u64 requests, u64 bytes)
{
	struct zc_lost *l = zc_errors.lookup(&cause);

	if (!l)
		return;
	__sync_fetch_and_add(&l->events, 1);
	if (requests)
		__sync_fetch_and_add(&l->requests, requests);
	if (bytes)
		__sync_fetch_and_add(&l->bytes, bytes);
}
/* Counters of (tgid, api, proto); created in process context with that process's comm. */
static __always_inline struct zc_stats *zc_stats_get(u32 tgid, u8 api, u8 proto, int create)
{
	struct zc_key key = {.tgid = tgid, .api = api, .proto = proto};
	struct zc_stats *s = zc_stats.lookup(&key);

	if (s || !create)
		return s;
	struct zc_stats zero = {.cgroup = bpf_get_current_cgroup_id()};
	bpf_get_current_comm(&zero.comm, sizeof(zero.comm));
	zc_stats.insert(&key, &zero); /* if full, the caller counts what it loses */
	return zc_stats.lookup(&key);
}

static __always_inline void zc_add(struct zc_stats *s, int counter, u64 n)
{
	if (s && counter >= 0 && counter < ZC_NR_COUNTERS)
		__sync_fetch_and_add(&s->c[counter], n);
}

/* The counter of a request of `size` bytes in the size histogram (probes/zctrace.h, ZC_SIZE_0).
 * The slot is masked after a compiler barrier, not only clamped: clang kept the clamp on a copy
 * and indexed with the unclamped register, which 6.1's verifier refuses (unbounded access). */
_Static_assert((ZC_NR_SIZES & (ZC_NR_SIZES - 1)) == 0, "ZC_NR_SIZES: a power of two (the mask)");
static __always_inline u32 zc_size_counter(u64 size)
{
	u32 slot = bpf_log2l(size); /* v in [2^(s-1), 2^s) -> s */

	slot = slot > 6 ? slot - 6 : 0;
	if (slot > ZC_NR_SIZES - 1)
		slot = ZC_NR_SIZES - 1;
	asm volatile("" : "+r"(slot)); /* the mask below stays: the compiler cannot know it is a no-op */
	return ZC_SIZE_0 + (slot & (ZC_NR_SIZES - 1));
}

static __always_inline void zc_kevents_add(int ev, u64 count, u64 bytes)
{
	struct zc_kev *k = zc_kevents.lookup(&ev);

	if (k) {
		__sync_fetch_and_add(&k->count, count);
		__sync_fetch_and_add(&k->bytes, bytes);
	}
}

static __always_inline void zc_kevent(int ev, u64 bytes)
{
	zc_kevents_add(ev, 1, bytes);
}

static __always_inline void zc_hist(u8 hist, u8 api, u64 value)
{
	u32 row = (u32)hist * ZC_NR_APIS + api, slot = bpf_log2l(value);
	u32 i = row * ZC_HIST_SLOTS + (slot & (ZC_HIST_SLOTS - 1));
	u64 *n = zc_hists.lookup(&i), *sum = zc_hist_sums.lookup(&row);

	if (n)
		__sync_fetch_and_add(n, 1);
	if (sum)
		__sync_fetch_and_add(sum, value);
}

static __always_inline void zc_reason_add(u32 tgid, u8 api, u8 proto, u8 reason, int stackid, u64 n)
{
	struct zc_reason_key key = {.tgid = tgid, .api = api, .proto = proto, .reason = reason,
				    .stackid = reason == ZC_R_LATE_COPY ? stackid : -1};
	u64 zero = 0, *v = zc_reasons.lookup_or_try_init(&key, &zero);

	if (v)
		__sync_fetch_and_add(v, n);
	else
		zc_lose(ZC_ERR_REASONS_FULL, n, 0);
}

/* The late copy recorded for notification `uarg`, forgotten once read (its completion):
 * its reason code (ZC_R_NONE if none) and stack id (-1). */
static __always_inline u8 zc_late_take(u64 uarg, int *stackid)
{
	struct zc_late *late = zc_late_copies.lookup(&uarg);
	u8 reason = late ? late->reason : ZC_R_NONE;

	*stackid = late ? late->stackid : -1;
	if (late)
		zc_late_copies.delete(&uarg);
	return reason;
}

/* Notification latency is sampled: one send in ZC_LATENCY_EVERY (set by the loader) of a socket
 * or ring is timed, while no earlier timed send of it still waits (one that waited 10 s lost its
 * notification). Its owner keeps the send's id and time, so no send costs a map update. */
#define ZC_SAMPLE_STALE_NS 10000000000ULL

static __always_inline void zc_sample_send(u32 *seq, u64 *sample_id, u64 *sample_ts, u64 id)
{
	if ((*seq)++ % ZC_LATENCY_EVERY)
		return;
	u64 now = bpf_ktime_get_ns();
	if (*sample_ts && now - *sample_ts < ZC_SAMPLE_STALE_NS)
		return;
	*sample_id = id;
	*sample_ts = now;
}

/* The timed send's notification came: its latency into the histogram. */
static __always_inline void zc_sample_done(u8 api, u64 *sample_ts)
{
	u64 ts = *sample_ts;

	if (!ts)
		return;
	*sample_ts = 0;
	zc_hist(ZC_HIST_LATENCY, api, bpf_ktime_get_ns() - ts);
}

#endif /* ZC_MAPS_BPF_H */
