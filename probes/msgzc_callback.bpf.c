/* MSG_ZEROCOPY verdicts from the kernel's own completion (fentry/kprobe tiers).
 *
 * __msg_zerocopy_callback(uarg) runs when the last skb holding a notification range lets go
 * of it: uarg->id, uarg->len and uarg->zerocopy are the range and the verdict, whether or not
 * the application ever reads its error queue. Each range is seen separately, also those the
 * error queue would merge (skb_zerocopy_notify_extend does not compare ee_code). A copied
 * range takes its reason from the late copy zc_kernel saw for this uarg (its stack, or a BPF
 * redirect), else from the send-time prediction (msgzc_send). Its byte length, taken off the
 * bytes sent, gives the bytes still pinned.
 */

#include "kfunc.bpf.h"
#include "kread.bpf.h"
#include "maps.bpf.h"
#include "msgzc_ranges.bpf.h"

ZC_KFUNC1(__msg_zerocopy_callback, uarg)
{
	void *skb = (char *)uarg - ZC_OFF_sk_buff_cb; /* skb_from_uarg(): uarg lives in skb->cb */
	u64 sk = 0;
	u32 id = 0, zcword = 0, bytelen = 0;
	u16 len = 0, proto = 0;

	ZC_READ(sk, skb, ZC_OFF_sk_buff_sk);
	ZC_READ(id, uarg, ZC_OFF_ubuf_info_msgzc_id);
	ZC_READ(len, uarg, ZC_OFF_ubuf_info_msgzc_len);
	ZC_READ(zcword, uarg, ZC_OFF_ubuf_info_msgzc_zerocopy);
	ZC_READ(bytelen, uarg, ZC_OFF_ubuf_info_msgzc_bytelen);
	if (!sk || !len)
		return 0; /* aborted range: the kernel posts nothing */
	int zerocopy = (zcword >> ZC_SHIFT_ubuf_info_msgzc_zerocopy) & 1;
	int late_stack = -1;
	u8 late = zerocopy ? ZC_R_NONE : zc_late_take((u64)uarg, &late_stack); /* a late copy clears zerocopy */
	/* bytelen sums the sizes msg_zerocopy_realloc was given: for UDP each includes the 8-byte
	 * header (udp_sendmsg passes ulen), the send syscall's return value does not. */
	ZC_READ(proto, (void *)sk, ZC_OFF_sock_sk_protocol);
	if (proto == ZC_IPPROTO_UDP)
		bytelen -= 8 * (u32)len;
	zc_msgzc_range(sk, id, id + len - 1, !zerocopy, 1, 0, late, late_stack, bytelen);
	return 0;
}
