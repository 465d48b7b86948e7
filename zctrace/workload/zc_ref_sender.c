// SPDX-License-Identifier: MIT
/*
 * zc_ref_sender: zctrace's send engine (zctrace/workload/engine.c) as a program of its own, so
 * `zctrace bench --reference` can compare a workload in zctrace's process (the compiled engine
 * or the Python loops) with the same loops run alone. Raw syscalls, no liburing.
 *
 *   zc_ref_sender -a ADDR -p PORT [-i IFNAME] -P udp|tcp -s SIZE -m MODE (-t SECONDS | -n COUNT)
 *                 [-N NOTIFY_BATCH] [-b BATCH] [-f INFLIGHT] [-w wait|lazy] [-r 0|1]
 *
 * MODE: copy, msg_zerocopy, uring, uring_zc, uring_zc_fixed. Prints one JSON object:
 * requests, bytes, seconds, cpu_seconds, zerocopied, copied. Exit 1 on error, 2 on bad input.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif

static void die(const char *what, int err)
{
	fprintf(stderr, "zc_ref_sender: %s: %s\n", what, strerror(err));
	exit(1);
}

static int connect_socket(const char *addr, int port, const char *ifname, const struct zc_config *cfg)
{
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
				 .ai_socktype = cfg->tcp ? SOCK_STREAM : SOCK_DGRAM}, *ai;
	char service[8];
	int one = 1, fd;

	snprintf(service, sizeof(service), "%d", port);
	if (getaddrinfo(addr, service, &hints, &ai))
		die("address", EINVAL);
	fd = socket(ai->ai_family, ai->ai_socktype, 0);
	if (fd < 0)
		die("socket", errno);
	if (ifname && setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname, strlen(ifname)))
		die("SO_BINDTODEVICE", errno);
	if (cfg->mode == ZC_MSG_ZEROCOPY && setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)))
		die("SO_ZEROCOPY", errno);
	if (cfg->tcp && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)))
		die("TCP_NODELAY", errno);
	if (connect(fd, ai->ai_addr, ai->ai_addrlen))
		die("connect", errno);
	freeaddrinfo(ai);
	return fd;
}

int main(int argc, char **argv)
{
	struct zc_config cfg = {.notify_batch = 32, .batch = 32, .inflight = 8, .report_usage = 1,
				.count = -1, .final_wait = 2.0, .mode = -1};
	const char *addr = NULL, *ifname = NULL;
	struct zc_result res;
	int c, fd, port = 0;

	while ((c = getopt(argc, argv, "a:p:i:P:s:m:t:n:N:b:f:w:r:")) != -1) {
		switch (c) {
		case 'a': addr = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'i': ifname = optarg; break;
		case 'P': cfg.tcp = !strcmp(optarg, "tcp"); break;
		case 's': cfg.size = atoi(optarg); break;
		case 'm': cfg.mode = zc_mode_of(optarg); break;
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
	if (!addr || (int)cfg.mode < 0) {
		fprintf(stderr, "zc_ref_sender: bad arguments (see the comment at the top of the source)\n");
		return 2;
	}
	fd = connect_socket(addr, port, ifname, &cfg);
	if (zc_run(fd, &cfg, &res)) {
		fprintf(stderr, "zc_ref_sender: %s: %s\n", res.failed, strerror(res.err));
		return strcmp(res.failed, "arguments") ? 1 : 2;
	}
	close(fd);
	printf("{\"requests\": %ld, \"bytes\": %ld, \"seconds\": %.6f, \"cpu_seconds\": %.6f, "
	       "\"zerocopied\": %ld, \"copied\": %ld}\n",
	       res.requests, res.bytes, res.seconds, res.cpu_seconds, res.zerocopied, res.copied);
	return 0;
}
