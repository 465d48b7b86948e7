"""Doctor's findings from the system's settings and limits: per interface (netdev.py),
net.core.optmem_max, RLIMIT_MEMLOCK and CAP_IPC_LOCK, kernel.io_uring_disabled, and what killed
zctrace runs left (features.py tries the kernel's features by behaviour)."""

from __future__ import annotations

import ctypes
import os
import resource
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, TypeVar

from ..probes import CAP_NET_ADMIN, CAP_SYS_ADMIN, effective_caps, has_caps
from ..report import human_bytes
from ..workload.sockio import MSG_ZEROCOPY, SO_ZEROCOPY

if TYPE_CHECKING:
    from . import netdev

# SO_MEMINFO (getsockopt) and its SK_MEMINFO_OPTMEM slot: the socket's sk_omem_alloc.
_SO_MEMINFO, _SK_MEMINFO_VARS, _SK_MEMINFO_OPTMEM = 55, 9, 6
_UDP_CORK = 1
# Uncompleted zerocopy sends per socket we expect a sender to need before it reads
# notifications; the old 20 KiB optmem_max allowed only 24.
WANT_INFLIGHT = 128
_PAGE = os.sysconf("SC_PAGE_SIZE")
_CAP_IPC_LOCK = 14

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Finding:
    """One thing doctor checked. status: ok, warn, no (zerocopy fails or a feature is
    missing) or info; `check` is a stable id, `facts` the raw numbers behind it."""

    check: str
    subject: str
    status: str
    value: str
    detail: str
    advice: str = ""
    reason: str = ""
    facts: dict = field(default_factory=dict)


# --- interfaces ------------------------------------------------------------------------------

def interface_findings(iface: netdev.Interface, v: netdev.Assessment) -> list[Finding]:
    value = f"udp {v.udp}, tcp {v.tcp}"
    if not v.problems:
        status = "ok" if "yes" in (v.udp, v.tcp) else "info"
        return [Finding("interface", iface.name, status, value, v.summary)]
    status = "no" if "yes" not in (v.udp, v.tcp) and "depends" not in (v.udp, v.tcp) else "warn"
    return [Finding("interface", iface.name, status, value, p.detail, p.advice, p.reason)
            for p in v.problems]


# --- limits ----------------------------------------------------------------------------------

def optmem_per_send() -> int:
    """sk_omem_alloc one MSG_ZEROCOPY send holds until it completes (the truesize of its
    notification skb, which depends on the kernel's build), measured: a send into a corked UDP
    datagram keeps its notification on the socket until the datagram is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        s.setsockopt(socket.IPPROTO_UDP, _UDP_CORK, 1)
        s.connect(("127.0.0.1", 9))
        s.send(b"\0", MSG_ZEROCOPY)
        meminfo = struct.unpack(f"{_SK_MEMINFO_VARS}I", s.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO,
                                                                     4 * _SK_MEMINFO_VARS))
    return meminfo[_SK_MEMINFO_OPTMEM]


T = TypeVar("T")
_OPTMEM_MAX = "/proc/sys/net/core/optmem_max"
_CLONE_NEWNET = 0x40000000


def optmem_max() -> int | None:
    """net.core.optmem_max as it applies to this process's sockets: its network namespace's
    (6.9+); before 6.9 the one host-wide value, which /proc/sys shows in the initial namespace
    only (None if that cannot be joined)."""
    try:
        return int(_read(_OPTMEM_MAX))
    except FileNotFoundError:
        return in_initial_netns(lambda: int(_read(_OPTMEM_MAX)))


def in_initial_netns(read: Callable[[], T], ns: str = "/proc/1/ns/net") -> T | None:
    """read() in a thread that joined the initial network namespace (`ns`; setns moves that
    thread only); None if it cannot join it or read() fails."""
    found: list[T] = []

    def run() -> None:
        try:
            fd = os.open(ns, os.O_RDONLY)
        except OSError:
            return
        try:
            if _libc.setns(fd, _CLONE_NEWNET) == 0:
                found.append(read())
        except OSError:
            pass
        finally:
            os.close(fd)

    reader = threading.Thread(target=run)
    reader.start()
    reader.join()
    return found[0] if found else None


def optmem_finding() -> Finding:
    """net.core.optmem_max: how many MSG_ZEROCOPY sends per socket can await completion."""
    optmem = optmem_max()
    if optmem is None:
        return Finding("optmem_max", "net.core.optmem_max", "warn", "unknown",
                       "not visible in this network namespace (before 6.9 it is one host-wide value, "
                       "shown in the initial namespace only) and the initial namespace cannot be joined: "
                       "run zctrace doctor there to see it")
    try:
        per_send = optmem_per_send()
    except OSError as e:
        return Finding("optmem_max", "net.core.optmem_max", "warn", f"{optmem} B",
                       f"cannot measure what one MSG_ZEROCOPY send holds: {e.strerror or e}")
    sends = optmem // per_send
    facts = {"optmem_max": optmem, "bytes_per_send": per_send, "sends_in_flight": sends}
    detail = (f"about {sends} MSG_ZEROCOPY sends per socket can await completion (each holds "
              f"{per_send} B of optmem until then, measured; TCP coalesces consecutive sends); "
              "one more fails with ENOBUFS")
    if sends >= WANT_INFLIGHT:
        return Finding("optmem_max", "net.core.optmem_max", "ok", f"{optmem} B", detail, facts=facts)
    want = 1 << (WANT_INFLIGHT * per_send - 1).bit_length()
    return Finding("optmem_max", "net.core.optmem_max", "warn", f"{optmem} B", detail,
                   f"raise net.core.optmem_max (sysctl -w net.core.optmem_max={want}) or read "
                   "notifications sooner", "enobufs_optmem", facts)


def memlock_finding(size: int) -> Finding:
    """RLIMIT_MEMLOCK and CAP_IPC_LOCK of this process: pinned pages of zerocopy sends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    cap = _has_cap_ipc_lock()
    pages = size // _PAGE + 2  # mm_account_pinned_pages: worst case per send
    unlimited = soft == resource.RLIM_INFINITY
    sends = None if unlimited else soft // (pages * _PAGE)
    facts = {"soft": soft, "hard": hard, "cap_ipc_lock": cap, "send_size": size,
             "pages_per_send": pages, "sends_in_flight": sends}
    value = "unlimited" if unlimited else human_bytes(soft)
    scope = ("(limits of this doctor process: check an application's with `prlimit -p PID` and "
             "CapEff in /proc/PID/status)")
    if cap or unlimited:
        why = "CAP_IPC_LOCK" if cap else "no limit"
        return Finding("memlock", "RLIMIT_MEMLOCK", "ok", value,
                       f"{why}: pinned pages of zerocopy sends are never refused {scope}",
                       facts=facts)
    detail = (f"about {sends} zerocopy sends of {size} B ({pages} pages each) can await completion "
              "at once, counted per user over all its processes and io_uring buffers; beyond "
              f"that ENOBUFS {scope}")
    if sends >= WANT_INFLIGHT:
        return Finding("memlock", "RLIMIT_MEMLOCK", "ok", value, detail, facts=facts)
    return Finding("memlock", "RLIMIT_MEMLOCK", "warn", value, detail,
                   "raise RLIMIT_MEMLOCK (ulimit -l, systemd LimitMEMLOCK=) or grant CAP_IPC_LOCK",
                   "enobufs_memlock", facts)


def _has_cap_ipc_lock() -> bool:
    """CAP_IPC_LOCK in the effective set and in the initial user namespace (what capable() asks)."""
    caps = effective_caps()
    initial_userns = _read("/proc/self/uid_map").split() == ["0", "0", "4294967295"]
    return bool(caps >> _CAP_IPC_LOCK & 1) and initial_userns


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def io_uring_disabled_finding() -> Finding:
    try:
        value = int(_read("/proc/sys/kernel/io_uring_disabled"))
    except FileNotFoundError:
        return Finding("io_uring_disabled", "kernel.io_uring_disabled", "ok", "absent",
                       "no such sysctl (kernel before 6.6): io_uring is available to all")
    text = {0: ("ok", "io_uring is available to all processes", ""),
            1: ("warn", "io_uring only for CAP_SYS_ADMIN or members of kernel.io_uring_group",
                "run as a member of kernel.io_uring_group, or sysctl -w kernel.io_uring_disabled=0"),
            2: ("no", "io_uring is disabled: SEND_ZC cannot be used",
                "sysctl -w kernel.io_uring_disabled=0 to allow io_uring")}
    status, detail, advice = text.get(value, ("info", f"unknown value {value}", ""))
    return Finding("io_uring_disabled", "kernel.io_uring_disabled", status, str(value), detail, advice,
                   facts={"value": value})


# --- leftovers -------------------------------------------------------------------------------

def leftovers_finding() -> list[Finding]:
    """Namespaces and devices that killed zctrace runs left: removed when allowed, else listed."""
    from ..workload import targets  # here: pyroute2 would cost every command's start
    if has_caps(CAP_NET_ADMIN, CAP_SYS_ADMIN):
        removed, failed = targets.reclaim()
    else:
        removed, failed = [], [(x, "needs root") for x in targets.leftovers()]
    names = lambda xs: ", ".join(f"{x.kind} {x.name} (pid {x.pid})" for x in xs)
    found = []
    if removed:
        found.append(Finding("leftovers", "bench targets", "info", f"{len(removed)} removed",
                             f"removed what killed zctrace runs left: {names(removed)}",
                             facts={"removed": [x.name for x in removed]}))
    if failed:
        found.append(Finding("leftovers", "bench targets", "warn", f"{len(failed)} left",
                             f"left by killed zctrace runs: {names(x for x, _ in failed)}: "
                             f"{failed[0][1]}", "run zctrace doctor as root to remove them",
                             facts={"left": [x.name for x, _ in failed]}))
    return found
