"""Kernel struct offsets for the probes, read from the running kernel's BTF.

Each probe names what it reads as ZC_OFF_<struct>_<member> (and ZC_SHIFT_ for bitfields);
this module turns the names into -D flags, and tells which names a kernel cannot supply.
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
    "ubuf_info_msgzc_id": ("ubuf_info_msgzc", "id"),
    "ubuf_info_msgzc_len": ("ubuf_info_msgzc", "len"),
    "ubuf_info_msgzc_zerocopy": ("ubuf_info_msgzc", "zerocopy"),
    "io_kiocb_file": ("io_kiocb", "file"),
    "io_kiocb_cmd": ("io_kiocb", "cmd"),
    "io_kiocb_opcode": ("io_kiocb", "opcode"),
    "io_kiocb_ctx": ("io_kiocb", "ctx"),
    "io_kiocb_cqe_user_data": ("io_kiocb", "cqe.user_data"),
    "io_notif_data_uarg": ("io_notif_data", "uarg"),
    "io_notif_data_zc_report": ("io_notif_data", "zc_report"),
    "io_notif_data_next": ("io_notif_data", "next"),
}
# macro -> enumerator whose value it carries
ENUM_VALUES = {"ZC_SOCK_ZEROCOPY": "SOCK_ZEROCOPY"}


def kernel_defines(btf: Btf) -> tuple[dict[str, int], dict[str, str]]:
    """(macros this kernel supplies, {macro: why it cannot} for the rest)."""
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
    if "ZC_OFF_io_notif_data_next" in defines:
        defines["ZC_NOTIF_CHAIN"] = 1  # linked notifications (6.10+)
    return defines, missing
