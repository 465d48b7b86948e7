"""Drop the capabilities `zctrace export` no longer needs once its probes are attached.

Loading and attaching need CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), CAP_SYS_RESOURCE on
kernels before 5.11 (RLIMIT_MEMLOCK), CAP_DAC_READ_SEARCH for a non-root user (tracefs is
root's, mode 0700). Afterwards the daemon only works through file descriptors it holds (map
lookups, deletes and batches, BPF_OBJ_GET_INFO_BY_FD, the BPF_ENABLE_STATS fd taken before the
drop) and reads /proc. What scraping still needs, kept when held:

- CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH: /proc/PID/fdinfo of another user's process (the
  io_uring CQ gauges): the kernel checks ptrace read access, then the mode 0500 directory that
  the process's user owns.
- CAP_SYSLOG on the fentry/kprobe tiers: late-copy callers are named from /proc/kallsyms, which
  bcc reads lazily (again after a module loads) and which shows addresses only with it when
  kernel.perf_event_paranoid > 1 or kernel.kptr_restrict = 1.
- CAP_BPF only on kernels that refuse every bpf() command without it while
  kernel.unprivileged_bpf_disabled is set (before 6.5; tried, not guessed from the version).

Capabilities are per thread: call this before starting any other thread (threads started
later inherit the calling thread's sets). Linux only, through libc's capget/capset and prctl.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
import sys
import threading

CAPS = {  # linux/capability.h
    "cap_chown": 0, "cap_dac_override": 1, "cap_dac_read_search": 2, "cap_fowner": 3, "cap_fsetid": 4,
    "cap_kill": 5, "cap_setgid": 6, "cap_setuid": 7, "cap_setpcap": 8, "cap_linux_immutable": 9,
    "cap_net_bind_service": 10, "cap_net_broadcast": 11, "cap_net_admin": 12, "cap_net_raw": 13,
    "cap_ipc_lock": 14, "cap_ipc_owner": 15, "cap_sys_module": 16, "cap_sys_rawio": 17,
    "cap_sys_chroot": 18, "cap_sys_ptrace": 19, "cap_sys_pacct": 20, "cap_sys_admin": 21,
    "cap_sys_boot": 22, "cap_sys_nice": 23, "cap_sys_resource": 24, "cap_sys_time": 25,
    "cap_sys_tty_config": 26, "cap_mknod": 27, "cap_lease": 28, "cap_audit_write": 29,
    "cap_audit_control": 30, "cap_setfcap": 31, "cap_mac_override": 32, "cap_mac_admin": 33,
    "cap_syslog": 34, "cap_wake_alarm": 35, "cap_block_suspend": 36, "cap_audit_read": 37,
    "cap_perfmon": 38, "cap_bpf": 39, "cap_checkpoint_restore": 40,
}
NAMES = {v: k for k, v in CAPS.items()}
SCRAPE_CAPS = ("cap_sys_ptrace", "cap_dac_read_search")  # other users' /proc/PID/fdinfo
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_PR_CAPBSET_READ, _PR_CAPBSET_DROP = 23, 24
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_LOWER = 47, 3
_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)
_BPF_MAP_GET_NEXT_KEY = 4


class _Header(ct.Structure):
    _fields_ = [("version", ct.c_uint32), ("pid", ct.c_int)]


class _Data(ct.Structure):
    _fields_ = [("effective", ct.c_uint32), ("permitted", ct.c_uint32), ("inheritable", ct.c_uint32)]


_libc = ct.CDLL(None, use_errno=True)


def _mask(names: set[str]) -> int:
    return sum(1 << CAPS[n] for n in names)


def _names(mask: int) -> set[str]:
    return {NAMES.get(bit, f"cap_{bit}") for bit in range(64) if mask >> bit & 1}


def get() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of the calling thread, as 64-bit masks."""
    header, data = _Header(_LINUX_CAPABILITY_VERSION_3, 0), (_Data * 2)()
    if _libc.capget(ct.byref(header), data) != 0:
        raise OSError(ct.get_errno(), os.strerror(ct.get_errno()))
    return tuple(getattr(data[0], f) | getattr(data[1], f) << 32
                 for f in ("effective", "permitted", "inheritable"))  # type: ignore[return-value]


def _set(effective: int, permitted: int, inheritable: int) -> None:
    header, data = _Header(_LINUX_CAPABILITY_VERSION_3, 0), (_Data * 2)()
    for i in (0, 1):
        data[i].effective = effective >> 32 * i & 0xFFFFFFFF
        data[i].permitted = permitted >> 32 * i & 0xFFFFFFFF
        data[i].inheritable = inheritable >> 32 * i & 0xFFFFFFFF
    if _libc.capset(ct.byref(header), data) != 0:
        raise OSError(ct.get_errno(), os.strerror(ct.get_errno()))


def _bpf_needs_capability() -> bool:
    """Does this kernel refuse a bpf() command on a held map fd without CAP_BPF? Asked of the
    kernel with the current effective set: a map command on fd -1 is EBADF where map commands need
    no capability (6.5+, or unprivileged BPF allowed), EPERM where every command needs one."""
    attr = (ct.c_uint8 * 32)()
    ct.memmove(attr, (ct.c_uint32 * 1)(0xFFFFFFFF), 4)  # map_fd = -1
    ret = _libc.syscall(ct.c_long(_SYS_BPF), ct.c_int(_BPF_MAP_GET_NEXT_KEY), attr, ct.c_uint(len(attr)))
    return ret != 0 and ct.get_errno() == errno.EPERM


def drop_after_attach(tier: str) -> tuple[set[str], set[str]]:
    """Keep only what scraping needs (see the module's doc): (kept, dropped), and one stderr line."""
    if threading.active_count() > 1:  # a bug of the caller's, said rather than hidden
        print("zctrace: warning: capabilities dropped in one thread of several", file=sys.stderr)
    effective, permitted, inheritable = get()
    wanted = set(SCRAPE_CAPS) | ({"cap_syslog"} if tier != "tracepoint" else set())
    keep = _mask(wanted) & permitted
    # Try the map commands without CAP_BPF and CAP_SYS_ADMIN (either allows bpf()), in the
    # effective set only, so that CAP_BPF can come back if they need it.
    _set(effective & ~_mask({"cap_bpf", "cap_sys_admin"}), permitted, inheritable)
    if _bpf_needs_capability():
        keep |= _mask({"cap_bpf"} if permitted & _mask({"cap_bpf"}) else {"cap_sys_admin"}) & permitted
    # The bounding set first, while CAP_SETPCAP may still be in effect: nothing this process
    # runs could gain the rest back.
    _set(effective | keep, permitted, inheritable)
    if effective & _mask({"cap_setpcap"}):
        for bit in NAMES:
            if not keep >> bit & 1 and _libc.prctl(_PR_CAPBSET_READ, bit, 0, 0, 0) == 1:
                _libc.prctl(_PR_CAPBSET_DROP, bit, 0, 0, 0)
    for bit in NAMES:  # ambient capabilities outside `keep` (the permitted drop clears them too)
        if not keep >> bit & 1:
            _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_LOWER, bit, 0, 0)
    _set(keep, keep, inheritable & keep)
    kept, dropped = _names(keep), _names(permitted & ~keep)
    print(f"zctrace: capabilities after attaching: kept {','.join(sorted(kept)) or 'none'}; "
          f"dropped {','.join(sorted(dropped)) or 'none'}", file=sys.stderr)
    return kept, dropped
