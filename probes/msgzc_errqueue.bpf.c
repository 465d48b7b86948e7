/* MSG_ZEROCOPY notifications as the application reads them (every tier).
 *
 * At recvmsg(MSG_ERRQUEUE) exit, read the application's control buffer and take every
 * SO_EE_ORIGIN_ZEROCOPY range lo..hi with its COPIED bit. On the tracepoint tier this is the
 * verdict, and requests whose notifications the application never reads stay `unknown`; on
 * the fentry/kprobe tiers the verdict comes from the kernel's callback and this only counts
 * what was read (the rest is the error-queue backlog).
 */

#include "kread.bpf.h"
#include "maps.bpf.h"
#include "msgzc_ranges.bpf.h"

#define ZC_SOL_IP 0
#define ZC_IP_RECVERR 11
#define ZC_SOL_IPV6 41
#define ZC_IPV6_RECVERR 25
#define ZC_SO_EE_ORIGIN_ZEROCOPY 5
#define ZC_SO_EE_CODE_ZEROCOPY_COPIED 1
#define ZC_MAX_CMSGS 4
#ifdef ZC_TIER_TRACEPOINT
#define ZC_ERRQUEUE_VERDICT 1
#else
#define ZC_ERRQUEUE_VERDICT 0
#endif

struct zc_errq_call {
	u64 sk;
	u64 msg; /* struct user_msghdr __user * */
};
BPF_HASH(zc_errq_calls, u64, struct zc_errq_call, 10240);

struct zc_ee { /* struct sock_extended_err */
	u32 ee_errno;
	u8 ee_origin;
	u8 ee_type;
	u8 ee_code;
	u8 ee_pad;
	u32 ee_info;
	u32 ee_data;
};

TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg)
{
	u64 id = bpf_get_current_pid_tgid();

	if (!(args->flags & ZC_MSG_ERRQUEUE) || !zc_tracked(id >> 32))
		return 0;
	void *sk = zc_fd_to_sock(args->fd);
	if (!sk)
		return 0;
	struct zc_errq_call call = {.sk = (u64)sk, .msg = (u64)args->msg};
	zc_errq_calls.update(&id, &call);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg)
{
	u64 id = bpf_get_current_pid_tgid();
	struct zc_errq_call *callp = zc_errq_calls.lookup(&id);

	if (!callp)
		return 0;
	struct zc_errq_call call = *callp;
	zc_errq_calls.delete(&id);
	if (args->ret < 0)
		return 0;
	/* struct user_msghdr: msg_control at 32, msg_controllen (updated to the used length) at 40 */
	u64 control = 0, controllen = 0, pos = 0;
	bpf_probe_read_user(&control, sizeof(control), (const char *)call.msg + 32);
	bpf_probe_read_user(&controllen, sizeof(controllen), (const char *)call.msg + 40);
	if (!control)
		return 0;
	for (int i = 0; i < ZC_MAX_CMSGS; i++) {
		struct { u64 len; int level; int type; } cm = {};
		struct zc_ee ee = {};
		if (pos + sizeof(cm) > controllen)
			break;
		if (bpf_probe_read_user(&cm, sizeof(cm), (const char *)control + pos) || cm.len < sizeof(cm))
			break;
		if ((cm.level == ZC_SOL_IP && cm.type == ZC_IP_RECVERR) ||
		    (cm.level == ZC_SOL_IPV6 && cm.type == ZC_IPV6_RECVERR)) {
			bpf_probe_read_user(&ee, sizeof(ee), (const char *)control + pos + sizeof(cm));
			if (ee.ee_origin == ZC_SO_EE_ORIGIN_ZEROCOPY && ee.ee_errno == 0)
				zc_msgzc_range(call.sk, ee.ee_info, ee.ee_data,
					       ee.ee_code & ZC_SO_EE_CODE_ZEROCOPY_COPIED,
					       ZC_ERRQUEUE_VERDICT, 1, ZC_R_NONE, -1, 0, 0);
		}
		pos += (cm.len + 7) & ~7ULL;
	}
	return 0;
}
