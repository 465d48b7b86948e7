/* zctrace: definitions shared by the BPF programs and the Python side.
 *
 * zctrace/header.py parses the enums below (name = value, one per line), so the counter
 * names in reports and metrics are exactly these, lower-cased, without the ZC_ prefix.
 * Keep it plain: enums with explicit values and fixed-size integer structs.
 */
#ifndef ZCTRACE_H
#define ZCTRACE_H

enum zc_api {
	ZC_API_MSG_ZEROCOPY = 0,
	ZC_API_IO_URING = 1,
};

enum zc_proto {
	ZC_PROTO_OTHER = 0,
	ZC_PROTO_TCP = 1,
	ZC_PROTO_UDP = 2,
};

/* Per (process, api, protocol) counters: indexes into zc_stats.c[]. */
enum zc_counter {
	ZC_REQUESTS = 0,             /* zerocopy send requests the kernel took (one notification id each) */
	ZC_BYTES = 1,                /* bytes those requests sent */
	ZC_ZEROCOPIED = 2,           /* requests whose completion says: sent without a copy */
	ZC_COPIED = 3,               /* requests whose completion says: copied */
	ZC_UNREPORTED = 4,           /* io_uring notifications without REPORT_USAGE (no verdict on this tier) */
	ZC_NA_SO_ZEROCOPY_UNSET = 5, /* MSG_ZEROCOPY on a socket without SO_ZEROCOPY: silently copied */
	ZC_NA_ENOBUFS = 6,           /* optmem_max or RLIMIT_MEMLOCK exhausted */
	ZC_NA_EOPNOTSUPP = 7,        /* socket or path without zerocopy support */
	ZC_NOTIFICATIONS = 8,        /* completion notifications seen (one may cover many requests) */
	ZC_NR_COUNTERS = 9,
};

/* Kernel-side zerocopy events (fentry/kprobe tiers): indexes into the zc_kevents array. */
enum zc_kevent {
	ZC_KEV_ITER_STREAM = 0,      /* skb_zerocopy_iter_stream: TCP pages attached zero-copy */
	ZC_KEV_FILL_FROM_ITER = 1,   /* zerocopy_fill_skb_from_iter: user pages pinned into an skb */
	ZC_KEV_UARG_REALLOC = 2,     /* msg_zerocopy_realloc: a send joined or opened a notification range */
	ZC_KEV_COPY_UBUFS = 3,       /* skb_copy_ubufs: a late copy of zerocopy frags */
	ZC_NR_KEVENTS = 4,
};

struct zc_key {
	__u32 tgid;
	__u8 api;
	__u8 proto;
	__u16 pad;
};

struct zc_stats {
	__u64 c[ZC_NR_COUNTERS];
	char comm[16];
};

struct zc_kev {
	__u64 count;
	__u64 bytes;
};

#endif /* ZCTRACE_H */
