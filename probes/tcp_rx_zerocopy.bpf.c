/* Receive side: TCP_ZEROCOPY_RECEIVE (every tier).
 *
 * getsockopt(fd, IPPROTO_TCP, TCP_ZEROCOPY_RECEIVE, &zc, &len) maps whole pages of the receive
 * queue into the application; what it could not map is copied into the copy buffer or left for
 * a plain recv() (recv_skip_hint). There is no tracepoint inside tcp_zerocopy_receive, so the
 * result is read from the application's struct tcp_zerocopy_receive at syscall exit.
 */

#include "maps.bpf.h"

#define ZC_IPPROTO_TCP_LEVEL 6
#define ZC_TCP_ZEROCOPY_RECEIVE 35

BPF_HASH(zc_rx_calls, u64, u64, 10240); /* thread -> struct tcp_zerocopy_receive __user * */
BPF_HASH(zc_rx, u32, struct zc_rx, 4096);

TRACEPOINT_PROBE(syscalls, sys_enter_getsockopt)
{
	u64 id = bpf_get_current_pid_tgid();
	u64 optval = (u64)args->optval;

	if (args->level != ZC_IPPROTO_TCP_LEVEL || args->optname != ZC_TCP_ZEROCOPY_RECEIVE ||
	    !zc_tracked(id >> 32))
		return 0;
	zc_rx_calls.update(&id, &optval);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_getsockopt)
{
	u64 id = bpf_get_current_pid_tgid();
	u64 *optval = zc_rx_calls.lookup(&id);
	u32 tgid = id >> 32;

	if (!optval)
		return 0;
	/* struct tcp_zerocopy_receive: length at 8, recv_skip_hint at 12, copybuf_len at 32 */
	u64 user = *optval;
	zc_rx_calls.delete(&id);
	struct zc_rx zero = {}, *rx = zc_rx.lookup(&tgid);
	if (!rx) {
		bpf_get_current_comm(&zero.comm, sizeof(zero.comm));
		zero.cgroup = bpf_get_current_cgroup_id();
		zc_rx.insert(&tgid, &zero);
		rx = zc_rx.lookup(&tgid);
		if (!rx)
			return 0;
	}
	__sync_fetch_and_add(&rx->calls, 1);
	if (args->ret < 0) {
		__sync_fetch_and_add(&rx->errors, 1);
		return 0;
	}
	u32 length = 0, skip = 0;
	s32 copybuf = 0;
	bpf_probe_read_user(&length, sizeof(length), (const char *)user + 8);
	bpf_probe_read_user(&skip, sizeof(skip), (const char *)user + 12);
	bpf_probe_read_user(&copybuf, sizeof(copybuf), (const char *)user + 32);
	__sync_fetch_and_add(&rx->mapped, length);
	__sync_fetch_and_add(&rx->skipped, skip);
	if (copybuf > 0)
		__sync_fetch_and_add(&rx->copied, (u64)copybuf);
	return 0;
}
