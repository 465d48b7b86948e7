/* MSG_ZEROCOPY send requests, from the send syscalls (every tier).
 *
 * A request is counted when the kernel takes a notification id for it: the socket's sk_zckey
 * advances across the syscall. That is exact for send/sendto/sendmsg/sendmmsg, TCP and UDP,
 * including TCP's coalescing of consecutive sends into one notification range. Sends with
 * MSG_ZEROCOPY that never got an id are `not attempted`, with the reason the kernel had.
 * Per socket it keeps the first id seen (to ignore notifications of earlier sends), who sent
 * them (cgroup, netns, inode, egress device) and whether the route predicts a copy at send time.
 */

#include "kread.bpf.h"
#include "maps.bpf.h"
#include "predict.bpf.h"

struct zc_call {
	u64 sk;
	u64 mmsg;      /* sendmmsg vector, to sum the bytes of each message */
	u32 zckey;
	u8 zc_enabled; /* SOCK_ZEROCOPY set on the socket */
	u8 proto;
	u8 is_mmsg;
	u8 pad;
};
BPF_HASH(zc_send_calls, u64, struct zc_call, 10240);

/* ENOBUFS from msg_zerocopy_alloc: optmem (sock_omalloc) if the socket's optmem is used up,
 * else the pinned-pages limit (RLIMIT_MEMLOCK). */
static __always_inline int zc_enobufs_counter(void *sk)
{
	void *net = 0;
	int omem = 0;
	u32 optmem_max = 0;

	ZC_READ(omem, sk, ZC_OFF_sock_sk_omem_alloc);
#ifdef ZC_OFF_net_sysctl_optmem_max
	ZC_READ(net, sk, ZC_OFF_sock_skc_net);
	if (net)
		ZC_READ(optmem_max, net, ZC_OFF_net_sysctl_optmem_max);
#elif defined(ZC_OPTMEM_MAX_ADDR) /* before 6.9: one host-wide int */
	ZC_READ(optmem_max, (void *)ZC_OPTMEM_MAX_ADDR, 0);
#else
	optmem_max = ZC_OPTMEM_MAX;
#endif
	return (u64)omem + ZC_OPTMEM_SLACK > optmem_max ? ZC_NA_ENOBUFS_OPTMEM : ZC_NA_ENOBUFS_MEMLOCK;
}

static __always_inline void zc_sock_identity(void *sk, struct zc_sock *st)
{
	void *socket = 0, *file = 0, *inode = 0, *net = 0;

	st->cgroup = bpf_get_current_cgroup_id();
	ZC_READ(net, sk, ZC_OFF_sock_skc_net);
	if (net)
		ZC_READ(st->netns, net, ZC_OFF_net_ns_inum);
	ZC_READ(socket, sk, ZC_OFF_sock_sk_socket);
	if (socket)
		ZC_READ(file, socket, ZC_OFF_socket_file);
	if (file)
		ZC_READ(inode, file, ZC_OFF_file_f_inode);
	if (inode)
		ZC_READ(st->ino, inode, ZC_OFF_inode_i_ino);
}

/* The first ZC_MMSG_MAX entries of a sendmmsg vector, read in one go (one user read instead of
 * one per message). */
#define ZC_MMSG_MAX 64
#define ZC_MMSGHDR 64 /* struct mmsghdr { struct user_msghdr msg_hdr (56 bytes); unsigned int msg_len; } */
struct zc_mmsgv {
	u8 b[ZC_MMSG_MAX * ZC_MMSGHDR];
};
BPF_PERCPU_ARRAY(zc_mmsg_scratch, struct zc_mmsgv, 1);

static __always_inline u64 zc_mmsg_bytes(u64 vec, long n)
{
	u32 zero = 0, size = (n > ZC_MMSG_MAX ? ZC_MMSG_MAX : n) * ZC_MMSGHDR;
	struct zc_mmsgv *v = zc_mmsg_scratch.lookup(&zero);
	u64 total = 0;

	if (!v || size == 0 || size > ZC_MMSG_MAX * ZC_MMSGHDR || bpf_probe_read_user(v->b, size, (const void *)vec))
		return 0;
	/* A fixed trip count (entries past n are stale and masked): a loop whose exit depends on n
	 * is turned by clang into one the verifier cannot bound. */
	for (int i = 0; i < ZC_MMSG_MAX; i++) {
		u32 len = *(u32 *)(v->b + i * ZC_MMSGHDR + 56);
		total += i < n ? len : 0;
	}
	return total;
}

/* Bytes a sendmsg asks to send: the sum of its first iovecs (for the send-time prediction). */
static __always_inline u64 zc_msghdr_len(u64 umsg)
{
	u64 iov = 0, iovlen = 0, total = 0;

	/* struct user_msghdr: msg_iov at 16, msg_iovlen at 24; struct iovec { base; len; } */
	bpf_probe_read_user(&iov, sizeof(iov), (const char *)umsg + 16);
	bpf_probe_read_user(&iovlen, sizeof(iovlen), (const char *)umsg + 24);
	for (int i = 0; i < 8; i++) {
		u64 len = 0;
		if (i >= iovlen)
			break;
		bpf_probe_read_user(&len, sizeof(len), (const char *)iov + i * 16 + 8);
		total += len;
	}
	return total;
}

/* The socket's state, created on its first send seen. It must exist before the send runs:
 * on a device that frees the packet at once, the completion comes inside the syscall. */
static __always_inline struct zc_sock *zc_sock_get(void *sk, u32 tgid, u8 proto, u32 zckey)
{
	u64 key = (u64)sk;
	struct zc_sock *st = zc_socks.lookup(&key);

	if (st && st->tgid == tgid)
		return st;
	struct zc_sock fresh = {.tgid = tgid, .proto = proto, .first_id = zckey};
	zc_sock_identity(sk, &fresh); /* a new socket, or a reused address */
	if (zc_socks.update(&key, &fresh)) {
		zc_lose(ZC_ERR_SOCKS_FULL, 0, 0);
		return 0;
	}
	return zc_socks.lookup(&key);
}

/* `len`: bytes asked (sendto), or 0 to read them from `umsg` (sendmsg, first of sendmmsg). */
static __always_inline int zc_send_enter(int fd, u64 flags, u64 len, u64 umsg, u64 mmsg)
{
	u64 id = bpf_get_current_pid_tgid();

	if (!(flags & ZC_MSG_ZEROCOPY) || !zc_tracked(id >> 32))
		return 0;
	void *sk = zc_fd_to_sock(fd);
	if (!sk)
		return 0;
	struct zc_call call = {.sk = (u64)sk, .mmsg = mmsg, .is_mmsg = mmsg != 0};
	unsigned long skflags = 0;
	u16 ipproto = 0;
	ZC_READ(call.zckey, sk, ZC_OFF_sock_sk_zckey);
	ZC_READ(skflags, sk, ZC_OFF_sock_skc_flags);
	ZC_READ(ipproto, sk, ZC_OFF_sock_sk_protocol);
	call.zc_enabled = (skflags >> ZC_SOCK_ZEROCOPY) & 1;
	call.proto = zc_proto_of(ipproto);
	zc_send_calls.update(&id, &call);
	/* Before the send runs: its completions may come inside the syscall. */
	zc_stats_get(id >> 32, ZC_API_MSG_ZEROCOPY, call.proto, 1);
	if (!call.zc_enabled)
		return 0;
	struct zc_sock *st = zc_sock_get(sk, id >> 32, call.proto, call.zckey);
	if (st) {
		u32 ifindex = 0;
		void *dev = zc_sk_dev(sk);
		u8 reason = zc_predict_copy(sk, dev, call.proto, len ? len : zc_msghdr_len(umsg), flags, &ifindex);
		if (reason != st->append_reason) { /* from this send's id on (a new route, a cork, ...) */
			st->append_prev = st->append_reason;
			st->append_since = call.zckey;
			st->append_reason = reason;
		}
		st->ifindex = ifindex;
		/* timed from here: on a device that frees at once the completion comes inside the call */
		zc_sample_send(&st->seq, &st->sample_id, &st->sample_ts, call.zckey);
	}
	return 0;
}

static __always_inline int zc_send_exit(long ret)
{
	u64 id = bpf_get_current_pid_tgid();
	struct zc_call *call = zc_send_calls.lookup(&id);

	if (!call)
		return 0;
	struct zc_call c = *call;
	zc_send_calls.delete(&id);
	struct zc_stats *s = zc_stats_get(id >> 32, ZC_API_MSG_ZEROCOPY, c.proto, 1);
	if (!c.zc_enabled) {
		if (ret >= 0)
			zc_add(s, ZC_NA_SO_ZEROCOPY_UNSET, c.is_mmsg ? (u64)ret : 1);
		return 0;
	}
	u32 now = 0;
	ZC_READ(now, (void *)c.sk, ZC_OFF_sock_sk_zckey);
	u32 taken = now - c.zckey;
	if (taken == 0 || taken > (1 << 20)) {
		if (ret == -ZC_ENOBUFS)
			zc_add(s, zc_enobufs_counter((void *)c.sk), 1);
		else if (ret == -ZC_EOPNOTSUPP)
			zc_add(s, ZC_NA_EOPNOTSUPP, 1);
		return 0;
	}
	u64 bytes = ret <= 0 ? 0 : c.is_mmsg ? zc_mmsg_bytes(c.mmsg, ret) : (u64)ret;
	if (!s)
		zc_lose(ZC_ERR_STATS_FULL, taken, bytes);
	zc_add(s, ZC_REQUESTS, taken);
	zc_add(s, ZC_BYTES, bytes);
	zc_add(s, zc_size_counter(taken == 1 ? bytes : bytes / taken), taken);
	struct zc_sock *st = zc_socks.lookup(&c.sk);
	if (st) {
		__sync_fetch_and_add(&st->requests, taken);
		__sync_fetch_and_add(&st->bytes, bytes);
	}
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendto)
{
	return zc_send_enter(args->fd, args->flags, args->len, 0, 0);
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendto)
{
	return zc_send_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg)
{
	return zc_send_enter(args->fd, args->flags, 0, (u64)args->msg, 0);
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg)
{
	return zc_send_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg)
{
	return zc_send_enter(args->fd, args->flags, 0, (u64)args->mmsg, (u64)args->mmsg);
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg)
{
	return zc_send_exit(args->ret);
}
