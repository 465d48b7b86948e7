/* zctrace: definitions shared by the BPF programs and the Python side.
 *
 * zctrace/header.py parses the enums below (name = value, one per line), so the counter,
 * reason and event names in reports and metrics are exactly these, lower-cased, without
 * their prefix. Keep it plain: enums with explicit values and fixed-size integer structs.
 */
#ifndef ZCTRACE_H
#define ZCTRACE_H

enum zc_api {
	ZC_API_MSG_ZEROCOPY = 0,
	ZC_API_IO_URING = 1,
	ZC_NR_APIS = 2,
};

enum zc_proto {
	ZC_PROTO_OTHER = 0,
	ZC_PROTO_TCP = 1,
	ZC_PROTO_UDP = 2,
	ZC_NR_PROTOS = 3,
};

/* Per (process, api, protocol) counters: indexes into zc_stats.c[]. */
enum zc_counter {
	ZC_REQUESTS = 0,             /* zerocopy send requests the kernel took (one notification id each) */
	ZC_BYTES = 1,                /* bytes those requests sent */
	ZC_ZEROCOPIED = 2,           /* requests whose completion says: sent without a copy */
	ZC_COPIED = 3,               /* requests whose completion says: copied */
	ZC_UNREPORTED = 4,           /* io_uring notifications without REPORT_USAGE (no verdict on this tier) */
	ZC_NA_SO_ZEROCOPY_UNSET = 5, /* MSG_ZEROCOPY on a socket without SO_ZEROCOPY: silently copied */
	ZC_NA_ENOBUFS_OPTMEM = 6,    /* ENOBUFS with the socket's optmem (net.core.optmem_max) used up */
	ZC_NA_ENOBUFS_MEMLOCK = 7,   /* ENOBUFS otherwise: pinned pages over RLIMIT_MEMLOCK */
	ZC_NA_EOPNOTSUPP = 8,        /* socket or path without zerocopy support */
	ZC_NOTIFICATIONS = 9,        /* completion notifications seen (one may cover many requests) */
	ZC_READ_REQUESTS = 10,       /* requests whose notification the application read */
	ZC_COMPLETED_BYTES = 11,     /* bytes of requests the kernel released: MSG_ZEROCOPY completions (fentry/kprobe), io_uring notification CQEs */
	/* Request sizes, a log2 histogram (zc_size_counter): ZC_SIZE_0 requests under 64 B,
	 * ZC_SIZE_0 + k (k = 1..14) requests of [2^(k+5), 2^(k+6)) B, ZC_SIZE_15 1 MiB and more.
	 * A sendmmsg's messages count at their mean size. */
	ZC_SIZE_0 = 12,
	ZC_SIZE_1 = 13,
	ZC_SIZE_2 = 14,
	ZC_SIZE_3 = 15,
	ZC_SIZE_4 = 16,
	ZC_SIZE_5 = 17,
	ZC_SIZE_6 = 18,
	ZC_SIZE_7 = 19,
	ZC_SIZE_8 = 20,
	ZC_SIZE_9 = 21,
	ZC_SIZE_10 = 22,
	ZC_SIZE_11 = 23,
	ZC_SIZE_12 = 24,
	ZC_SIZE_13 = 25,
	ZC_SIZE_14 = 26,
	ZC_SIZE_15 = 27,
	/* fentry/kprobe: zerocopy skbs of these requests that skb_segment copied without
	 * scatter-gather (software_gso), and their payload bytes; the requests keep the kernel's
	 * verdict (zero-copy), these say what it does not see. */
	ZC_SW_GSO_COPIES = 28,
	ZC_SW_GSO_BYTES = 29,
	ZC_NR_COUNTERS = 30,
};
#define ZC_NR_SIZES 16

/* Why a request was copied. Names are part of the JSON and metrics contract. */
enum zc_reason {
	ZC_R_NONE = 0,
	ZC_R_LOCAL_DELIVERY = 1,     /* skb_orphan_frags_rx: delivered to a local socket (loopback, veth peer) */
	ZC_R_PACKET_TAP = 2,         /* dev_queue_xmit_nit: an AF_PACKET sniffer took a copy */
	ZC_R_TX_TIMESTAMP = 3,       /* __skb_tstamp_tx without SOF_TIMESTAMPING_OPT_TSONLY */
	ZC_R_TUN_TAP = 4,            /* tun/tap or netkit transmit */
	ZC_R_BPF_REDIRECT = 5,       /* a tc BPF redirect (skb_do_redirect) to where the skb was copied */
	ZC_R_OTHER = 6,              /* another caller of skb_copy_ubufs (stack kept) */
	ZC_R_NO_SG = 7,              /* egress device without scatter-gather: copied at send */
	ZC_R_NO_CSUM_OFFLOAD = 8,    /* UDP without CHECKSUM_PARTIAL (no csum offload, corked): copied at send */
	ZC_R_OVER_MTU = 9,           /* UDP datagram over the MTU without GSO: copied at send */
	ZC_R_IO_URING_NOT_USED = 10, /* io_uring: no skb ever carried the pages */
	ZC_R_UNKNOWN = 11,           /* copied, and this tier has no evidence why */
	ZC_R_LATE_COPY = 12,         /* skb_copy_ubufs: the Python side classifies its call stack */
	ZC_R_LINKED_NOTIFICATION = 13, /* io_uring 6.10+: a linked notification without skbs of its own, its
	                              * pages in skbs that left uncopied: the kernel's REPORT_USAGE says copied */
	ZC_R_IPSEC_NO_ESP_OFFLOAD = 14, /* UDP on an xfrm (IPsec) route, device without ESP TX checksum
	                              * offload: no CHECKSUM_PARTIAL, copied at send */
	ZC_R_SOFTWARE_GSO = 15,      /* skb_segment without scatter-gather (WireGuard's wg_xmit; a device without
	                              * SG after GSO): the payload copied into each segment; the kernel still
	                              * reports zero-copy (a copy site, not a request's verdict) */
	ZC_NR_REASONS = 16,
};

/* Kernel-side zerocopy events (fentry/kprobe tiers): indexes into the zc_kevents array. */
enum zc_kevent {
	ZC_KEV_ITER_STREAM = 0,      /* skb_zerocopy_iter_stream: TCP pages attached zero-copy */
	ZC_KEV_FILL_FROM_ITER = 1,   /* zerocopy_fill_skb_from_iter: user pages pinned into an skb */
	ZC_KEV_UARG_REALLOC = 2,     /* msg_zerocopy_realloc: a send joined or opened a notification range */
	ZC_KEV_COPY_UBUFS = 3,       /* skb_copy_ubufs: a late copy of zerocopy frags */
	ZC_KEV_ERRQUEUE_VERDICT = 4, /* MSG_ZEROCOPY ids whose completion callback the kernel skipped (another
	                              * BPF program ran on the CPU: kprobe tier), their verdict taken from the
	                              * error queue as the application read it (count: ids, bytes: their bytes) */
	ZC_KEV_SW_GSO_COPY = 5,      /* skb_segment without scatter-gather: a zerocopy skb's payload copied into
	                              * linear segments, while its notification says zero-copy (count: skbs,
	                              * bytes: the payload in their frags) */
	ZC_KEV_REPORT_USAGE_VERDICT = 6, /* io_uring REPORT_USAGE notifications whose flags the kernel set in skb
	                              * callback runs it skipped (another BPF program ran on the CPU: kprobe
	                              * tier), their verdict taken from the kernel's own zc_used/zc_copied
	                              * (count: notifications, bytes: 0) */
	ZC_NR_KEVENTS = 7,
};

/* Things the probes could not record: indexes into the zc_errors array. */
enum zc_error {
	ZC_ERR_STATS_FULL = 0,       /* zc_stats had no room for a new process */
	ZC_ERR_SOCKS_FULL = 1,       /* zc_socks had no room for a new socket */
	ZC_ERR_REASONS_FULL = 2,     /* zc_reasons had no room for a new reason row */
	ZC_ERR_RINGS_FULL = 3,       /* zc_rings had no room for a new io_uring instance */
	ZC_ERR_NOTIFS_FULL = 4,      /* zc_nd_spill had no room: an io_uring notification lost its flags */
	ZC_NR_ERRORS = 5,
};

/* Histograms of log2 buckets, per api: zc_hists[(hist * ZC_NR_APIS + api) * ZC_HIST_SLOTS + slot], and
 * the sum of the values of each: zc_hist_sums[hist * ZC_NR_APIS + api]. */
enum zc_hist {
	ZC_HIST_LATENCY = 0,         /* ns from send to completion (fentry/kprobe) or to read (tracepoint), sampled */
	ZC_HIST_RANGE = 1,           /* requests per MSG_ZEROCOPY notification (log2 buckets of ids) */
	ZC_NR_HISTS = 2,
};
#define ZC_HIST_SLOTS 64

/* Frames kept of a late copy's kernel stack (zc_copy_stacks), innermost first: bpf_get_stackid
 * unwinds no deeper than the map's value holds, and unwinding is most of a late copy's probe
 * cost (a stack from a send through softirq delivery has 30 and more frames). Every caller
 * reasons.py names lies within the first dozen, and reports show the first 8. */
#define ZC_STACK_DEPTH 16

struct zc_key {
	__u32 tgid;
	__u8 api;
	__u8 proto;
	__u16 pad;
};

struct zc_stats {
	__u64 c[ZC_NR_COUNTERS];
	__u64 cgroup;
	char comm[16];
};

/* One io_uring instance that sent zerocopy requests: its owner, what its notifications need
 * (they carry no socket), and its counters, c[proto * ZC_NR_COUNTERS + counter]. The counters
 * live here, not in zc_stats, so that a CQE costs one map lookup; a freed ring whose address is
 * reused (io_uring_create) hands its counters to zc_stats first. */
struct zc_ring {
	__u32 tgid;
	__u8 proto;                  /* protocol of its latest zerocopy send */
	__u8 report;                 /* ZC_RING_REPORTS / ZC_RING_SILENT, from its latest notification */
	__u8 chain_reason;           /* tracepoint tier: the reason (or ZC_R_LINKED_NOTIFICATION if uncopied) of */
	                             /*   the latest notification with skbs of its own, in chain chain_head */
	__u8 more;                   /* MSG_MORE of its latest two sends on socket sk (bit 0: the latest) */
	__u32 failed;                /* failed sends whose notification is still to come */
	__u32 seq;                   /* zerocopy sends seen: latency samples one in ZC_LATENCY_EVERY */
	__u32 len;                   /* bytes of its latest zerocopy send (with `more`: the copy at send */
	                             /*   of a notification no skb carried, zc_uring_send_copy) */
	__u32 unsent;                /* fentry/kprobe: such notifications of the chain being walked */
	__u64 failed_notified;       /* failed sends with a notification to come, ever */
	__u64 file;                  /* file of its latest zerocopy send, and that file's socket: */
	__u64 sk;                    /*   read again only when the file changes */
	__u64 cgroup;                /* cgroup v2 id and comm of the process at the ring's first send */
	char comm[16];
	__u64 sample_id;             /* the one request being timed: its user_data and send time */
	__u64 sample_ts;
	__u64 chain_head;            /* io_notif_data.head of that notification (6.10+ linked notifications) */
	__u64 c[ZC_NR_PROTOS * ZC_NR_COUNTERS];
};

struct zc_reason_key {
	__u32 tgid;
	__u8 api;
	__u8 proto;
	__u8 reason;
	__u8 pad;
	__s32 stackid;               /* ZC_R_LATE_COPY: kernel stack of skb_copy_ubufs, else -1 */
	__u32 pad2;
};

/* One MSG_ZEROCOPY socket: notification ids seen, attribution, and per-socket counters. */
struct zc_sock {
	__u32 tgid;
	__u8 proto;
	__u8 append_reason;          /* send-time copy the route predicts (no_sg/no_csum/over_mtu) for */
	__u8 append_prev;            /*   the sends from id append_since on, and for those before it */
	__u8 local;                  /* tracepoint tier: ids local_lo..local_hi were delivered locally */
	__u32 first_id;              /* notification id of the first send seen */
	__u32 ifindex;
	__u32 netns;
	__u32 seq;                   /* sends seen: latency samples one in ZC_LATENCY_EVERY */
	__u32 append_since;
	__u32 local_lo;              /*   (rx_evidence: the latest run of them) */
	__u32 local_hi;
	__u32 pad;
	__u64 sample_id;             /* the one send being timed: its notification id and time */
	__u64 sample_ts;
	__u64 ino;
	__u64 cgroup;
	__u64 requests;
	__u64 bytes;
	__u64 zerocopied;
	__u64 copied;
	__u64 read_ids;              /* fentry/kprobe: ids the application read from the error queue */
};

/* TCP_ZEROCOPY_RECEIVE results of one process (getsockopt(IPPROTO_TCP, 35) as the app got them). */
struct zc_rx {
	__u64 calls;
	__u64 mapped;                /* bytes mapped into the application (zero-copy) */
	__u64 copied;                /* bytes copied into the copy buffer (small remainders) */
	__u64 skipped;               /* recv_skip_hint: bytes left for a plain, copying recv() */
	__u64 errors;                /* calls that failed */
	__u64 cgroup;                /* cgroup v2 id of the process at its first call */
	char comm[16];
};

/* What the probes could not record, per cause (zc_errors): how often, and the send requests and
 * bytes that went uncounted or lost their verdict. */
struct zc_lost {
	__u64 events;
	__u64 requests;
	__u64 bytes;
};

struct zc_kev {
	__u64 count;
	__u64 bytes;
};

#endif /* ZCTRACE_H */
