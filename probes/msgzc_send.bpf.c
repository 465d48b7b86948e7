/* MSG_ZEROCOPY send requests, from the send syscalls (every tier).
 *
 * A request is counted when the kernel takes a notification id for it: the socket's sk_zckey
 * advances across the syscall. That is exact for send/sendto/sendmsg/sendmmsg, TCP and UDP,
 * including TCP's coalescing of consecutive sends into one notification range. Sends with
 * MSG_ZEROCOPY that never got an id are `not attempted`, with the reason the kernel had.
 */

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

static __always_inline int zc_send_enter(int fd, u64 flags, u64 mmsg)
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
	return 0;
}

static __always_inline u64 zc_mmsg_bytes(u64 vec, long n)
{
	u64 total = 0;

	for (int i = 0; i < 64; i++) {
		u32 len = 0;
		if (i >= n)
			break;
		/* struct mmsghdr { struct user_msghdr msg_hdr (56 bytes); unsigned int msg_len; } */
		bpf_probe_read_user(&len, sizeof(len), (const char *)vec + i * 64 + 56);
		total += len;
	}
	return total;
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
			zc_add(s, ZC_NA_ENOBUFS, 1);
		else if (ret == -ZC_EOPNOTSUPP)
			zc_add(s, ZC_NA_EOPNOTSUPP, 1);
		return 0;
	}
	zc_add(s, ZC_REQUESTS, taken);
	if (ret > 0)
		zc_add(s, ZC_BYTES, c.is_mmsg ? zc_mmsg_bytes(c.mmsg, ret) : (u64)ret);

	struct zc_sock fresh = {.tgid = id >> 32, .proto = c.proto, .first_id = c.zckey, .next_id = now};
	struct zc_sock *st = zc_socks.lookup(&c.sk);
	if (st && st->tgid == fresh.tgid)
		st->next_id = now;
	else
		zc_socks.update(&c.sk, &fresh); /* new socket, or a reused address */
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendto)
{
	return zc_send_enter(args->fd, args->flags, 0);
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendto)
{
	return zc_send_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg)
{
	return zc_send_enter(args->fd, args->flags, 0);
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg)
{
	return zc_send_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg)
{
	return zc_send_enter(args->fd, args->flags, (u64)args->mmsg);
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg)
{
	return zc_send_exit(args->ret);
}
