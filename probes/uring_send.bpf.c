/* io_uring zerocopy send requests and their notification CQEs (every tier).
 *
 * A SEND_ZC / SENDMSG_ZC request is counted at its send CQE when the kernel says a
 * notification follows (IORING_CQE_F_MORE); its verdict comes with the notification CQE
 * (IORING_CQE_F_NOTIF). On the tracepoint tier that verdict exists only when the application
 * asked for IORING_SEND_ZC_REPORT_USAGE (bit 31 of res = copied); without it the notification
 * is counted `unreported`. The fentry/kprobe tiers take verdicts from uring_notif instead, and
 * count the notification there too (ZC_NOTIF_COUNTED_AT_COMPLETION): their notification CQE
 * leaves after its flags, reading nothing while no chain waits for the walker.
 *
 * Hot path: io_uring_complete runs for every CQE of every ring on the machine, so it is a raw
 * tracepoint (no trace record is built), leaves a CQE that is neither a send with a
 * notification to follow, a notification nor an error after reading its flags, and costs a
 * zerocopy CQE one map lookup: the ring's entry holds the counters (struct zc_ring). A ring is
 * registered at its first zerocopy send CQE, in the sending process (or its io_uring threads);
 * io_uring_create hands the counters of a freed ring whose address is reused to zc_stats.
 * CQEs that overflow the CQ ring are seen through io_uring_cqe_overflow.
 * A send that fails still posts a notification (F_MORE on its error CQE): it is remembered in
 * zc_uring_failed (and counted in its ring) so that its notification is not taken for a verdict.
 */

#include "maps.bpf.h"
#include "uring_ring.bpf.h"
#include "uring_chain.bpf.h"

#define ZC_IORING_OP_SEND_ZC 47
#define ZC_IORING_OP_SENDMSG_ZC 48
#define ZC_IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#define ZC_RING_REPORTS 2 /* its notifications carry REPORT_USAGE */
#define ZC_RING_SILENT 1

/* A new ring's entry is put together here: struct zc_ring is too big for the BPF stack beside
 * the request's head (struct zc_req_head). */
BPF_PERCPU_ARRAY(zc_ring_scratch, struct zc_ring, 1);

/* zc_ring_add for the counters only CQEs change (io_uring_complete, io_uring_cqe_overflow): the
 * kernel posts a ring's CQEs one at a time (its CQ tail is a plain counter, under the ring's
 * completion lock or its single submitter), so a plain add is exact and spares a locked one. */
static __always_inline void zc_ring_count(struct zc_ring *ring, u8 proto, int counter, u64 n)
{
	zc_ring_counters(ring, proto)[counter] += n;
}

/* The ring's entry, registered at a zerocopy send CQE (of `bytes`) by the process that sent it. */
static __always_inline struct zc_ring *zc_ring_get(u64 ctx, u64 bytes)
{
	struct zc_ring *ring = zc_rings.lookup(&ctx);
	u32 tgid;

	if (ring)
		return ring;
	tgid = bpf_get_current_pid_tgid() >> 32;
	if (!zc_tracked(tgid))
		return 0;
	u32 zero = 0;
	struct zc_ring *fresh = zc_ring_scratch.lookup(&zero);
	if (!fresh)
		return 0;
	__builtin_memset(fresh, 0, sizeof(*fresh));
	fresh->tgid = tgid;
	fresh->cgroup = bpf_get_current_cgroup_id();
	bpf_get_current_comm(&fresh->comm, sizeof(fresh->comm));
	if (zc_rings.insert(&ctx, fresh))
		zc_lose(ZC_ERR_RINGS_FULL, 1, bytes);
	ring = zc_rings.lookup(&ctx);
	if (ring)
		zc_ring_take_early(ring, ctx);
	return ring;
}

/* The front of an io_kiocb, read with one bpf_probe_read_kernel per CQE: its file, opcode and CQE
 * (user_data, res, flags: the trace point's CQE is a copy of these), and, for a notification,
 * its io_notif_data's zc_report and zc_copied (inside cmd); for a send, its io_sr_msg's msg_flags
 * (inside cmd too). Offsets from BTF, like every other. */
#define ZC_MAX2(a, b) ((a) > (b) ? (a) : (b))
#define ZC_NOTIF_OFF(m) (ZC_OFF_io_kiocb_cmd + ZC_OFF_io_notif_data_##m)
#define ZC_SR_MSG_FLAGS (ZC_OFF_io_kiocb_cmd + ZC_OFF_io_sr_msg_msg_flags)
#define ZC_REQ_HEAD ZC_MAX2(ZC_MAX2(ZC_MAX2(ZC_OFF_io_kiocb_file + 8, ZC_OFF_io_kiocb_opcode + 1), \
				    ZC_MAX2(ZC_OFF_io_kiocb_cqe_user_data + 8, ZC_OFF_io_kiocb_cqe_res + 4)), \
			    ZC_MAX2(ZC_MAX2(ZC_OFF_io_kiocb_cqe_flags + 4, ZC_NOTIF_OFF(zc_report) + 1), \
				    ZC_MAX2(ZC_NOTIF_OFF(zc_copied) + 1, ZC_SR_MSG_FLAGS + 4)))
#if ZC_REQ_HEAD > 256
#error "io_kiocb: file, opcode, cqe, io_notif_data and io_sr_msg flags further apart than expected (docs/kernel.md)"
#endif
#if defined(ZC_NOTIF_CHAIN) && (ZC_NOTIF_OFF(head) + 8 > ZC_REQ_HEAD || ZC_NOTIF_OFF(zc_used) >= ZC_REQ_HEAD)
#error "io_notif_data.head or zc_used past zc_copied: the request's head misses them (docs/kernel.md)"
#endif
struct zc_req_head {
	u64 w[(ZC_REQ_HEAD + 7) / 8];
};
#define ZC_HEAD(h, type, off) (*(type *)((u8 *)(h)->w + (off)))

/* The send's socket protocol, read again only when the request's file is not the ring's last.
 * A request without a file (a send on a bad fd fails so, and is still notified) changes nothing:
 * the ring's notifications are counted under its protocol. */
static __always_inline u8 zc_uring_proto(struct zc_ring *ring, u64 file)
{
	void *socket = 0, *sk = 0;
	u16 ipproto = 0;

	if (!file || file == ring->file)
		return ring->proto;
	ZC_READ(socket, (void *)file, ZC_OFF_file_private_data);
	if (socket)
		ZC_READ(sk, socket, ZC_OFF_socket_sk);
	if (sk)
		ZC_READ(ipproto, sk, ZC_OFF_sock_sk_protocol);
	ring->file = file;
	ring->sk = (u64)sk;
	ring->proto = zc_proto_of(ipproto);
	ring->more = 0;
	return ring->proto;
}

/* A notification CQE: notifications and released bytes on every tier; on the tracepoint tier
 * also the verdict, when the request asked for REPORT_USAGE. `req` and `h` are 0 for an
 * overflowed CQE (its REPORT_USAGE is taken from the ring's earlier notifications). */
static __always_inline int zc_uring_notif(u64 ctx, void *req, struct zc_req_head *h, u64 user_data, s32 res)
{
	struct zc_ring *ring = zc_rings.lookup(&ctx);

	if (!ring)
		return 0;
	u8 proto = ring->proto;
	zc_ring_notified(ring, user_data);
#ifdef ZC_TIER_TRACEPOINT
	u8 report = 0;
	if (zc_uring_take_failed(ring, ctx, user_data))
		return 0;
	if (h) {
		report = ZC_HEAD(h, u8, ZC_NOTIF_OFF(zc_report));
		ring->report = report ? ZC_RING_REPORTS : ZC_RING_SILENT;
	} else {
		report = ring->report == ZC_RING_REPORTS;
	}
	if (!report) {
		zc_ring_count(ring, proto, ZC_UNREPORTED, 1);
		return 0;
	}
	u8 copied = !!((u32)res & ZC_IORING_NOTIF_USAGE_ZC_COPIED);
#ifdef ZC_NOTIF_CHAIN
	/* A linked notification (6.10+) without skbs of its own (no zc_used, no zc_copied) had its
	 * pages in those of the latest one of its chain that had skbs (the chain's CQEs come in
	 * list order, every member after its carrier): it takes that one's reason, or
	 * ZC_R_LINKED_NOTIFICATION if they were not copied (docs/reasons.md). */
	u64 chain = h ? ZC_HEAD(h, u64, ZC_NOTIF_OFF(head)) : 0;
	u8 own = h && (ZC_HEAD(h, u8, ZC_NOTIF_OFF(zc_used)) || ZC_HEAD(h, u8, ZC_NOTIF_OFF(zc_copied)));
	if (h && !own && chain != (u64)req + ZC_OFF_io_kiocb_cmd && chain == ring->chain_head && ring->chain_reason) {
		zc_ring_count(ring, proto, ZC_COPIED, 1);
		zc_reason_add(ring->tgid, ZC_API_IO_URING, proto, ring->chain_reason, -1, 1);
		return 0;
	}
	if (own && !copied) {
		ring->chain_head = chain;
		ring->chain_reason = ZC_R_LINKED_NOTIFICATION;
	}
#endif
	if (!copied) {
		zc_ring_count(ring, proto, ZC_ZEROCOPIED, 1);
		return 0;
	}
	zc_ring_count(ring, proto, ZC_COPIED, 1);
	/* Evidence about this very notification (rx_evidence: its skbs were delivered locally);
	 * else zc_copied: an skb copied the pages late, or none ever carried them. */
	int stackid;
	u8 reason = ZC_R_NONE;
	if (h) {
		reason = zc_late_take((u64)req + ZC_NOTIF_OFF(uarg), &stackid);
		if (!reason && !ZC_HEAD(h, u8, ZC_NOTIF_OFF(zc_copied)))
			reason = zc_uring_send_copy(ring);
	}
	if (!reason && ring->sk)
		reason = zc_predict_late((void *)ring->sk, zc_sk_dev((void *)ring->sk));
	reason = reason ? reason : ZC_R_UNKNOWN;
#ifdef ZC_NOTIF_CHAIN
	if (own) {
		ring->chain_head = chain;
		ring->chain_reason = reason;
	}
#endif
	zc_reason_add(ring->tgid, ZC_API_IO_URING, proto, reason, -1, 1);
#endif
	return 0;
}

/* A send's CQE with a notification to follow (F_MORE), or a failed one: `file` and `msg_flags` are
 * the request's (0 for an overflowed CQE, which has no request). */
static __always_inline int zc_uring_sent(u64 ctx, u64 file, u64 user_data, s32 res, u32 cflags, u32 msg_flags)
{
	struct zc_ring *ring = zc_ring_get(ctx, res > 0 ? res : 0);
	if (!ring)
		return 0;
	u8 proto = zc_uring_proto(ring, file);
	if (res >= 0) {
		zc_ring_count(ring, proto, ZC_REQUESTS, 1);
		zc_ring_count(ring, proto, ZC_BYTES, res);
		zc_ring_count(ring, proto, zc_size_counter(res), 1);
		ring->len = res;
		ring->more = ring->more << 1 | !!(msg_flags & ZC_MSG_MORE);
		if (cflags & ZC_IORING_CQE_F_MORE)
			zc_sample_send(&ring->seq, &ring->sample_id, &ring->sample_ts, user_data);
		return 0;
	}
	if (res == -ZC_EOPNOTSUPP)
		zc_ring_count(ring, proto, ZC_NA_EOPNOTSUPP, 1);
	else if (res == -ZC_ENOBUFS) /* io_uring charges pinned pages, not optmem */
		zc_ring_count(ring, proto, ZC_NA_ENOBUFS_MEMLOCK, 1);
	if (cflags & ZC_IORING_CQE_F_MORE) { /* a failed send's notification releases nothing */
		struct zc_ureq key = {.ctx = ctx, .user_data = user_data};
		u8 one = 1;
		zc_uring_failed.update(&key, &one);
		__sync_fetch_and_add(&ring->failed, 1);
		__sync_fetch_and_add(&ring->failed_notified, 1);
	}
	return 0;
}

/* One CQE of a request. A CQE without a request (multishot receives and polls, msg_ring: posted
 * as auxiliary CQEs) is never a zerocopy send's, though it may carry F_MORE. Before 6.13 the
 * trace point passes (ctx, req, user_data, res, cflags, extra1, extra2), since (ctx, req, cqe);
 * ZC_URING_COMPLETE_CQE says which (from BTF). */
RAW_TRACEPOINT_PROBE(io_uring_complete)
{
	void *req = (void *)ctx->args[1];
	struct zc_req_head h;

	if (!req)
		return 0;
#ifndef ZC_URING_COMPLETE_CQE
	if (!((u32)ctx->args[4] & (ZC_IORING_CQE_F_NOTIF | ZC_IORING_CQE_F_MORE)) && (s32)ctx->args[3] >= 0)
		return 0; /* the flags are an argument: leave before reading anything */
#ifdef ZC_NOTIF_COUNTED_AT_COMPLETION
	if ((u32)ctx->args[4] & ZC_IORING_CQE_F_NOTIF) { /* counted by uring_notif: nothing to read */
#ifdef ZC_CHAIN_WALKER
		if (zc_chain_waits(ctx->args[0], (u32)ctx->args[4])) {
			zc_chain_walker_raw.call(ctx, 0);
			zc_lose(ZC_ERR_NOTIFS_FULL, 0, 0);
		}
#endif
		return 0;
	}
#endif
#endif
	bpf_probe_read_kernel(&h, sizeof(h), req);
	u64 user_data = ZC_HEAD(&h, u64, ZC_OFF_io_kiocb_cqe_user_data);
	s32 res = ZC_HEAD(&h, s32, ZC_OFF_io_kiocb_cqe_res);
	u32 cflags = ZC_HEAD(&h, u32, ZC_OFF_io_kiocb_cqe_flags);
	u8 opcode = ZC_HEAD(&h, u8, ZC_OFF_io_kiocb_opcode);

	if (cflags & ZC_IORING_CQE_F_NOTIF) {
#ifndef ZC_NOTIF_COUNTED_AT_COMPLETION
		zc_uring_notif(ctx->args[0], req, &h, user_data, res);
#endif
#ifdef ZC_CHAIN_WALKER
		if (zc_chain_waits(ctx->args[0], cflags)) {
			zc_chain_walker_raw.call(ctx, 0);
			zc_lose(ZC_ERR_NOTIFS_FULL, 0, 0);
		}
#endif
		return 0;
	}
	if (!(cflags & ZC_IORING_CQE_F_MORE) && res >= 0)
		return 0; /* a completion without a notification to follow: not a zerocopy send */
	if (opcode != ZC_IORING_OP_SEND_ZC && opcode != ZC_IORING_OP_SENDMSG_ZC)
		return 0;
	return zc_uring_sent(ctx->args[0], ZC_HEAD(&h, u64, ZC_OFF_io_kiocb_file), user_data, res, cflags,
			     ZC_HEAD(&h, u32, ZC_SR_MSG_FLAGS));
}

/* A CQE that overflowed the CQ ring: no request, so told apart by its flags alone. */
TRACEPOINT_PROBE(io_uring, io_uring_cqe_overflow)
{
	if (args->cflags & ZC_IORING_CQE_F_NOTIF) {
#ifndef ZC_NOTIF_COUNTED_AT_COMPLETION
		zc_uring_notif((u64)args->ctx, 0, 0, args->user_data, args->res);
#endif
#ifdef ZC_CHAIN_WALKER
		if (zc_chain_waits((u64)args->ctx, args->cflags)) {
			zc_chain_walker_tp.call(args, 0);
			zc_lose(ZC_ERR_NOTIFS_FULL, 0, 0);
		}
#endif
		return 0;
	}
	if (!(args->cflags & ZC_IORING_CQE_F_MORE))
		return 0; /* without a notification to follow: not a zerocopy send */
	return zc_uring_sent((u64)args->ctx, 0, args->user_data, args->res, args->cflags, 0);
}

/* A new ring: if a freed ring left an entry at this address, its counters go to its process's
 * zc_stats rows (with the ring's comm and cgroup) and the entry goes. */
TRACEPOINT_PROBE(io_uring, io_uring_create)
{
	u64 ctx = (u64)args->ctx;
	struct zc_ring *old = zc_rings.lookup(&ctx);

	if (!old)
		return 0;
	for (u8 p = 0; p < ZC_NR_PROTOS; p++) {
		struct zc_key key = {.tgid = old->tgid, .api = ZC_API_IO_URING, .proto = p};
		struct zc_stats *s = zc_stats.lookup(&key);
		if (!s) {
			struct zc_stats zero = {.cgroup = old->cgroup};
			__builtin_memcpy(zero.comm, old->comm, sizeof(zero.comm));
			zc_stats.insert(&key, &zero);
			s = zc_stats.lookup(&key);
		}
		if (!s) {
			zc_lose(ZC_ERR_STATS_FULL, old->c[p * ZC_NR_COUNTERS + ZC_REQUESTS],
				old->c[p * ZC_NR_COUNTERS + ZC_BYTES]);
			continue;
		}
		for (int i = 0; i < ZC_NR_COUNTERS; i++)
			__sync_fetch_and_add(&s->c[i], old->c[p * ZC_NR_COUNTERS + i]);
	}
	zc_rings.delete(&ctx);
	zc_ring_forget_early(ctx);
	return 0;
}
