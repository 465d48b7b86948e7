// SPDX-License-Identifier: MIT
/*
 * zc_ref_sender: the send loops of zctrace's Python workload (zctrace/workload/senders.py),
 * written in C, so `zctrace bench --reference` can measure how much of a cell's rate Python
 * costs. Same loops, same batching, same kernel verdicts; no liburing (raw syscalls).
 *
 *   zc_ref_sender -a ADDR -p PORT [-i IFNAME] -P udp|tcp -s SIZE -m MODE (-t SECONDS | -n COUNT)
 *                 [-N NOTIFY_BATCH] [-b BATCH] [-f INFLIGHT] [-w wait|lazy] [-r 0|1]
 *
 * MODE: copy, msg_zerocopy, uring, uring_zc, uring_zc_fixed. Prints one JSON object:
 * requests, bytes, seconds, cpu_seconds, zerocopied, copied, unknown. Exit 1 on error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <time.h>
#include <linux/errqueue.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif
#define OP_SEND_ZC 47
#define SEND_ZC_REPORT_USAGE (1U << 3)
#define RECVSEND_FIXED_BUF (1U << 2)
#define CQE_F_MORE (1U << 1)
#define CQE_F_NOTIF (1U << 3)
#define NOTIF_USAGE_ZC_COPIED (1U << 31)
#define CLOCK_EVERY 64
#define FINAL_WAIT 2.0
#define MAX_BATCH 1024

static struct {
	const char *addr, *ifname, *mode;
	int port, tcp, size, notify_batch, batch, inflight, lazy, report_usage;
	double duration;
	long count;
} cfg = {.notify_batch = 32, .batch = 32, .inflight = 8, .report_usage = 1, .count = -1};

static struct {
	long requests, bytes, zerocopied, copied, notified, expected_notifs, done;
} st;

static void die(const char *what, int err)
{
	fprintf(stderr, "zc_ref_sender: %s: %s\n", what, strerror(err));
	exit(1);
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

static int connect_socket(void)
{
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
				 .ai_socktype = cfg.tcp ? SOCK_STREAM : SOCK_DGRAM}, *ai;
	char port[8];
	int one = 1, fd;

	snprintf(port, sizeof(port), "%d", cfg.port);
	if (getaddrinfo(cfg.addr, port, &hints, &ai))
		die("address", EINVAL);
	fd = socket(ai->ai_family, ai->ai_socktype, 0);
	if (fd < 0)
		die("socket", errno);
	if (cfg.ifname && setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, cfg.ifname, strlen(cfg.ifname)))
		die("SO_BINDTODEVICE", errno);
	if (!strcmp(cfg.mode, "msg_zerocopy") && setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)))
		die("SO_ZEROCOPY", errno);
	if (cfg.tcp && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)))
		die("TCP_NODELAY", errno);
	if (connect(fd, ai->ai_addr, ai->ai_addrlen))
		die("connect", errno);
	freeaddrinfo(ai);
	return fd;
}

/* --- socket modes ------------------------------------------------------------------------ */

static void drain_errqueue(int fd)
{
	char control[128];

	for (;;) {
		struct msghdr msg = {.msg_control = control, .msg_controllen = sizeof(control)};
		struct cmsghdr *cm;

		if (recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
			if (errno == EAGAIN)
				return;
			die("recvmsg(MSG_ERRQUEUE)", errno);
		}
		for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
			struct sock_extended_err *ee = (void *)CMSG_DATA(cm);
			long n;

			if (ee->ee_origin != SO_EE_ORIGIN_ZEROCOPY)
				continue;
			n = (long)(uint32_t)(ee->ee_data - ee->ee_info) + 1;
			if (ee->ee_code & SO_EE_CODE_ZEROCOPY_COPIED)
				st.copied += n;
			else
				st.zerocopied += n;
		}
	}
}

static int wait_errqueue(int fd, long expected, double timeout)
{
	double deadline = mono() + timeout;
	struct pollfd pfd = {.fd = fd, .events = POLLERR};

	drain_errqueue(fd);
	while (st.zerocopied + st.copied < expected) {
		double left = deadline - mono();

		if (left <= 0)
			return 0;
		poll(&pfd, 1, left * 1000 > 1 ? (int)(left * 1000) : 1);
		drain_errqueue(fd);
	}
	return 1;
}

static void run_socket(int fd, char *buf, double deadline)
{
	int zc = !strcmp(cfg.mode, "msg_zerocopy");
	int flags = zc ? MSG_ZEROCOPY : 0;
	int group = zc ? cfg.notify_batch : (cfg.batch > CLOCK_EVERY ? cfg.batch : CLOCK_EVERY);
	int chunk = cfg.batch < group ? cfg.batch : group;
	static struct mmsghdr msgs[MAX_BATCH];
	struct iovec iov = {.iov_base = buf, .iov_len = cfg.size};
	long left = cfg.count;

	for (int i = 0; i < chunk; i++) {
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	for (;;) {
		long n = left < 0 || group < left ? group : left, done = 0;

		while (done < n) {
			int want = chunk < n - done ? chunk : n - done, k;

			if (chunk == 1) {
				ssize_t r = send(fd, buf, cfg.size, flags);

				k = r < 0 ? -1 : 1;
				if (r >= 0)
					st.bytes += r;
			} else {
				k = sendmmsg(fd, msgs, want, flags);
				for (int i = 0; i < k; i++)
					st.bytes += msgs[i].msg_len;
			}
			if (k < 0) {
				if (!zc || errno != ENOBUFS || !wait_errqueue(fd, st.zerocopied + st.copied + 1, 1.0))
					die("send", errno);
				break;
			}
			done += k;
		}
		st.requests += done;
		if (zc)
			drain_errqueue(fd);
		if (left >= 0) {
			left -= done;
			if (!left)
				break;
		} else if (mono() >= deadline) {
			break;
		}
	}
	if (zc)
		wait_errqueue(fd, st.requests, FINAL_WAIT);
}

/* --- io_uring modes ---------------------------------------------------------------------- */

struct ring {
	int fd;
	unsigned sq_entries, cq_entries, *sq_tail, *sq_flags, *cq_head, *cq_tail, cq_mask, tail;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
};

static void ring_setup(struct ring *r, unsigned entries)
{
	struct io_uring_params p = {.flags = IORING_SETUP_CQSIZE, .cq_entries = 2 * entries};
	void *sq, *cq;
	unsigned *array;

	r->fd = syscall(__NR_io_uring_setup, entries, &p);
	if (r->fd < 0)
		die("io_uring_setup", errno);
	sq = mmap(0, p.sq_off.array + p.sq_entries * 4, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
		  r->fd, IORING_OFF_SQ_RING);
	cq = mmap(0, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
	r->sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || r->sqes == MAP_FAILED)
		die("mmap ring", errno);
	r->sq_entries = p.sq_entries;
	r->cq_entries = p.cq_entries;
	r->sq_tail = sq + p.sq_off.tail;
	r->sq_flags = sq + p.sq_off.flags;
	array = sq + p.sq_off.array;
	for (unsigned i = 0; i < p.sq_entries; i++)
		array[i] = i;
	r->tail = *r->sq_tail;
	r->cq_head = cq + p.cq_off.head;
	r->cq_tail = cq + p.cq_off.tail;
	r->cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
	r->cqes = cq + p.cq_off.cqes;
}

static void ring_push(struct ring *r, unsigned k, unsigned wait_nr)
{
	unsigned flags = wait_nr || (__atomic_load_n(r->sq_flags, __ATOMIC_ACQUIRE) & IORING_SQ_CQ_OVERFLOW)
				 ? IORING_ENTER_GETEVENTS : 0;

	r->tail += k;
	__atomic_store_n(r->sq_tail, r->tail, __ATOMIC_RELEASE);
	if (!k && !flags)
		return;
	while (syscall(__NR_io_uring_enter, r->fd, k, wait_nr, flags, NULL, 0) < 0) {
		if (errno != EINTR)
			die("io_uring_enter", errno);
		k = 0;
	}
}

static int ring_reap(struct ring *r, int usage, int wait_notif)
{
	unsigned head = *r->cq_head, tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
	int n = 0;

	for (; head != tail; head++, n++) {
		struct io_uring_cqe *c = &r->cqes[head & r->cq_mask];

		if (c->flags & CQE_F_NOTIF) {
			st.notified++;
			if (usage) {
				if ((uint32_t)c->res & NOTIF_USAGE_ZC_COPIED)
					st.copied++;
				else
					st.zerocopied++;
			}
			st.done += wait_notif;
		} else if (c->res < 0) {
			die("io_uring send", -c->res);
		} else {
			int more = !!(c->flags & CQE_F_MORE);

			st.requests++;
			st.bytes += c->res;
			st.expected_notifs += more;
			st.done += !(more && wait_notif);
		}
	}
	__atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
	return n;
}

static void run_uring(int fd, char *buf, double deadline)
{
	int zc = strcmp(cfg.mode, "uring") != 0, fixed = !strcmp(cfg.mode, "uring_zc_fixed");
	int usage = zc && cfg.report_usage, wait_notif = zc && !cfg.lazy;
	unsigned entries = 64;
	long left = cfg.count, submitted = 0;
	struct ring r;
	double t_end;

	while (entries < 2u * cfg.inflight)
		entries <<= 1;
	ring_setup(&r, entries);
	if (fixed) {
		struct iovec iov = {.iov_base = buf, .iov_len = cfg.size};

		if (syscall(__NR_io_uring_register, r.fd, IORING_REGISTER_BUFFERS, &iov, 1))
			die("IORING_REGISTER_BUFFERS", errno);
	}
	for (unsigned i = 0; i < r.sq_entries; i++) {
		struct io_uring_sqe *s = &r.sqes[i];

		memset(s, 0, sizeof(*s));
		s->opcode = zc ? OP_SEND_ZC : IORING_OP_SEND;
		s->fd = fd;
		s->addr = (uintptr_t)buf;
		s->len = cfg.size;
		s->msg_flags = cfg.tcp ? MSG_WAITALL : 0;
		s->ioprio = (usage ? SEND_ZC_REPORT_USAGE : 0) | (fixed ? RECVSEND_FIXED_BUF : 0);
		s->user_data = i;
	}
	while (left < 0 ? mono() < deadline : left > 0) {
		long unsent = submitted - st.requests;
		long owed = unsent + st.expected_notifs - st.notified + unsent;
		long n = cfg.inflight - (submitted - st.done), room = ((long)r.cq_entries - owed) / 2;

		n = n < room ? n : room;
		n = n > 0 ? n : 0;
		if (left >= 0) {
			n = n < left ? n : left;
			left -= n;
		}
		submitted += n;
		ring_push(&r, n, unsent + n > 1 ? unsent + n : 1);
		ring_reap(&r, usage, wait_notif);
	}
	t_end = mono() + FINAL_WAIT;
	while (submitted - st.requests + st.expected_notifs - st.notified > 0 && mono() < t_end) {
		struct pollfd pfd = {.fd = r.fd, .events = POLLIN};

		if (!ring_reap(&r, usage, wait_notif))
			poll(&pfd, 1, 10);
		ring_push(&r, 0, 0);
	}
	close(r.fd);
}

int main(int argc, char **argv)
{
	double t0, cpu0, seconds, cpu;
	char *buf;
	int c, fd;

	while ((c = getopt(argc, argv, "a:p:i:P:s:m:t:n:N:b:f:w:r:")) != -1) {
		switch (c) {
		case 'a': cfg.addr = optarg; break;
		case 'p': cfg.port = atoi(optarg); break;
		case 'i': cfg.ifname = optarg; break;
		case 'P': cfg.tcp = !strcmp(optarg, "tcp"); break;
		case 's': cfg.size = atoi(optarg); break;
		case 'm': cfg.mode = optarg; break;
		case 't': cfg.duration = atof(optarg); break;
		case 'n': cfg.count = atol(optarg); break;
		case 'N': cfg.notify_batch = atoi(optarg); break;
		case 'b': cfg.batch = atoi(optarg); break;
		case 'f': cfg.inflight = atoi(optarg); break;
		case 'w': cfg.lazy = !strcmp(optarg, "lazy"); break;
		case 'r': cfg.report_usage = atoi(optarg); break;
		default: return 2;
		}
	}
	if (!cfg.addr || !cfg.mode || cfg.size <= 0 || cfg.batch < 1 || cfg.batch > MAX_BATCH ||
	    cfg.notify_batch < 1 || cfg.inflight < 1 || (cfg.count < 0) == (cfg.duration <= 0)) {
		fprintf(stderr, "zc_ref_sender: bad arguments (see the comment at the top of the source)\n");
		return 2;
	}
	buf = mmap(0, cfg.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		die("mmap payload", errno);
	for (int i = 0; i < cfg.size; i++)
		buf[i] = (char)i;
	fd = connect_socket();
	cpu0 = thread_cpu();
	t0 = mono();
	if (!strncmp(cfg.mode, "uring", 5))
		run_uring(fd, buf, t0 + cfg.duration);
	else
		run_socket(fd, buf, t0 + cfg.duration);
	seconds = mono() - t0;
	cpu = thread_cpu() - cpu0;
	close(fd);
	printf("{\"requests\": %ld, \"bytes\": %ld, \"seconds\": %.6f, \"cpu_seconds\": %.6f, "
	       "\"zerocopied\": %ld, \"copied\": %ld}\n",
	       st.requests, st.bytes, seconds, cpu, st.zerocopied, st.copied);
	return 0;
}
