/* uring_chain.bpf.h: the hand-over between io_uring's notification CQEs (uring_send.bpf.c) and
 * the walk of long chains of linked notifications (6.10+, uring_notif.bpf.c). The walk itself,
 * its slots, spill, cursors and walkers, is all in uring_notif.bpf.c; declared here is only what
 * both sides touch: zc_chain_pending (chains waiting, on every ring), zc_chain_ring (the walker's
 * argument), the program arrays the walkers are put in (declared in probes/manifest.toml:
 * uring_notif's tail_call, which zctrace/probes.py links) and zc_chain_waits. While the rest of
 * a chain waits, a notification CQE hands its ring to the walker, a tail call with its own
 * stack; it costs a notification CQE one array read while none waits.
 * Present only when uring_notif is compiled in (ZC_PROG_URING_NOTIF, defined by the loader for
 * every program of the module, so the order of the files does not matter) on a kernel with
 * linked notifications, off the tracepoint tier; ZC_CHAIN_WALKER says it is.
 * Included by uring_send.bpf.c and uring_notif.bpf.c. */
#ifndef ZC_URING_CHAIN_BPF_H
#define ZC_URING_CHAIN_BPF_H

#include "maps.bpf.h"
#include "uring_ring.bpf.h"

#if defined(ZC_PROG_URING_NOTIF) && defined(ZC_NOTIF_CHAIN) && !defined(ZC_TIER_TRACEPOINT)
BPF_ARRAY(zc_chain_pending, u64, 1);        /* chains waiting, on every ring */
BPF_PERCPU_ARRAY(zc_chain_ring, u64, 1);    /* the walker's argument: the CQE's ring */
/* The walker, one per program type (a program array serves one): from io_uring_complete and
 * from io_uring_cqe_overflow. */
BPF_PROG_ARRAY(zc_chain_walker_raw, 1);
BPF_PROG_ARRAY(zc_chain_walker_tp, 1);

#define ZC_CHAIN_WALKER 1

/* True if a notification CQE of ring `ring_ctx` is to call the walker (its ring handed over);
 * if the call returns, the walker is missing: the rest of the chain gets no verdict. */
static __always_inline int zc_chain_waits(u64 ring_ctx, u32 cflags)
{
	u32 zero = 0;
	u64 *pending = zc_chain_pending.lookup(&zero), *ring;

	if (!(cflags & ZC_IORING_CQE_F_NOTIF) || !pending || !*pending)
		return 0;
	ring = zc_chain_ring.lookup(&zero);
	if (!ring)
		return 0;
	*ring = ring_ctx;
	return 1;
}
#endif

#endif /* ZC_URING_CHAIN_BPF_H */
