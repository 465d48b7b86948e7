/* Maps and helpers shared by every zctrace probe (one bcc module per session; the loader puts
 * this text in front of the programs' text, since bcc rewrites map calls only there).
 *
 * Struct offsets are ZC_OFF_<struct>_<member> macros supplied by the loader from the running
 * kernel's BTF (zctrace/offsets.py); nothing here trusts the compile-time kernel headers.
 */
#include <uapi/linux/ptrace.h>
#include "zctrace.h"

#define ZC_MSG_ZEROCOPY 0x4000000
#define ZC_MSG_MORE 0x8000
#define ZC_MSG_ERRQUEUE 0x2000
#define ZC_ENOBUFS 105
#define ZC_EOPNOTSUPP 95
#define ZC_IPPROTO_TCP 6
#define ZC_IPPROTO_UDP 17
#define ZC_AF_INET6 10
#define ZC_OPTMEM_SLACK 1024 /* about one notification skb: below this much optmem, sock_omalloc fails */

#define ZC_READ(dst, base, off) \
	bpf_probe_read_kernel(&(dst), sizeof(dst), (const char *)(base) + (off))

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

/* `v` as a plain number: fentry programs see their arguments as typed pointers, which the
 * verifier allows no arithmetic on but adding an offset (a copy through the stack is a scalar). */
static __always_inline u64 zc_scalar(u64 v)
{
	u64 s = 0;

	bpf_probe_read_kernel(&s, sizeof(s), &v);
	return s;
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

static __always_inline u8 zc_proto_of(u16 ipproto)
{
	if (ipproto == ZC_IPPROTO_TCP)
		return ZC_PROTO_TCP;
	if (ipproto == ZC_IPPROTO_UDP)
		return ZC_PROTO_UDP;
	return ZC_PROTO_OTHER;
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

static __always_inline void zc_kevent(int ev, u64 bytes)
{
	struct zc_kev *k = zc_kevents.lookup(&ev);

	if (k) {
		__sync_fetch_and_add(&k->count, 1);
		__sync_fetch_and_add(&k->bytes, bytes);
	}
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

/* skb_shinfo(skb): head + end on 64-bit; one read where end (u32) sits right before head
 * (these run for every packet on the tracepoint tier: every read counts). */
static __always_inline void *zc_skb_shinfo(void *skb)
{
#if ZC_OFF_sk_buff_head == ZC_OFF_sk_buff_end + 4
	struct {
		u32 end;
		u64 head;
	} __attribute__((packed)) eh = {};

	ZC_READ(eh, skb, ZC_OFF_sk_buff_end);
	return eh.head ? (char *)eh.head + eh.end : 0;
#else
	void *head = 0;
	u32 end = 0;

	ZC_READ(head, skb, ZC_OFF_sk_buff_head);
	ZC_READ(end, skb, ZC_OFF_sk_buff_end);
	return head ? (char *)head + end : 0;
#endif
}

/* The ubuf_info of an skb's shared info if the skb is zerocopy (skb_zcopy()), or 0. */
static __always_inline u64 zc_shinfo_uarg(void *shinfo)
{
	u8 flags = 0;
	u64 uarg = 0;

	if (!shinfo)
		return 0;
	ZC_READ(flags, shinfo, ZC_OFF_skb_shared_info_flags);
	if (!(flags & ZC_SKBFL_ZEROCOPY_ENABLE))
		return 0;
	ZC_READ(uarg, shinfo, ZC_OFF_skb_shared_info_destructor_arg);
	return uarg;
}

/* The ubuf_info of a zerocopy skb (skb_zcopy()), or 0. */
static __always_inline u64 zc_skb_uarg(void *skb)
{
	return zc_shinfo_uarg(zc_skb_shinfo(skb));
}

/* The egress device of a socket's cached route (0 if it has none: unconnected, or not yet
 * routed). */
static __always_inline void *zc_sk_dev(void *sk)
{
	void *dst = 0, *dev = 0;

	ZC_READ(dst, sk, ZC_OFF_sock_sk_dst_cache);
	if (dst)
		ZC_READ(dev, dst, ZC_OFF_dst_entry_dev);
	return dev;
}

/* Would this send be copied at send time? (__ip_append_data / tcp_sendmsg_locked rules, read
 * from the socket's cached route: no SG -> copy; UDP needs CHECKSUM_PARTIAL, i.e. payload and
 * headers within the MTU (or UDP GSO), checksum offload, and a datagram that is not corked:
 * MSG_MORE or UDP_CORK without GSO, or an append to a pending corked datagram, checksums in
 * software; so does an IPv4 xfrm route without ESP TX checksum offload.) The one rule for
 * MSG_ZEROCOPY (msgzc_send, before the send) and io_uring (uring_send,
 * when a notification says no skb carried the pages): the kernel decides both alike (it leaves
 * an io_uring request's msg_ubuf unused where it would mark a MSG_ZEROCOPY range copied).
 * `flags`: the send's MSG_MORE, and ZC_SEND_APPENDS if it is known to append to a datagram an
 * earlier send left pending (the socket's own `pending` says so only before the send).
 * Also the egress ifindex. */
#define ZC_SEND_APPENDS (1ULL << 32) /* not a MSG_ flag: those are 32 bits */

static __always_inline u8 zc_predict_copy(void *sk, void *dev, u8 proto, u64 len, u64 flags, u32 *ifindex)
{
	u64 features = 0;
	u32 mtu = 0;
	u16 family = 0, gso = 0;

	if (dev) {
		ZC_READ(*ifindex, dev, ZC_OFF_net_device_ifindex);
		ZC_READ(features, dev, ZC_OFF_net_device_features);
		ZC_READ(mtu, dev, ZC_OFF_net_device_mtu);
	}
	if (proto == ZC_PROTO_TCP) {
		u64 caps = 0;
		ZC_READ(caps, sk, ZC_OFF_sock_sk_route_caps);
		return (caps >> ZC_NETIF_F_SG_BIT) & 1 ? ZC_R_NONE : ZC_R_NO_SG;
	}
	if (proto != ZC_PROTO_UDP || !dev)
		return ZC_R_NONE;
	if (!((features >> ZC_NETIF_F_SG_BIT) & 1))
		return ZC_R_NO_SG;
	ZC_READ(family, sk, ZC_OFF_sock_skc_family);
	ZC_READ(gso, sk, ZC_OFF_udp_sock_gso_size);
	u64 hdr = family == ZC_AF_INET6 ? 48 : 28;
	if (len + hdr > mtu && !gso)
		return ZC_R_OVER_MTU;
	u64 csum = (1ULL << ZC_NETIF_F_HW_CSUM_BIT) |
		   (1ULL << (family == ZC_AF_INET6 ? ZC_NETIF_F_IPV6_CSUM_BIT : ZC_NETIF_F_IP_CSUM_BIT));
	if (!(features & csum))
		return ZC_R_NO_CSUM_OFFLOAD;
	int pending = 0;
	u32 cork = 0;
	ZC_READ(pending, sk, ZC_OFF_udp_sock_pending);
#ifdef ZC_UDP_CORK_OFF
	ZC_READ(cork, sk, ZC_UDP_CORK_OFF);
	cork = (cork >> ZC_UDP_CORK_BIT) & 1;
#endif
	if (pending || (flags & ZC_SEND_APPENDS) || ((flags & ZC_MSG_MORE || cork) && !gso))
		return ZC_R_NO_CSUM_OFFLOAD;
	/* IPv4: an xfrm route's header room (dst->header_len: __ip_append_data's exthdrlen) needs
	 * ESP TX checksum offload for CHECKSUM_PARTIAL. (__ip6_append_data has no such term.) */
	if (family != ZC_AF_INET6 && !((features >> ZC_NETIF_F_HW_ESP_TX_CSUM_BIT) & 1)) {
		void *dst = 0;
		u16 header_len = 0;
		ZC_READ(dst, sk, ZC_OFF_sock_sk_dst_cache);
		if (dst)
			ZC_READ(header_len, dst, ZC_OFF_dst_entry_header_len);
		if (header_len)
			return ZC_R_IPSEC_NO_ESP_OFFLOAD;
	}
	return ZC_R_NONE;
}

/* A list_head with entries: its next pointer is not itself. */
static __always_inline int zc_list_busy(u64 head)
{
	u64 next = 0;

	ZC_READ(next, (void *)head, 0);
	return next && next != head;
}

/* dev_nit_active(): an AF_PACKET tap sees what this device sends: one bound to the device
 * (dev->ptype_all), or one on every device (per netns since 6.15, host-wide before). */
static __always_inline int zc_tap_active(void *dev)
{
	if (zc_list_busy((u64)dev + ZC_OFF_net_device_ptype_all))
		return 1;
#if defined(ZC_NET_PTYPE_ALL_OFF)
	u64 net = 0;
	ZC_READ(net, dev, ZC_DEV_NET_OFF);
	return net && zc_list_busy(net + ZC_NET_PTYPE_ALL_OFF);
#elif defined(ZC_PTYPE_ALL_ADDR)
	return zc_list_busy(ZC_PTYPE_ALL_ADDR);
#else
	return 0; /* the every-device list is not found here: only device taps are seen */
#endif
}

/* A tun/tap device: its rtnl_link_ops->kind is "tun". */
static __always_inline int zc_dev_is_tun(void *dev)
{
	void *ops = 0, *kind = 0;
	char name[4] = {};

	ZC_READ(ops, dev, ZC_OFF_net_device_rtnl_link_ops);
	if (!ops)
		return 0;
	ZC_READ(kind, ops, ZC_OFF_rtnl_link_ops_kind);
	if (!kind || bpf_probe_read_kernel(name, sizeof(name), kind))
		return 0;
	return name[0] == 't' && name[1] == 'u' && name[2] == 'n' && name[3] == 0;
}

/* The late copy the kernel makes of a socket's zerocopy skbs, from the state it checks when
 * they go out through `dev` (the route's device, or 0): dev_queue_xmit_nit copies for an active
 * packet tap, tun_net_xmit for its reader, __skb_tstamp_tx for a SCHED TX timestamp that carries
 * the payload (no SOF_TIMESTAMPING_OPT_TSONLY). The tracepoint tier's evidence, since it cannot
 * see skb_copy_ubufs: read when a COPIED notification arrives, so sends that were zero-copy
 * pay nothing. */
#define ZC_SOF_TIMESTAMPING_TX_SCHED (1U << 8)     /* uapi linux/net_tstamp.h */
#define ZC_SOF_TIMESTAMPING_OPT_TSONLY (1U << 11)

static __always_inline u8 zc_predict_late(void *sk, void *dev)
{
	u16 tsflags = 0; /* sk_tsflags: u16 before 6.6, u32 since; the flags are in the low half */

	if (dev && zc_tap_active(dev))
		return ZC_R_PACKET_TAP;
	if (dev && zc_dev_is_tun(dev))
		return ZC_R_TUN_TAP;
	ZC_READ(tsflags, sk, ZC_OFF_sock_sk_tsflags);
	if ((tsflags & ZC_SOF_TIMESTAMPING_TX_SCHED) && !(tsflags & ZC_SOF_TIMESTAMPING_OPT_TSONLY))
		return ZC_R_TX_TIMESTAMP;
	return ZC_R_NONE;
}

/* struct sock * behind a file descriptor of the current task (0 if there is none). */
static __always_inline void *zc_fd_to_sock(int fd)
{
	void *task = (void *)bpf_get_current_task();
	void *files = 0, *fdt = 0, *fds = 0, *file = 0, *socket = 0, *sk = 0;
	unsigned int max_fds = 0;

	if (fd < 0)
		return 0;
	ZC_READ(files, task, ZC_OFF_task_struct_files);
	if (!files)
		return 0;
	ZC_READ(fdt, files, ZC_OFF_files_struct_fdt);
	if (!fdt)
		return 0;
	ZC_READ(max_fds, fdt, ZC_OFF_fdtable_max_fds);
	if ((unsigned int)fd >= max_fds)
		return 0;
	ZC_READ(fds, fdt, ZC_OFF_fdtable_fd);
	if (!fds)
		return 0;
	ZC_READ(file, fds, (u64)fd * sizeof(void *));
	if (!file)
		return 0;
	ZC_READ(socket, file, ZC_OFF_file_private_data);
	if (!socket)
		return 0;
	ZC_READ(sk, socket, ZC_OFF_socket_sk);
	return sk;
}

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

/* A completed MSG_ZEROCOPY notification range lo..hi (inclusive ids) of socket sk.
 * `verdict`: this tier takes its verdict from here (else only count what the app read);
 * `late`/`stackid`: the reason and stack of a late copy seen for this range (fentry/kprobe
 * tiers), else ZC_R_NONE. */
static __always_inline void zc_msgzc_range(u64 sk, u32 lo, u32 hi, int copied, int verdict,
					   int read, u8 late, int stackid, u64 bytes)
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
	if (!verdict)
		return;
	zc_add(s, ZC_NOTIFICATIONS, 1);
	zc_add(s, ZC_COMPLETED_BYTES, bytes);
	zc_hist(ZC_HIST_RANGE, ZC_API_MSG_ZEROCOPY, n);
	if (st->sample_ts && (u32)(st->sample_id - lo) <= hi - lo)
		zc_sample_done(ZC_API_MSG_ZEROCOPY, &st->sample_ts);
	if (!copied) {
		zc_add(s, ZC_ZEROCOPIED, n);
		__sync_fetch_and_add(&st->zerocopied, n);
		return;
	}
	zc_add(s, ZC_COPIED, n);
	__sync_fetch_and_add(&st->copied, n);
	zc_range_reasons(st, (void *)sk, lo, hi, late, stackid);
}

/* Entry points for kernel functions: fentry on the fentry tier, kprobe otherwise. The loader
 * attaches kfunc__<fn> or kprobe__<fn>. Where this kernel has `fn` under an older name the
 * loader defines fn as that name (so the fentry program loads against it) and ZC_VIA_<name>. */
#ifdef ZC_TIER_FENTRY
#define ZC_KFUNC1(fn, a1) KFUNC_PROBE(fn, void *a1)
#define ZC_KFUNC2(fn, a1, a2) KFUNC_PROBE(fn, void *a1, void *a2)
#define ZC_KFUNC3(fn, a1, a2, a3) KFUNC_PROBE(fn, void *a1, void *a2, void *a3)
#define ZC_KFUNC5(fn, a1, a2, a3, a4, a5) KFUNC_PROBE(fn, void *a1, void *a2, void *a3, void *a4, void *a5)
#else
#define ZC_KFUNC1(fn, a1) static __always_inline int zc_body_##fn(void *ctx, void *a1); \
	int kprobe__##fn(struct pt_regs *ctx) { return zc_body_##fn(ctx, (void *)PT_REGS_PARM1(ctx)); } \
	static __always_inline int zc_body_##fn(void *ctx, void *a1)
#define ZC_KFUNC2(fn, a1, a2) static __always_inline int zc_body_##fn(void *ctx, void *a1, void *a2); \
	int kprobe__##fn(struct pt_regs *ctx) { return zc_body_##fn(ctx, (void *)PT_REGS_PARM1(ctx), \
		(void *)PT_REGS_PARM2(ctx)); } \
	static __always_inline int zc_body_##fn(void *ctx, void *a1, void *a2)
#define ZC_KFUNC3(fn, a1, a2, a3) static __always_inline int zc_body_##fn(void *ctx, void *a1, void *a2, void *a3); \
	int kprobe__##fn(struct pt_regs *ctx) { return zc_body_##fn(ctx, (void *)PT_REGS_PARM1(ctx), \
		(void *)PT_REGS_PARM2(ctx), (void *)PT_REGS_PARM3(ctx)); } \
	static __always_inline int zc_body_##fn(void *ctx, void *a1, void *a2, void *a3)
#define ZC_KFUNC5(fn, a1, a2, a3, a4, a5) static __always_inline int zc_body_##fn(void *ctx, void *a1, \
	void *a2, void *a3, void *a4, void *a5); \
	int kprobe__##fn(struct pt_regs *ctx) { return zc_body_##fn(ctx, (void *)PT_REGS_PARM1(ctx), \
		(void *)PT_REGS_PARM2(ctx), (void *)PT_REGS_PARM3(ctx), (void *)PT_REGS_PARM4(ctx), \
		(void *)PT_REGS_PARM5(ctx)); } \
	static __always_inline int zc_body_##fn(void *ctx, void *a1, void *a2, void *a3, void *a4, void *a5)
#endif
