/* kread.bpf.h: reads of kernel memory and the constants they need. ZC_READ at a BTF offset
 * (ZC_OFF_<struct>_<member>, supplied by the loader from the running kernel's BTF:
 * zctrace/offsets.py; nothing here trusts the compile-time kernel headers), an skb's shared info
 * and ubuf_info, a socket's route device, a device's taps and kind, the socket behind an fd.
 * No maps. Included by predict.bpf.h, maps.bpf.h's users and every .bpf.c that reads the kernel. */
#ifndef ZC_KREAD_BPF_H
#define ZC_KREAD_BPF_H

#include <uapi/linux/ptrace.h>
#include "zctrace.h"

#define ZC_MSG_ZEROCOPY 0x4000000
#define ZC_MSG_MORE 0x8000
#define ZC_MSG_ERRQUEUE 0x2000
#define ZC_ENOBUFS 105
#define ZC_EOPNOTSUPP 95
#define ZC_IPPROTO_TCP 6
#define ZC_IPPROTO_UDP 17
#define ZC_AF_INET6 10
#define ZC_OPTMEM_SLACK 1024 /* about one notification skb: below this much optmem, sock_omalloc fails */

#define ZC_READ(dst, base, off) \
	bpf_probe_read_kernel(&(dst), sizeof(dst), (const char *)(base) + (off))
/* `v` as a plain number: fentry programs see their arguments as typed pointers, which the
 * verifier allows no arithmetic on but adding an offset (a copy through the stack is a scalar). */
static __always_inline u64 zc_scalar(u64 v)
{
	u64 s = 0;

	bpf_probe_read_kernel(&s, sizeof(s), &v);
	return s;
}

static __always_inline u8 zc_proto_of(u16 ipproto)
{
	if (ipproto == ZC_IPPROTO_TCP)
		return ZC_PROTO_TCP;
	if (ipproto == ZC_IPPROTO_UDP)
		return ZC_PROTO_UDP;
	return ZC_PROTO_OTHER;
}

/* skb_shinfo(skb): head + end on 64-bit; one read where end (u32) sits right before head
 * (these run for every packet on the tracepoint tier: every read counts). */
static __always_inline void *zc_skb_shinfo(void *skb)
{
#if ZC_OFF_sk_buff_head == ZC_OFF_sk_buff_end + 4
	struct {
		u32 end;
		u64 head;
	} __attribute__((packed)) eh = {};

	ZC_READ(eh, skb, ZC_OFF_sk_buff_end);
	return eh.head ? (char *)eh.head + eh.end : 0;
#else
	void *head = 0;
	u32 end = 0;

	ZC_READ(head, skb, ZC_OFF_sk_buff_head);
	ZC_READ(end, skb, ZC_OFF_sk_buff_end);
	return head ? (char *)head + end : 0;
#endif
}

/* The ubuf_info of an skb's shared info if the skb is zerocopy (skb_zcopy()), or 0; *flags gets
 * skb_shared_info.flags (read once for callers that test other flags too). */
static __always_inline u64 zc_shinfo_uarg_flags(void *shinfo, u8 *flags)
{
	u64 uarg = 0;

	*flags = 0;
	if (!shinfo)
		return 0;
	ZC_READ(*flags, shinfo, ZC_OFF_skb_shared_info_flags);
	if (!(*flags & ZC_SKBFL_ZEROCOPY_ENABLE))
		return 0;
	ZC_READ(uarg, shinfo, ZC_OFF_skb_shared_info_destructor_arg);
	return uarg;
}

/* The ubuf_info of an skb's shared info if the skb is zerocopy, or 0. */
static __always_inline u64 zc_shinfo_uarg(void *shinfo)
{
	u8 flags;

	return zc_shinfo_uarg_flags(shinfo, &flags);
}

/* The ubuf_info of a zerocopy skb (skb_zcopy()), or 0. */
static __always_inline u64 zc_skb_uarg(void *skb)
{
	return zc_shinfo_uarg(zc_skb_shinfo(skb));
}

/* The egress device of a socket's cached route (0 if it has none: unconnected, or not yet
 * routed). */
static __always_inline void *zc_sk_dev(void *sk)
{
	void *dst = 0, *dev = 0;

	ZC_READ(dst, sk, ZC_OFF_sock_sk_dst_cache);
	if (dst)
		ZC_READ(dev, dst, ZC_OFF_dst_entry_dev);
	return dev;
}
/* A list_head with entries: its next pointer is not itself. */
static __always_inline int zc_list_busy(u64 head)
{
	u64 next = 0;

	ZC_READ(next, (void *)head, 0);
	return next && next != head;
}

/* dev_nit_active(): an AF_PACKET tap sees what this device sends: one bound to the device
 * (dev->ptype_all), or one on every device (per netns since 6.15, host-wide before). */
static __always_inline int zc_tap_active(void *dev)
{
	if (zc_list_busy((u64)dev + ZC_OFF_net_device_ptype_all))
		return 1;
#if defined(ZC_NET_PTYPE_ALL_OFF)
	u64 net = 0;
	ZC_READ(net, dev, ZC_DEV_NET_OFF);
	return net && zc_list_busy(net + ZC_NET_PTYPE_ALL_OFF);
#elif defined(ZC_PTYPE_ALL_ADDR)
	return zc_list_busy(ZC_PTYPE_ALL_ADDR);
#else
	return 0; /* the every-device list is not found here: only device taps are seen */
#endif
}

/* A tun/tap device: its rtnl_link_ops->kind is "tun". */
static __always_inline int zc_dev_is_tun(void *dev)
{
	void *ops = 0, *kind = 0;
	char name[4] = {};

	ZC_READ(ops, dev, ZC_OFF_net_device_rtnl_link_ops);
	if (!ops)
		return 0;
	ZC_READ(kind, ops, ZC_OFF_rtnl_link_ops_kind);
	if (!kind || bpf_probe_read_kernel(name, sizeof(name), kind))
		return 0;
	return name[0] == 't' && name[1] == 'u' && name[2] == 'n' && name[3] == 0;
}
/* struct sock * behind a file descriptor of the current task (0 if there is none). */
static __always_inline void *zc_fd_to_sock(int fd)
{
	void *task = (void *)bpf_get_current_task();
	void *files = 0, *fdt = 0, *fds = 0, *file = 0, *socket = 0, *sk = 0;
	unsigned int max_fds = 0;

	if (fd < 0)
		return 0;
	ZC_READ(files, task, ZC_OFF_task_struct_files);
	if (!files)
		return 0;
	ZC_READ(fdt, files, ZC_OFF_files_struct_fdt);
	if (!fdt)
		return 0;
	ZC_READ(max_fds, fdt, ZC_OFF_fdtable_max_fds);
	if ((unsigned int)fd >= max_fds)
		return 0;
	ZC_READ(fds, fdt, ZC_OFF_fdtable_fd);
	if (!fds)
		return 0;
	ZC_READ(file, fds, (u64)fd * sizeof(void *));
	if (!file)
		return 0;
	ZC_READ(socket, file, ZC_OFF_file_private_data);
	if (!socket)
		return 0;
	ZC_READ(sk, socket, ZC_OFF_socket_sk);
	return sk;
}

#endif /* ZC_KREAD_BPF_H */
