/* io_uring zerocopy send requests and their notification CQEs (every tier).
 *
 * A SEND_ZC / SENDMSG_ZC request is counted at its send CQE when the kernel says a
 * notification follows (IORING_CQE_F_MORE); its verdict comes with the notification CQE
 * (IORING_CQE_F_NOTIF). On the tracepoint tier that verdict exists only when the application
 * asked for IORING_SEND_ZC_REPORT_USAGE (bit 31 of res = copied); without it the notification
 * is counted `unreported`. The fentry/kprobe tiers take verdicts from uring_notif instead.
 * CQEs that overflow the CQ ring are seen through io_uring_cqe_overflow.
 * A send that fails still posts a notification (F_MORE on its error CQE): it is remembered in
 * zc_uring_failed so that its notification is not taken for a verdict.
 */

#define ZC_IORING_OP_SEND_ZC 47
#define ZC_IORING_OP_SENDMSG_ZC 48
#define ZC_IORING_CQE_F_MORE (1U << 1)
#define ZC_IORING_CQE_F_NOTIF (1U << 3)
#define ZC_IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)

/* Ring owner, for completions that run outside the submitting task, and the protocol of its
 * latest zerocopy send (notification requests carry no socket). */
#define ZC_RING_REPORTS 2 /* its notifications carry REPORT_USAGE */
#define ZC_RING_SILENT 1

struct zc_ring {
	u32 tgid;
	u8 proto;
	u8 late_reason; /* tracepoint tier: local delivery seen (rx_evidence) */
	u8 report;      /* ZC_RING_REPORTS / ZC_RING_SILENT, from its latest notification */
	u8 pad;
	u64 sk;         /* socket of its latest zerocopy send (notification requests have none) */
};
BPF_TABLE("lru_hash", u64, struct zc_ring, zc_rings, 4096); /* LRU: rings are never seen closing */

struct zc_ureq {
	u64 ctx;
	u64 user_data;
};
BPF_HASH(zc_uring_failed, struct zc_ureq, u8, 4096);

/* True (and forgotten) if the notification (ctx, user_data) belongs to a failed send. */
static __always_inline int zc_uring_take_failed(u64 ctx, u64 user_data)
{
	struct zc_ureq key = {.ctx = ctx, .user_data = user_data};

	if (!zc_uring_failed.lookup(&key))
		return 0;
	zc_uring_failed.delete(&key);
	return 1;
}

/* Bytes of sends whose notification CQE has not been posted: io_uring holds their pages until
 * it is. Requests in flight under one user_data are summed; each notification takes their
 * average (exact for distinct user_data or equal sizes). A failed send with a notification
 * counts with 0 bytes. LRU: sends whose notification never comes age out. */
struct zc_upin {
	u64 bytes;
	u64 count;
};
BPF_TABLE("lru_hash", struct zc_ureq, struct zc_upin, zc_uring_pinned, 65536);

static __always_inline void zc_uring_pin(u64 ctx, u64 user_data, u64 bytes)
{
	struct zc_ureq key = {.ctx = ctx, .user_data = user_data};
	struct zc_upin zero = {}, *p = zc_uring_pinned.lookup_or_try_init(&key, &zero);

	if (!p)
		return;
	__sync_fetch_and_add(&p->bytes, bytes);
	__sync_fetch_and_add(&p->count, 1);
}

/* The bytes a notification of (ctx, user_data) releases. */
static __always_inline u64 zc_uring_unpin(u64 ctx, u64 user_data)
{
	struct zc_ureq key = {.ctx = ctx, .user_data = user_data};
	struct zc_upin *p = zc_uring_pinned.lookup(&key);

	if (!p)
		return 0;
	u64 count = p->count, take = count > 1 ? p->bytes / count : p->bytes;
	if (count <= 1) {
		zc_uring_pinned.delete(&key);
		return take;
	}
	__sync_fetch_and_add(&p->bytes, -take);
	__sync_fetch_and_add(&p->count, -1);
	return take;
}

/* The struct sock of a request's socket file, or 0. */
static __always_inline void *zc_uring_sock(void *req)
{
	void *file = 0, *socket = 0, *sk = 0;

	ZC_READ(file, req, ZC_OFF_io_kiocb_file);
	if (!file)
		return 0;
	ZC_READ(socket, file, ZC_OFF_file_private_data);
	if (!socket)
		return 0;
	ZC_READ(sk, socket, ZC_OFF_socket_sk);
	return sk;
}

ZC_TRACEPOINT(io_uring, io_uring_submit_req)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	u64 ctx = (u64)args->ctx;

	if (args->opcode != ZC_IORING_OP_SEND_ZC && args->opcode != ZC_IORING_OP_SENDMSG_ZC)
		return 0;
	struct zc_ring *ring = zc_rings.lookup(&ctx);
	if (ring && ring->tgid == tgid)
		return 0;
	if (!zc_tracked(tgid)) {
		if (ring) /* a traced ring's freed address, reused by an untraced process */
			zc_rings.delete(&ctx);
		return 0;
	}
	struct zc_ring fresh = {.tgid = tgid}; /* a new ring, or a freed ring's address reused;
						  req->file is not assigned yet: proto comes later */
	zc_rings.update(&ctx, &fresh);
	return 0;
}

/* One CQE of a ring that sends zerocopy. `req` is 0 for CQEs that overflowed the CQ ring
 * (io_uring_cqe_overflow has no request): those are told apart by their flags alone, and a
 * notification's REPORT_USAGE is taken from the ring's earlier notifications. */
static __always_inline int zc_uring_cqe(u64 ctx, void *req, u64 user_data, s32 res, u32 cflags)
{
	struct zc_ring *ring = zc_rings.lookup(&ctx);
	u8 opcode = 0;

	if (!ring)
		return 0;
	if (cflags & ZC_IORING_CQE_F_NOTIF) {
		struct zc_stats *s = zc_stats_get(ring->tgid, ZC_API_IO_URING, ring->proto, 0);
		zc_add(s, ZC_NOTIFICATIONS, 1);
		zc_add(s, ZC_COMPLETED_BYTES, zc_uring_unpin(ctx, user_data));
#ifdef ZC_TIER_TRACEPOINT
		u8 report = 0, late = 0;
		if (zc_uring_take_failed(ctx, user_data))
			return 0;
		zc_latency(ZC_API_IO_URING, ctx, user_data);
		if (req) {
			ZC_READ(report, req, ZC_OFF_io_kiocb_cmd + ZC_OFF_io_notif_data_zc_report);
			ring->report = report ? ZC_RING_REPORTS : ZC_RING_SILENT;
		} else {
			report = ring->report == ZC_RING_REPORTS;
		}
		if (!report) {
			zc_add(s, ZC_UNREPORTED, 1);
		} else if (!((u32)res & ZC_IORING_NOTIF_USAGE_ZC_COPIED)) {
			zc_add(s, ZC_ZEROCOPIED, 1);
		} else {
			zc_add(s, ZC_COPIED, 1);
			/* zc_copied: an skb copied the pages late; else none ever carried them */
			if (req)
				ZC_READ(late, req, ZC_OFF_io_kiocb_cmd + ZC_OFF_io_notif_data_zc_copied);
			u8 reason = ring->late_reason && (late || !req) ? ring->late_reason :
				    req && !late ? ZC_R_IO_URING_NOT_USED : ZC_R_NONE;
			if (!reason && ring->sk)
				reason = zc_predict_late((void *)ring->sk, zc_sk_dev((void *)ring->sk));
			zc_reason_add(ring->tgid, ZC_API_IO_URING, ring->proto, reason ? reason : ZC_R_UNKNOWN, -1, 1);
		}
#endif
		return 0;
	}
	if (req) {
		ZC_READ(opcode, req, ZC_OFF_io_kiocb_opcode);
		if (opcode != ZC_IORING_OP_SEND_ZC && opcode != ZC_IORING_OP_SENDMSG_ZC)
			return 0;
		void *sk = zc_uring_sock(req);
		u16 ipproto = 0;
		if (sk)
			ZC_READ(ipproto, sk, ZC_OFF_sock_sk_protocol);
		ring->proto = zc_proto_of(ipproto);
		ring->sk = (u64)sk;
	} else if (!(cflags & ZC_IORING_CQE_F_MORE)) {
		return 0; /* an overflowed CQE without a notification to follow: not a zerocopy send */
	}
	struct zc_stats *s = zc_stats_get(ring->tgid, ZC_API_IO_URING, ring->proto, 1);
	if (res >= 0) {
		zc_add(s, ZC_REQUESTS, 1);
		zc_add(s, ZC_BYTES, res);
		zc_send_time(ctx, user_data);
		if (cflags & ZC_IORING_CQE_F_MORE)
			zc_uring_pin(ctx, user_data, res);
		return 0;
	}
	if (res == -ZC_EOPNOTSUPP)
		zc_add(s, ZC_NA_EOPNOTSUPP, 1);
	else if (res == -ZC_ENOBUFS) /* io_uring charges pinned pages, not optmem */
		zc_add(s, ZC_NA_ENOBUFS_MEMLOCK, 1);
	if (cflags & ZC_IORING_CQE_F_MORE) {
		struct zc_ureq key = {.ctx = ctx, .user_data = user_data};
		u8 one = 1;
		zc_uring_failed.update(&key, &one);
		zc_uring_pin(ctx, user_data, 0);
	}
	return 0;
}

TRACEPOINT_PROBE(io_uring, io_uring_complete)
{
	return zc_uring_cqe((u64)args->ctx, args->req, args->user_data, args->res, args->cflags);
}

TRACEPOINT_PROBE(io_uring, io_uring_cqe_overflow)
{
	return zc_uring_cqe((u64)args->ctx, 0, args->user_data, args->res, args->cflags);
}
