/* kfunc.bpf.h: the ZC_KFUNCn(fn, args...) entry points of kernel functions: fentry
 * (KFUNC_PROBE) on the fentry tier, a kprobe with its arguments read from pt_regs otherwise.
 * Included by the .bpf.c files of the fentry/kprobe tiers (msgzc_callback, uring_notif,
 * zc_kernel, kernel_events, bpf_redirect). */
#ifndef ZC_KFUNC_BPF_H
#define ZC_KFUNC_BPF_H

#include <uapi/linux/ptrace.h>

/* Entry points for kernel functions: fentry on the fentry tier, kprobe otherwise. The loader
 * attaches kfunc__<fn> or kprobe__<fn>. Where this kernel has `fn` under an older name the
 * loader defines fn as that name (so the fentry program loads against it) and ZC_VIA_<name>. */
#ifdef ZC_TIER_FENTRY
#define ZC_KFUNC1(fn, a1) KFUNC_PROBE(fn, void *a1)
#define ZC_KFUNC2(fn, a1, a2) KFUNC_PROBE(fn, void *a1, void *a2)
#define ZC_KFUNC3(fn, a1, a2, a3) KFUNC_PROBE(fn, void *a1, void *a2, void *a3)
#define ZC_KFUNC5(fn, a1, a2, a3, a4, a5) KFUNC_PROBE(fn, void *a1, void *a2, void *a3, void *a4, void *a5)
#else
#define ZC_KFUNC1(fn, a1) static __always_inline int zc_body_##fn(void *ctx, void *a1); \
	int kprobe__##fn(struct pt_regs *ctx) { return zc_body_##fn(ctx, (void *)PT_REGS_PARM1(ctx)); } \
	static __always_inline int zc_body_##fn(void *ctx, void *a1)
#define ZC_KFUNC2(fn, a1, a2) static __always_inline int zc_body_##fn(void *ctx, void *a1, void *a2); \
	int kprobe__##fn(struct pt_regs *ctx) { return zc_body_##fn(ctx, (void *)PT_REGS_PARM1(ctx), \
		(void *)PT_REGS_PARM2(ctx)); } \
	static __always_inline int zc_body_##fn(void *ctx, void *a1, void *a2)
#define ZC_KFUNC3(fn, a1, a2, a3) static __always_inline int zc_body_##fn(void *ctx, void *a1, void *a2, void *a3); \
	int kprobe__##fn(struct pt_regs *ctx) { return zc_body_##fn(ctx, (void *)PT_REGS_PARM1(ctx), \
		(void *)PT_REGS_PARM2(ctx), (void *)PT_REGS_PARM3(ctx)); } \
	static __always_inline int zc_body_##fn(void *ctx, void *a1, void *a2, void *a3)
#define ZC_KFUNC5(fn, a1, a2, a3, a4, a5) static __always_inline int zc_body_##fn(void *ctx, void *a1, \
	void *a2, void *a3, void *a4, void *a5); \
	int kprobe__##fn(struct pt_regs *ctx) { return zc_body_##fn(ctx, (void *)PT_REGS_PARM1(ctx), \
		(void *)PT_REGS_PARM2(ctx), (void *)PT_REGS_PARM3(ctx), (void *)PT_REGS_PARM4(ctx), \
		(void *)PT_REGS_PARM5(ctx)); } \
	static __always_inline int zc_body_##fn(void *ctx, void *a1, void *a2, void *a3, void *a4, void *a5)
#endif

#endif /* ZC_KFUNC_BPF_H */
