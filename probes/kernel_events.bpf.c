/* Where the kernel attaches pages zero-copy and opens notification ranges (fentry/kprobe), as
 * counts for zctrace_kernel_events: informational, and per skb or per send on the hot path, so
 * loaded only on request (--kernel-events). The verdicts and reasons do not need them.
 */

#include "kfunc.bpf.h"
#include "kread.bpf.h"
#include "maps.bpf.h"

ZC_KFUNC2(skb_zerocopy_iter_stream, sk, skb)
{
	u32 len = 0;

	ZC_READ(len, skb, ZC_OFF_sk_buff_len);
	zc_kevent(ZC_KEV_ITER_STREAM, len);
	return 0;
}

#ifdef ZC_VIA___zerocopy_sg_from_iter /* before 6.11: (msg, sk, skb, from, length) */
ZC_KFUNC5(zerocopy_fill_skb_from_iter, msg, sk, skb, from, length)
#else
ZC_KFUNC3(zerocopy_fill_skb_from_iter, skb, from, length)
#endif
{
	zc_kevent(ZC_KEV_FILL_FROM_ITER, (u64)length);
	return 0;
}

ZC_KFUNC2(msg_zerocopy_realloc, sk, size)
{
	zc_kevent(ZC_KEV_UARG_REALLOC, (u64)size);
	return 0;
}
