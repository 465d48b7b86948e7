// SPDX-License-Identifier: MIT
/*
 * zc_churn: process churn for zctrace's lifecycle tests. Waits for a byte on stdin (so the
 * tracer can add its pid first), then forks COUNT children one after another; each sends one
 * MSG_ZEROCOPY UDP datagram of SIZE bytes to ADDR:PORT and exits. Prints how many sends the
 * kernel accepted (exit 1 on any error), and on stderr how many distinct pids its children had
 * ("distinct pids N": more children than pid_max reuse pids).
 *
 *   zc_churn ADDR PORT COUNT SIZE
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif

static int send_one(const struct sockaddr_in *to, int size)
{
	static char buf[65536];
	int one = 1, fd = socket(AF_INET, SOCK_DGRAM, 0);

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) ||
	    connect(fd, (const struct sockaddr *)to, sizeof(*to)))
		return 1;
	return send(fd, buf, size, MSG_ZEROCOPY) != size;
}

int main(int argc, char **argv)
{
	struct sockaddr_in to = {.sin_family = AF_INET};
	long count, sent = 0, distinct = 0, pid_max = 4194304;
	int size, status;
	unsigned char *seen;
	char go;
	FILE *f;

	if (argc != 5 || inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
		fprintf(stderr, "usage: zc_churn ADDR PORT COUNT SIZE\n");
		return 2;
	}
	f = fopen("/proc/sys/kernel/pid_max", "r");
	if (f) {
		if (fscanf(f, "%ld", &pid_max) != 1)
			pid_max = 4194304;
		fclose(f);
	}
	seen = calloc(pid_max / 8 + 1, 1);
	if (!seen)
		return 1;
	to.sin_port = htons(atoi(argv[2]));
	count = atol(argv[3]);
	size = atoi(argv[4]);
	if (read(0, &go, 1) != 1)
		return 1;
	for (long i = 0; i < count; i++) {
		pid_t pid = fork();
		if (pid < 0)
			return 1;
		if (pid == 0)
			_exit(send_one(&to, size));
		if (waitpid(pid, &status, 0) != pid)
			return 1;
		if (pid < pid_max && !(seen[pid / 8] & (1 << (pid % 8)))) {
			seen[pid / 8] |= 1 << (pid % 8);
			distinct++;
		}
		sent += WIFEXITED(status) && WEXITSTATUS(status) == 0;
	}
	printf("%ld\n", sent);
	fprintf(stderr, "distinct pids %ld\n", distinct);
	return sent != count;
}
