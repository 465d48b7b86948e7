/* Zerocopy skbs a tc BPF program redirects (fentry/kprobe tiers).
 *
 * bpf_redirect() only records the target; skb_do_redirect(skb) carries it out after the
 * program returns TC_ACT_REDIRECT (tc/tcx ingress and egress, also bpf_redirect_peer and
 * bpf_redirect_neigh). The redirect itself does not copy: MSG_ZEROCOPY and io_uring skbs
 * carry SKBFL_DONT_ORPHAN, so dev_forward_skb's skb_orphan_frags leaves them alone. The copy
 * comes later, where the skb lands, on another call stack; so the skb is remembered here
 * (with its ubuf_info) and zc_kernel's skb_copy_ubufs names the reason bpf_redirect.
 * Not seen: bpf_clone_redirect (redirects a clone made inside the helper).
 */

#include "kfunc.bpf.h"
#include "kread.bpf.h"
#include "maps.bpf.h"

ZC_KFUNC1(skb_do_redirect, skb)
{
	u64 uarg = zc_skb_uarg(skb), key = (u64)skb;

	if (uarg)
		zc_redirected.update(&key, &uarg);
	return 0;
}
