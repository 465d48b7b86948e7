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

/* What the callback reads, from skb->sk up to the end of the uarg's bytelen (uarg lives in
 * skb->cb): one read where that window fits ZC_CB_WINDOW bytes (every kernel we know: 44 B),
 * else one read per field. Each read is a helper call: this program runs once per request. */
#define ZC_CB_SK_BACK (ZC_OFF_sk_buff_cb - ZC_OFF_sk_buff_sk)   /* skb->sk, before the uarg */
#define ZC_CB_END (ZC_OFF_ubuf_info_msgzc_bytelen + 4)          /* after the uarg's bytelen */
#define ZC_CB_WINDOW 64

struct zc_cb_fields {
	u64 sk;
	u32 id, zcword, bytelen;
	u16 len;
};

static __always_inline void zc_cb_read(void *uarg, struct zc_cb_fields *f)
{
#if ZC_CB_SK_BACK >= 8 && ZC_CB_SK_BACK + ZC_CB_END <= ZC_CB_WINDOW
	union {
		u64 q[ZC_CB_WINDOW / 8];
		u8 b[ZC_CB_WINDOW];
	} w;

	if (bpf_probe_read_kernel(w.b, ZC_CB_SK_BACK + ZC_CB_END, (const char *)uarg - ZC_CB_SK_BACK))
		return; /* f stays zeroed: nothing counted */
	__builtin_memcpy(&f->sk, &w.b[0], sizeof(f->sk));
	__builtin_memcpy(&f->id, &w.b[ZC_CB_SK_BACK + ZC_OFF_ubuf_info_msgzc_id], sizeof(f->id));
	__builtin_memcpy(&f->len, &w.b[ZC_CB_SK_BACK + ZC_OFF_ubuf_info_msgzc_len], sizeof(f->len));
	__builtin_memcpy(&f->zcword, &w.b[ZC_CB_SK_BACK + ZC_OFF_ubuf_info_msgzc_zerocopy], sizeof(f->zcword));
	__builtin_memcpy(&f->bytelen, &w.b[ZC_CB_SK_BACK + ZC_OFF_ubuf_info_msgzc_bytelen], sizeof(f->bytelen));
#else
	void *skb = (char *)uarg - ZC_OFF_sk_buff_cb; /* skb_from_uarg() */

	ZC_READ(f->sk, skb, ZC_OFF_sk_buff_sk);
	ZC_READ(f->id, uarg, ZC_OFF_ubuf_info_msgzc_id);
	ZC_READ(f->len, uarg, ZC_OFF_ubuf_info_msgzc_len);
	ZC_READ(f->zcword, uarg, ZC_OFF_ubuf_info_msgzc_zerocopy);
	ZC_READ(f->bytelen, uarg, ZC_OFF_ubuf_info_msgzc_bytelen);
#endif
}

ZC_KFUNC1(__msg_zerocopy_callback, uarg)
{
	struct zc_cb_fields f = {};

	zc_cb_read(uarg, &f);
	if (!f.sk || !f.len)
		return 0; /* aborted range: the kernel posts nothing */
	int zerocopy = (f.zcword >> ZC_SHIFT_ubuf_info_msgzc_zerocopy) & 1;
	int late_stack = -1;
	u8 late = zerocopy ? ZC_R_NONE : zc_late_take((u64)uarg, &late_stack); /* a late copy clears zerocopy */
	/* bytelen sums the sizes msg_zerocopy_realloc was given: for UDP each includes the 8-byte
	 * header (udp_sendmsg passes ulen), the send syscall's return value does not: the range
	 * takes 8 B per id off a UDP socket's (its protocol from zc_socks, not another read). */
	zc_msgzc_range(f.sk, f.id, f.id + f.len - 1, !zerocopy, 1, 0, late, late_stack, f.bytelen, f.len);
	return 0;
}
