// SPDX-License-Identifier: MIT
/*
 * The send loops of zctrace's built-in workload in C (see engine.h); the Python loops in
 * zctrace/workload/senders.py are the same loops, kept as `--engine python`.
 *
 * Socket modes send `batch` requests per sendmmsg(2) (1: one send(2) each); MSG_ZEROCOPY reads
 * the error queue every `notify_batch` sends. io_uring modes keep `inflight` requests in flight:
 * submit the free part of the window in one io_uring_enter and wait for all its send CQEs; a
 * SEND_ZC request is in flight until its notification (wait) or its send CQE (lazy).
 */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <signal.h>
#include <time.h> /* before linux/errqueue.h, which needs struct timespec */
#include <linux/errqueue.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif
#define OP_SEND_ZC 47
#define SEND_ZC_REPORT_USAGE (1U << 3)
#define RECVSEND_FIXED_BUF (1U << 2)
#define CQE_F_MORE (1U << 1)
#define CQE_F_NOTIF (1U << 3)
#define NOTIF_USAGE_ZC_COPIED (1U << 31)
static volatile sig_atomic_t stop_requested; /* zc_request_stop(): end the loops early */
#define CLOCK_EVERY 64

static const char *const MODE_NAMES[] = {"copy", "msg_zerocopy", "uring", "uring_zc", "uring_zc_fixed"};

struct run {
	const struct zc_config *cfg;
	struct zc_result *res;
	int fd;
	char *buf;
	long notified, expected_notifs, done;
};

int zc_mode_of(const char *name)
{
	for (unsigned i = 0; i < sizeof(MODE_NAMES) / sizeof(MODE_NAMES[0]); i++)
		if (!strcmp(name, MODE_NAMES[i]))
			return (int)i;
	return -1;
}

static int fail(struct run *r, const char *what, int err)
{
	r->res->failed = what;
	r->res->err = err;
	return -1;
}

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double thread_cpu(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* --- socket modes ------------------------------------------------------------------------ */

/* Socket calls through syscall(2), not glibc's wrappers: those are cancellation points, which in
 * a multi-threaded process (the engine runs in a thread of zctrace's) switch asynchronous
 * cancellation on and off around every call, two atomic operations a single-threaded sender
 * never pays. */
static ssize_t sys_send(int fd, const void *buf, size_t len, int flags)
{
	return syscall(__NR_sendto, fd, buf, len, flags, NULL, 0);
}

static int sys_sendmmsg(int fd, struct mmsghdr *msgs, unsigned n, int flags)
{
	return syscall(__NR_sendmmsg, fd, msgs, n, flags);
}

static ssize_t sys_recvmsg(int fd, struct msghdr *msg, int flags)
{
	return syscall(__NR_recvmsg, fd, msg, flags);
}

static int sys_poll(struct pollfd *fds, nfds_t n, int timeout)
{
	return syscall(__NR_poll, fds, n, timeout);
}


static int drain_errqueue(struct run *r)
{
	char control[128];

	for (;;) {
		struct msghdr msg = {.msg_control = control, .msg_controllen = sizeof(control)};
		struct cmsghdr *cm;

		if (sys_recvmsg(r->fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
			if (errno == EAGAIN)
				return 0;
			if (errno == EINTR)
				continue;
			return fail(r, "recvmsg(MSG_ERRQUEUE)", errno);
		}
		for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
			struct sock_extended_err *ee = (void *)CMSG_DATA(cm);
			long n;

			if (ee->ee_origin != SO_EE_ORIGIN_ZEROCOPY)
				continue;
			n = (long)(uint32_t)(ee->ee_data - ee->ee_info) + 1;
			if (ee->ee_code & SO_EE_CODE_ZEROCOPY_COPIED)
				r->res->copied += n;
			else
				r->res->zerocopied += n;
		}
	}
}

/* Drain until `expected` requests are notified or `timeout` passes: 1 all, 0 not, -1 error. */
static int wait_errqueue(struct run *r, long expected, double timeout)
{
	double deadline = mono() + timeout;
	struct pollfd pfd = {.fd = r->fd, .events = POLLERR};

	if (drain_errqueue(r))
		return -1;
	while (r->res->zerocopied + r->res->copied < expected) {
		double left = deadline - mono();

		if (left <= 0 || stop_requested)
			return 0;
		sys_poll(&pfd, 1, left * 1000 > 1 ? (int)(left * 1000) : 1);
		if (drain_errqueue(r))
			return -1;
	}
	return 1;
}

static int run_socket(struct run *r, double deadline)
{
	const struct zc_config *cfg = r->cfg;
	struct zc_result *res = r->res;
	int zc = cfg->mode == ZC_MSG_ZEROCOPY, flags = zc ? MSG_ZEROCOPY : 0;
	int group = zc ? cfg->notify_batch : (cfg->batch > CLOCK_EVERY ? cfg->batch : CLOCK_EVERY);
	int chunk = cfg->batch < group ? cfg->batch : group;
	struct mmsghdr msgs[ZC_MAX_BATCH];
	struct iovec iov = {.iov_base = r->buf, .iov_len = cfg->size};
	long left = cfg->count;

	memset(msgs, 0, sizeof(msgs[0]) * chunk);
	for (int i = 0; i < chunk; i++) {
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	for (;;) {
		long n = left < 0 || group < left ? group : left, done = 0;

		while (done < n) {
			int want = chunk < n - done ? chunk : n - done, k;

			if (chunk == 1) {
				ssize_t sent = sys_send(r->fd, r->buf, cfg->size, flags);

				k = sent < 0 ? -1 : 1;
				if (sent >= 0)
					res->bytes += sent;
			} else {
				k = sys_sendmmsg(r->fd, msgs, want, flags);
				for (int i = 0; i < k; i++)
					res->bytes += msgs[i].msg_len;
			}
			if (k < 0) {
				int err = errno;

				if (err == EINTR)
					continue;
				/* ENOBUFS: too many zerocopy sends outstanding (optmem, locked pages) */
				if (!zc || err != ENOBUFS ||
				    wait_errqueue(r, res->zerocopied + res->copied + 1, 1.0) != 1)
					return fail(r, chunk == 1 ? "send" : "sendmmsg", err);
				break;
			}
			done += k;
		}
		res->requests += done;
		if (zc && drain_errqueue(r))
			return -1;
		if (left >= 0) {
			left -= done;
			if (!left)
				break;
		} else if (mono() >= deadline) {
			break;
		}
		if (stop_requested)
			break;
	}
	return zc && wait_errqueue(r, res->requests, cfg->final_wait) < 0 ? -1 : 0;
}

/* --- io_uring modes ---------------------------------------------------------------------- */

struct ring {
	int fd, enter_fd;
	unsigned enter_flags; /* IORING_ENTER_REGISTERED_RING when enter_fd is a registered index */
	unsigned sq_entries, cq_entries, *sq_tail, *sq_flags, *cq_head, *cq_tail, cq_mask, tail;
	void *sq, *cq;
	size_t sq_len, cq_len, sqes_len;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
};

static void ring_close(struct ring *g)
{
	if (g->sq && g->sq != MAP_FAILED)
		munmap(g->sq, g->sq_len);
	if (g->cq && g->cq != MAP_FAILED)
		munmap(g->cq, g->cq_len);
	if (g->sqes && g->sqes != MAP_FAILED)
		munmap(g->sqes, g->sqes_len);
	if (g->fd >= 0)
		close(g->fd);
}

/* A ring set up as liburing's send-zerocopy example sets its own: task work run cooperatively
 * (no IPI per completion) and the ring fd registered (no fd lookup per io_uring_enter), each
 * dropped on a kernel without it (5.19, 5.18). */
static int ring_setup(struct run *r, struct ring *g, unsigned entries)
{
	struct io_uring_params p = {.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
				    .cq_entries = 2 * entries};
	struct io_uring_rsrc_update reg = {.offset = -1U};
	unsigned *array;

	memset(g, 0, sizeof(*g));
	g->fd = syscall(__NR_io_uring_setup, entries, &p);
	if (g->fd < 0 && errno == EINVAL) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = 2 * entries;
		g->fd = syscall(__NR_io_uring_setup, entries, &p);
	}
	if (g->fd < 0)
		return fail(r, "io_uring_setup", errno);
	reg.data = g->fd;
	g->enter_fd = g->fd;
	if (syscall(__NR_io_uring_register, g->fd, IORING_REGISTER_RING_FDS, &reg, 1) == 1) {
		g->enter_fd = reg.offset;
		g->enter_flags = IORING_ENTER_REGISTERED_RING;
	}
	g->sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	g->cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	g->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
	g->sq = mmap(0, g->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, g->fd, IORING_OFF_SQ_RING);
	g->cq = mmap(0, g->cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, g->fd, IORING_OFF_CQ_RING);
	g->sqes = mmap(0, g->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, g->fd, IORING_OFF_SQES);
	if (g->sq == MAP_FAILED || g->cq == MAP_FAILED || g->sqes == MAP_FAILED)
		return fail(r, "mmap(io_uring)", errno);
	g->sq_entries = p.sq_entries;
	g->cq_entries = p.cq_entries;
	g->sq_tail = g->sq + p.sq_off.tail;
	g->sq_flags = g->sq + p.sq_off.flags;
	array = g->sq + p.sq_off.array;
	for (unsigned i = 0; i < p.sq_entries; i++)
		array[i] = i;
	g->tail = *g->sq_tail;
	g->cq_head = g->cq + p.cq_off.head;
	g->cq_tail = g->cq + p.cq_off.tail;
	g->cq_mask = *(unsigned *)(g->cq + p.cq_off.ring_mask);
	g->cqes = g->cq + p.cq_off.cqes;
	return 0;
}

/* Publish `k` more SQEs (every slot holds the same request) and wait for `wait_nr` CQEs. */
static int ring_push(struct run *r, struct ring *g, unsigned k, unsigned wait_nr)
{
	unsigned sq_flags = __atomic_load_n(g->sq_flags, __ATOMIC_ACQUIRE);
	unsigned flags = wait_nr || (sq_flags & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN))
				 ? IORING_ENTER_GETEVENTS : 0;

	g->tail += k;
	__atomic_store_n(g->sq_tail, g->tail, __ATOMIC_RELEASE);
	if (!k && !flags)
		return 0;
	while (syscall(__NR_io_uring_enter, g->enter_fd, k, wait_nr, flags | g->enter_flags, NULL, 0) < 0) {
		if (errno != EINTR)
			return fail(r, "io_uring_enter", errno);
		k = 0;
	}
	return 0;
}

/* Count every CQE there: the number reaped, or -1 if a send failed. */
static int ring_reap(struct run *r, struct ring *g, int usage, int wait_notif)
{
	unsigned head = *g->cq_head, tail = __atomic_load_n(g->cq_tail, __ATOMIC_ACQUIRE);
	struct zc_result *res = r->res;
	int n = 0, bad = 0;

	for (; head != tail; head++, n++) {
		struct io_uring_cqe *c = &g->cqes[head & g->cq_mask];

		if (c->flags & CQE_F_NOTIF) {
			r->notified++;
			if (usage) {
				if ((uint32_t)c->res & NOTIF_USAGE_ZC_COPIED)
					res->copied++;
				else
					res->zerocopied++;
			}
			r->done += wait_notif;
		} else if (c->res < 0) {
			bad = -c->res;
		} else {
			int more = !!(c->flags & CQE_F_MORE);

			res->requests++;
			res->bytes += c->res;
			r->expected_notifs += more;
			r->done += !(more && wait_notif);
		}
	}
	__atomic_store_n(g->cq_head, head, __ATOMIC_RELEASE);
	return bad ? fail(r, "io_uring send", bad) : n;
}

static void ring_fill(struct run *r, struct ring *g)
{
	const struct zc_config *cfg = r->cfg;
	int zc = cfg->mode != ZC_URING, fixed = cfg->mode == ZC_URING_ZC_FIXED;

	for (unsigned i = 0; i < g->sq_entries; i++) {
		struct io_uring_sqe *s = &g->sqes[i];

		memset(s, 0, sizeof(*s));
		s->opcode = zc ? OP_SEND_ZC : IORING_OP_SEND;
		s->fd = r->fd;
		s->addr = (uintptr_t)r->buf;
		s->len = cfg->size;
		s->msg_flags = cfg->tcp ? MSG_WAITALL : 0; /* no short sends */
		s->ioprio = (zc && cfg->report_usage ? SEND_ZC_REPORT_USAGE : 0) | (fixed ? RECVSEND_FIXED_BUF : 0);
		s->user_data = i;
	}
}

static int uring_loop(struct run *r, struct ring *g, double deadline)
{
	const struct zc_config *cfg = r->cfg;
	struct zc_result *res = r->res;
	int zc = cfg->mode != ZC_URING;
	int usage = zc && cfg->report_usage, wait_notif = zc && !cfg->lazy;
	long left = cfg->count, submitted = 0;
	double t_end;

	while ((left < 0 ? mono() < deadline : left > 0) && !stop_requested) {
		/* never more CQEs owed than the CQ holds (lazy notifications pile up otherwise) */
		long unsent = submitted - res->requests;
		long owed = unsent + r->expected_notifs - r->notified + unsent;
		long n = cfg->inflight - (submitted - r->done), room = ((long)g->cq_entries - owed) / 2;

		n = n < room ? n : room;
		n = n > 0 ? n : 0;
		if (left >= 0) {
			n = n < left ? n : left;
			left -= n;
		}
		submitted += n;
		if (ring_push(r, g, n, unsent + n > 1 ? unsent + n : 1) || ring_reap(r, g, usage, wait_notif) < 0)
			return -1;
	}
	t_end = mono() + cfg->final_wait; /* then missing notifications stay unknown */
	while (submitted - res->requests + r->expected_notifs - r->notified > 0 && mono() < t_end &&
	       !stop_requested) {
		struct pollfd pfd = {.fd = g->fd, .events = POLLIN};
		int n = ring_reap(r, g, usage, wait_notif);

		if (n < 0)
			return -1;
		if (!n)
			sys_poll(&pfd, 1, 10);
		if (ring_push(r, g, 0, 0)) /* runs the task work of cooperative task running */
			return -1;
	}
	return 0;
}

static int run_uring(struct run *r, double deadline)
{
	const struct zc_config *cfg = r->cfg;
	unsigned entries = 64;
	struct ring g;
	int ret;

	while (entries < 2u * cfg->inflight)
		entries <<= 1;
	ret = ring_setup(r, &g, entries);
	if (!ret && cfg->mode == ZC_URING_ZC_FIXED) {
		struct iovec iov = {.iov_base = r->buf, .iov_len = cfg->size};

		if (syscall(__NR_io_uring_register, g.fd, IORING_REGISTER_BUFFERS, &iov, 1))
			ret = fail(r, "IORING_REGISTER_BUFFERS", errno);
	}
	if (!ret) {
		ring_fill(r, &g);
		ret = uring_loop(r, &g, deadline);
	}
	ring_close(&g);
	return ret;
}

/* --- entry point ------------------------------------------------------------------------- */

void zc_request_stop(void)
{
	stop_requested = 1;
}

int zc_run(int fd, const struct zc_config *cfg, struct zc_result *res)
{
	struct run r = {.cfg = cfg, .res = res, .fd = fd};
	double t0, cpu0;
	int ret;

	memset(res, 0, sizeof(*res));
	stop_requested = 0;
	if (cfg->size <= 0 || cfg->batch < 1 || cfg->batch > ZC_MAX_BATCH || cfg->notify_batch < 1 ||
	    cfg->inflight < 1 || cfg->inflight > ZC_MAX_INFLIGHT || (cfg->count < 0) == (cfg->duration <= 0) ||
	    (unsigned)cfg->mode > ZC_URING_ZC_FIXED)
		return fail(&r, "arguments", EINVAL);
	/* page-aligned, every page touched (none is the shared zero page) */
	r.buf = mmap(0, cfg->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r.buf == MAP_FAILED)
		return fail(&r, "mmap(payload)", errno);
	for (int i = 0; i < cfg->size; i++)
		r.buf[i] = (char)i;
	cpu0 = thread_cpu();
	t0 = mono();
	if (cfg->mode >= ZC_URING)
		ret = run_uring(&r, t0 + cfg->duration);
	else
		ret = run_socket(&r, t0 + cfg->duration);
	res->seconds = mono() - t0;
	res->cpu_seconds = thread_cpu() - cpu0;
	munmap(r.buf, cfg->size);
	return ret;
}
