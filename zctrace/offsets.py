"""Kernel struct offsets for the probes, read from the running kernel's BTF.

Each probe names what it reads as ZC_OFF_<struct>_<member> (and ZC_SHIFT_ for bitfields);
this module turns the names into -D flags, and tells which names a kernel cannot supply.
A few members only some kernels have are OPTIONAL: the probes test them with #ifdef and do
something else without them (docs/kernel.md).
"""

from __future__ import annotations

from .btf import Btf, BtfError

# macro suffix -> (struct, member path)
FIELDS: dict[str, tuple[str, str]] = {
    "task_struct_files": ("task_struct", "files"),
    "files_struct_fdt": ("files_struct", "fdt"),
    "fdtable_max_fds": ("fdtable", "max_fds"),
    "fdtable_fd": ("fdtable", "fd"),
    "file_private_data": ("file", "private_data"),
    "socket_sk": ("socket", "sk"),
    "sock_sk_zckey": ("sock", "sk_zckey"),
    "sock_skc_flags": ("sock", "__sk_common.skc_flags"),
    "sock_sk_protocol": ("sock", "sk_protocol"),
    "sk_buff_cb": ("sk_buff", "cb"),
    "sk_buff_sk": ("sk_buff", "sk"),
    "sk_buff_len": ("sk_buff", "len"),
    "sk_buff_data_len": ("sk_buff", "data_len"),
    "ubuf_info_msgzc_id": ("ubuf_info_msgzc", "id"),
    "ubuf_info_msgzc_len": ("ubuf_info_msgzc", "len"),
    "ubuf_info_msgzc_zerocopy": ("ubuf_info_msgzc", "zerocopy"),
    "ubuf_info_msgzc_bytelen": ("ubuf_info_msgzc", "bytelen"),
    "io_kiocb_file": ("io_kiocb", "file"),
    "io_kiocb_cmd": ("io_kiocb", "cmd"),
    "io_kiocb_opcode": ("io_kiocb", "opcode"),
    "io_kiocb_ctx": ("io_kiocb", "ctx"),
    "io_kiocb_cqe_user_data": ("io_kiocb", "cqe.user_data"),
    "io_kiocb_cqe_res": ("io_kiocb", "cqe.res"),
    "io_kiocb_cqe_flags": ("io_kiocb", "cqe.flags"),
    "io_sr_msg_msg_flags": ("io_sr_msg", "msg_flags"),
    "io_notif_data_uarg": ("io_notif_data", "uarg"),
    "io_notif_data_zc_report": ("io_notif_data", "zc_report"),
    "io_notif_data_next": ("io_notif_data", "next"),
    "io_notif_data_head": ("io_notif_data", "head"),
    "io_notif_data_zc_used": ("io_notif_data", "zc_used"),
    "io_notif_data_zc_copied": ("io_notif_data", "zc_copied"),
    "sk_buff_head": ("sk_buff", "head"),
    "sk_buff_end": ("sk_buff", "end"),
    "skb_shared_info_flags": ("skb_shared_info", "flags"),
    "skb_shared_info_destructor_arg": ("skb_shared_info", "destructor_arg"),
    "skb_shared_info_nr_frags": ("skb_shared_info", "nr_frags"),
    "sock_sk_tsflags": ("sock", "sk_tsflags"),
    "sock_sk_dst_cache": ("sock", "sk_dst_cache"),
    "sock_sk_route_caps": ("sock", "sk_route_caps"),
    "sock_sk_socket": ("sock", "sk_socket"),
    "sock_sk_omem_alloc": ("sock", "sk_omem_alloc"),
    "sock_skc_net": ("sock", "__sk_common.skc_net"),
    "sock_skc_family": ("sock", "__sk_common.skc_family"),
    "net_sysctl_optmem_max": ("net", "core.sysctl_optmem_max"),
    "net_ns_inum": ("net", "ns.inum"),
    "dst_entry_dev": ("dst_entry", "dev"),
    "dst_entry_header_len": ("dst_entry", "header_len"),
    "net_device_features": ("net_device", "features"),
    "net_device_mtu": ("net_device", "mtu"),
    "net_device_ifindex": ("net_device", "ifindex"),
    "net_device_ptype_all": ("net_device", "ptype_all"),
    "net_device_rtnl_link_ops": ("net_device", "rtnl_link_ops"),
    "rtnl_link_ops_kind": ("rtnl_link_ops", "kind"),
    "socket_file": ("socket", "file"),
    "file_f_inode": ("file", "f_inode"),
    "inode_i_ino": ("inode", "i_ino"),
    "udp_sock_gso_size": ("udp_sock", "gso_size"),
    "udp_sock_pending": ("udp_sock", "pending"),
}
_UNLINKED = ("one notification per request: io_notif_data.next and .head (linked notifications) "
             "are 6.10+")
# Members the probes can do without (they test the macro with #ifdef): macro -> what they do
# on a kernel that lacks it.
OPTIONAL: dict[str, str] = {
    "ZC_OFF_io_notif_data_next": _UNLINKED,
    "ZC_OFF_io_notif_data_head": _UNLINKED,
    "ZC_OFF_net_sysctl_optmem_max": "the host-wide sysctl_optmem_max: net.core.sysctl_optmem_max "
                                    "(per network namespace) is 6.9+",
}
# macro -> enumerator whose value it carries
ENUM_VALUES = {
    "ZC_SOCK_ZEROCOPY": "SOCK_ZEROCOPY",
    "ZC_SKBFL_ZEROCOPY_ENABLE": "SKBFL_ZEROCOPY_ENABLE",
    "ZC_NETIF_F_SG_BIT": "NETIF_F_SG_BIT",
    "ZC_NETIF_F_IP_CSUM_BIT": "NETIF_F_IP_CSUM_BIT",
    "ZC_NETIF_F_HW_CSUM_BIT": "NETIF_F_HW_CSUM_BIT",
    "ZC_NETIF_F_IPV6_CSUM_BIT": "NETIF_F_IPV6_CSUM_BIT",
    "ZC_NETIF_F_HW_ESP_TX_CSUM_BIT": "NETIF_F_HW_ESP_TX_CSUM_BIT",
}


def kernel_macros() -> set[str]:
    """Every macro name this module can supply."""
    return ({f"ZC_OFF_{s}" for s in FIELDS} | {f"ZC_SHIFT_{s}" for s in FIELDS} | set(ENUM_VALUES)
            | {"ZC_NOTIF_CHAIN", "ZC_URING_COMPLETE_CQE", "ZC_UDP_CORK_OFF", "ZC_UDP_CORK_BIT", "ZC_NET_PTYPE_ALL_OFF",
               "ZC_DEV_NET_OFF", "ZC_PTYPE_ALL_ADDR", "ZC_OPTMEM_MAX_ADDR", "ZC_OPTMEM_MAX"})


def links_notifications(btf: Btf) -> bool:
    """Does this kernel link io_uring notifications into chains (io_notif_data.next and .head,
    6.10+)? The probes then walk chains (ZC_NOTIF_CHAIN)."""
    try:
        btf.field("io_notif_data", "next")
        btf.field("io_notif_data", "head")
    except BtfError:
        return False
    return True


def kernel_defines(btf: Btf) -> tuple[dict[str, int], dict[str, str], dict[str, str]]:
    """(macros this kernel supplies, {macro: why it cannot} for the rest the probes need,
    {OPTIONAL macro this kernel lacks: what the probes do instead})."""
    defines: dict[str, int] = {}
    missing: dict[str, str] = {}
    for suffix, (struct, path) in FIELDS.items():
        try:
            f = btf.field(struct, path)
        except BtfError as e:
            missing[f"ZC_OFF_{suffix}"] = str(e)
            missing[f"ZC_SHIFT_{suffix}"] = str(e)
            continue
        defines[f"ZC_OFF_{suffix}"] = f.offset
        if f.bits:
            defines[f"ZC_SHIFT_{suffix}"] = f.bit_shift
    for macro, enumerator in ENUM_VALUES.items():
        try:
            defines[macro] = btf.enum_value(enumerator)
        except BtfError as e:
            missing[macro] = str(e)
    fallbacks = {m: why for m, why in OPTIONAL.items() if m in missing}
    for macro in fallbacks:
        missing.pop(macro)
        missing.pop(macro.replace("ZC_OFF_", "ZC_SHIFT_", 1), None)
    if links_notifications(btf):
        defines["ZC_NOTIF_CHAIN"] = 1
    try:  # io_uring_complete's raw arguments: (ctx, req, cqe) since 6.13, seven before
        if btf.tracepoint_args("io_uring_complete") == 3:
            defines["ZC_URING_COMPLETE_CQE"] = 1
    except BtfError as e:
        missing["ZC_URING_COMPLETE_CQE"] = str(e)
    if "ZC_OFF_net_sysctl_optmem_max" not in defines:
        defines.update(_global_optmem_max())
    defines.update(_udp_cork(btf))
    defines.update(_ptype_all(btf))
    return defines, missing, fallbacks


def _global_optmem_max() -> dict[str, int]:
    """Before 6.9 optmem_max is one int for the host: its address (ZC_OPTMEM_MAX_ADDR) where
    /proc/kallsyms shows it, else its value now (ZC_OPTMEM_MAX, stale if changed later)."""
    addr = _kallsyms({"sysctl_optmem_max"}).get("sysctl_optmem_max")
    if addr:
        return {"ZC_OPTMEM_MAX_ADDR": addr}
    try:
        with open("/proc/sys/net/core/optmem_max") as f:
            return {"ZC_OPTMEM_MAX": int(f.read())}
    except (OSError, ValueError):
        return {"ZC_OPTMEM_MAX": 0}


def _udp_cork(btf: Btf) -> dict[str, int]:
    """Where UDP_CORK lives: bit UDP_FLAGS_CORK of udp_sock.udp_flags (6.5+), else the int
    udp_sock.corkflag (bit 0). Optional: the probes guard their use with #ifdef."""
    try:
        return {"ZC_UDP_CORK_OFF": btf.field("udp_sock", "udp_flags").offset,
                "ZC_UDP_CORK_BIT": btf.enum_value("UDP_FLAGS_CORK")}
    except BtfError:
        pass
    try:
        return {"ZC_UDP_CORK_OFF": btf.field("udp_sock", "corkflag").offset, "ZC_UDP_CORK_BIT": 0}
    except BtfError:
        return {}


def _ptype_all(btf: Btf) -> dict[str, int]:
    """Where taps on every device are listed: struct net.ptype_all of the device's netns (6.15+),
    else the host-wide list at a kernel address (net_hotdata.ptype_all since 6.9, ptype_all
    before; found in /proc/kallsyms). Optional: without it only device taps are seen."""
    try:
        return {"ZC_NET_PTYPE_ALL_OFF": btf.field("net", "ptype_all").offset,
                "ZC_DEV_NET_OFF": btf.field("net_device", "nd_net.net").offset}
    except BtfError:
        pass
    symbols = _kallsyms({"net_hotdata", "ptype_all"})
    try:
        if "net_hotdata" in symbols:
            return {"ZC_PTYPE_ALL_ADDR": symbols["net_hotdata"] + btf.field("net_hotdata", "ptype_all").offset}
    except BtfError:
        return {}
    return {"ZC_PTYPE_ALL_ADDR": symbols["ptype_all"]} if "ptype_all" in symbols else {}


def _kallsyms(names: set[str]) -> dict[str, int]:
    """Addresses of these kernel symbols (those /proc/kallsyms shows with a non-zero address)."""
    found: dict[str, int] = {}
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                addr, _, name = line.rstrip("\n").split(" ", 2)
                if name in names and int(addr, 16):
                    found[name] = int(addr, 16)
    except OSError:
        pass
    return found
