/* SPDX-License-Identifier: MIT */
/*
 * zctrace's compiled send engine: the loops of every bench column (copy, MSG_ZEROCOPY,
 * io_uring send, SEND_ZC with or without a registered buffer) on a connected socket, with the
 * kernel's own verdicts read from the notifications. Raw syscalls, no liburing. Used by the
 * Python extension zctrace.workload._engine and by scripts/zc_ref_sender.c.
 */
#ifndef ZCTRACE_ENGINE_H
#define ZCTRACE_ENGINE_H

enum zc_mode { ZC_COPY, ZC_MSG_ZEROCOPY, ZC_URING, ZC_URING_ZC, ZC_URING_ZC_FIXED };

struct zc_config {
	enum zc_mode mode;
	int tcp, size, notify_batch, batch, inflight, lazy, report_usage;
	double duration;   /* seconds, or <= 0 with count >= 0 */
	long count;        /* requests, or < 0 with duration > 0 */
	double final_wait; /* seconds to wait for outstanding notifications at the end */
};

struct zc_result {
	long requests, bytes, zerocopied, copied;
	double seconds, cpu_seconds;
	const char *failed; /* the call that failed (NULL: none) and its errno */
	int err;
};

#define ZC_MAX_BATCH 1024
#define ZC_MAX_INFLIGHT 4096

/* The mode named `name`, or -1. */
int zc_mode_of(const char *name);

/* Ask a zc_run in progress (another thread's) to stop at its next clock check; zc_run clears
 * the request when it starts. */
void zc_request_stop(void);

/* Run `cfg` on the connected socket `fd`; 0, or -1 with res->failed and res->err set. */
int zc_run(int fd, const struct zc_config *cfg, struct zc_result *res);

#endif
