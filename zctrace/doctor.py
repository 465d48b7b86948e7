"""`zctrace doctor`: what this kernel lets zctrace see, and whether zerocopy can succeed here.

Findings: kernel, BTF, probe tiers (and why not), probes on the active tier, io_uring opcodes,
kernel functions; then, each with a one-line advice: per interface of this network namespace
whether zerocopy sends can end zero-copy (zctrace.netdev), net.core.optmem_max, RLIMIT_MEMLOCK
and CAP_IPC_LOCK, kernel.io_uring_disabled, and by behaviour (never by version or number):
IORING_SEND_ZC_REPORT_USAGE, io_uring zcrx, SCM_ZC_NOTIFICATION; and the namespaces and
devices that killed zctrace runs left (removed, as root).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import platform
import resource
import socket
import struct
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, TypeVar

from . import argtypes, tiers
from .btf import VMLINUX, Btf, BtfError
from .errors import ZctraceError
from .probes import CAP_NET_ADMIN, CAP_SYS_ADMIN, Session, has_caps, load_manifest
from .report import human_bytes, table
from .session import probe_statuses
from .workload.uring import IORING_NOTIF_USAGE_ZC_COPIED, Cqe, Ring, supported_opcodes

if TYPE_CHECKING:
    from . import netdev

IORING_OPS = {"send_zc": 47, "sendmsg_zc": 48}

SO_ZEROCOPY = 60
MSG_ZEROCOPY = 0x4000000
SCM_ZC_NOTIFICATION = 78  # the never-merged series' number; SO_DEVMEM_LINEAR in mainline
_ZC_INFO_ELEM = 12  # the series' struct zc_info_elem {u32 lo, hi; u8 zerocopy} (padded)

# SO_MEMINFO (getsockopt) and its SK_MEMINFO_OPTMEM slot: the socket's sk_omem_alloc.
_SO_MEMINFO, _SK_MEMINFO_VARS, _SK_MEMINFO_OPTMEM = 55, 9, 6
_SO_ZEROCOPY, _MSG_ZEROCOPY, _UDP_CORK = 60, 0x4000000, 1
# Uncompleted zerocopy sends per socket we expect a sender to need before it reads
# notifications; the old 20 KiB optmem_max allowed only 24.
WANT_INFLIGHT = 128
# Bytes per send assumed for the RLIMIT_MEMLOCK estimate when --size is not given.
DEFAULT_SEND_SIZE = 65536
_PAGE = os.sysconf("SC_PAGE_SIZE")
_CAP_IPC_LOCK = 14

_NR_IO_URING_SETUP, _NR_IO_URING_REGISTER = 425, 427
_SETUP_CQE32, _SETUP_SINGLE_ISSUER, _SETUP_DEFER_TASKRUN = 1 << 11, 1 << 12, 1 << 13
_REGISTER_ZCRX_IFQ = 32
_PARAMS_SIZE = 120  # struct io_uring_params

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=argtypes.positive(int, "bytes"), metavar="BYTES",
                   help="bytes per send of your application: checks UDP payload against each "
                        f"MTU and sizes the memlock estimate (default {DEFAULT_SEND_SIZE})")
    p.add_argument("--json", metavar="FILE", type=argtypes.output_file, help="also write the findings as JSON ('-' = stdout)")


def diagnose(size: int | None = None) -> dict:
    """Findings as plain data (see the module docstring); `size` = bytes per send."""
    result: dict = {"kernel": platform.release(), "btf": VMLINUX.exists(), "root": os.geteuid() == 0}
    try:
        btf = Btf.load()
    except BtfError as e:
        result["btf_error"] = str(e)
        btf = None
    checks = tiers.check_all() if result["root"] else []
    result["tiers"] = [{"tier": c.tier, "ok": c.ok, "error": c.error} for c in checks]
    active = next((c.tier for c in checks if c.ok), None)
    result["active_tier"] = active
    # Each kernel function the probes attach to, with the name this kernel has it under.
    found = {f: name for p in load_manifest() for f, name in (p.resolve_kfuncs(btf)[0] if btf else {}).items()}
    funcs = sorted({f for p in load_manifest() for f in p.kfuncs})
    result["kernel_functions"] = {f: f in found for f in funcs}
    result["kernel_function_variants"] = {f: name for f, name in sorted(found.items()) if name != f}
    result["probes"] = []
    result["probe_fallbacks"] = {}
    if active and btf:
        try:
            with Session.open(active, btf) as session:
                result["probes"] = probe_statuses(session)
                result["probe_fallbacks"] = session.fallbacks
        except ZctraceError as e:
            result["probes_error"] = str(e)
    ops = supported_opcodes()
    result["io_uring"] = {name: op in ops for name, op in IORING_OPS.items()}

    result["network_namespace"] = os.readlink("/proc/self/ns/net")
    from . import netdev  # here, not at the top: pyroute2 would cost every command's start ~0.1-0.3 s
    leftovers = leftovers_finding()  # before the interfaces: removed ones are not listed there
    ifaces = [(i, netdev.assess(i, size)) for i in netdev.interfaces()]
    result["interfaces"] = [netdev.to_json(i, v) for i, v in ifaces]
    findings = leftovers + [f for i, v in ifaces for f in _interface_findings(i, v)]
    findings += [optmem_finding(), memlock_finding(size or DEFAULT_SEND_SIZE),
                 io_uring_disabled_finding(), report_usage_finding(), zcrx_finding(),
                 scm_zc_notification_finding()]
    result["findings"] = [asdict(f) for f in findings]
    return result


# --- interfaces ------------------------------------------------------------------------------

def _interface_findings(iface: netdev.Interface, v: netdev.Assessment) -> list[Finding]:
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
        s.setsockopt(socket.SOL_SOCKET, _SO_ZEROCOPY, 1)
        s.setsockopt(socket.IPPROTO_UDP, _UDP_CORK, 1)
        s.connect(("127.0.0.1", 9))
        s.send(b"\0", _MSG_ZEROCOPY)
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
    with open("/proc/self/status") as f:
        caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    initial_userns = _read("/proc/self/uid_map").split() == ["0", "0", "4294967295"]
    return bool(caps >> _CAP_IPC_LOCK & 1) and initial_userns


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


# --- io_uring --------------------------------------------------------------------------------

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


def _udp_pair() -> tuple[socket.socket, socket.socket]:
    """(receiver bound on 127.0.0.1, sender connected to it)."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    return rx, tx


def _no_loopback(check: str, subject: str, e: OSError) -> Finding:
    return Finding(check, subject, "info", "not probed",
                   f"the probe sends to 127.0.0.1, which this namespace cannot reach: {e.strerror}",
                   "bring lo up (ip link set lo up) and run doctor again")


def report_usage_finding() -> Finding:
    """Submit a SEND_ZC with IORING_SEND_ZC_REPORT_USAGE to 127.0.0.1 and read the notification:
    loopback copies, so a supporting kernel sets IORING_NOTIF_USAGE_ZC_COPIED (bit 31) in it."""
    name, subject = "send_zc_report_usage", "IORING_SEND_ZC_REPORT_USAGE"
    tried = "a SEND_ZC of 64 B with REPORT_USAGE on a UDP socket to 127.0.0.1"
    try:
        rx, tx = _udp_pair()
    except OSError as e:
        return _no_loopback(name, subject, e)
    try:
        try:
            ring = Ring(4)
        except OSError as e:
            return Finding(name, subject, "info", "not probed", f"no io_uring here: {e.strerror}")
        with ring:
            ring.prep_send_zc(tx.fileno(), bytearray(64), 1, report_usage=True)
            ring.submit()
            cqes = _reap(ring, want=2)
    finally:
        rx.close()
        tx.close()
    send = next((c for c in cqes if not c.notif), None)
    notif = next((c for c in cqes if c.notif), None)
    if send is not None and send.res < 0:
        err = errno.errorcode.get(-send.res, str(-send.res))
        return Finding(name, subject, "no", "unsupported", f"{tried}: the kernel refused it ({err})",
                       "without it io_uring never says whether data was copied: trace with the "
                       "fentry/kprobe tier", "", {"send_res": send.res})
    if notif is None:
        return Finding(name, subject, "warn", "unknown", f"{tried}: no notification within 2 s")
    facts = {"send_res": send.res if send else None, "notif_res": notif.res}
    if notif.res & IORING_NOTIF_USAGE_ZC_COPIED:
        return Finding(name, subject, "ok", "supported",
                       f"{tried}: its notification said COPIED (res bit 31), as loopback must",
                       facts=facts)
    return Finding(name, subject, "warn", "unknown",
                   f"{tried}: accepted, but the notification did not report a copy (res "
                   f"{notif.res:#x}) though loopback copies", facts=facts)


def _reap(ring: Ring, want: int, timeout: float = 2.0) -> list[Cqe]:
    """Up to `want` CQEs within `timeout` s; stops early after a failed send (no notification)."""
    cqes: list[Cqe] = []
    deadline = time.monotonic() + timeout
    while len(cqes) < want and time.monotonic() < deadline:
        got = ring.reap()
        cqes += got
        if any(c.res < 0 and not c.notif for c in got):
            break
        if not got:
            time.sleep(0.001)
    return cqes


def _syscall(nr: int, *args: int) -> int:
    """Raw syscall; returns the result or -errno."""
    ret = _libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    return ret if ret >= 0 else -ctypes.get_errno()


def zcrx_finding() -> Finding:
    """io_uring zero-copy receive: call IORING_REGISTER_ZCRX_IFQ on a ring that has what it needs
    (DEFER_TASKRUN, CQE32) with an invalid argument pointer. A kernel with zcrx gets as far as
    copying the argument (EFAULT); one without the opcode says EINVAL; one built without
    CONFIG_IO_URING_ZCRX says EOPNOTSUPP."""
    name, subject = "zcrx", "io_uring zcrx (IORING_REGISTER_ZCRX_IFQ)"
    params = (ctypes.c_char * _PARAMS_SIZE)()
    struct.pack_into("<I", params, 8, _SETUP_CQE32 | _SETUP_SINGLE_ISSUER | _SETUP_DEFER_TASKRUN)
    fd = _syscall(_NR_IO_URING_SETUP, 1, ctypes.addressof(params))
    if fd < 0:
        if -fd == errno.EINVAL:
            return Finding(name, subject, "no", "unsupported",
                           "io_uring refused a DEFER_TASKRUN|CQE32 ring, which zcrx needs")
        return Finding(name, subject, "info", "not probed", f"no io_uring ring: {os.strerror(-fd)}")
    try:
        ret = _syscall(_NR_IO_URING_REGISTER, fd, _REGISTER_ZCRX_IFQ, 8, 1)  # 8: unmapped address
    finally:
        os.close(fd)
    need = "receiving with it needs a NIC with header split, flow steering and a free RX queue"
    tried = "IORING_REGISTER_ZCRX_IFQ with an invalid pointer"
    outcomes = {
        errno.EFAULT: ("ok", "present", f"{tried} reached the copy of its argument (EFAULT): "
                       f"zcrx is in this kernel; {need} (not checked here)", ""),
        errno.EPERM: ("ok", "present", f"{tried} asked for CAP_NET_ADMIN (EPERM): zcrx is in this "
                      f"kernel; {need}", "run the receiver with CAP_NET_ADMIN"),
        errno.EOPNOTSUPP: ("no", "not built", f"{tried}: EOPNOTSUPP: the opcode exists but the "
                           "kernel was built without CONFIG_IO_URING_ZCRX",
                           "use a kernel built with CONFIG_IO_URING_ZCRX=y"),
        errno.EINVAL: ("no", "unsupported", f"{tried}: EINVAL, an unknown register opcode: no zcrx "
                       "(merged in 6.15)", "zcrx needs kernel 6.15 or later"),
    }
    status, value, detail, advice = outcomes.get(
        -ret, ("info", "unknown", f"{tried}: unexpected {errno.errorcode.get(-ret, ret)}", ""))
    return Finding(name, subject, status, value, detail, advice, facts={"errno": -ret if ret < 0 else 0})


def scm_zc_notification_finding() -> Finding:
    """The msg_control notification series (SCM_ZC_NOTIFICATION, SOL_SOCKET 78, v1-v8, never
    merged): send a MSG_ZEROCOPY UDP datagram to 127.0.0.1 with and without that cmsg. Mainline
    (78 is SO_DEVMEM_LINEAR, receive-side only) rejects the cmsg with EINVAL."""
    name, subject = "scm_zc_notification", "SCM_ZC_NOTIFICATION"
    cmsg = (socket.SOL_SOCKET, SCM_ZC_NOTIFICATION, bytes(4 * _ZC_INFO_ELEM))
    tried = (f"a MSG_ZEROCOPY UDP sendmsg to 127.0.0.1 with a cmsg SOL_SOCKET/{SCM_ZC_NOTIFICATION} "
             "holding 4 empty zc_info_elem slots (the series' format)")
    try:
        rx, tx = _udp_pair()
    except OSError as e:
        return _no_loopback(name, subject, e)
    try:
        tx.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        try:
            tx.sendmsg([b"x" * 64], [], MSG_ZEROCOPY)
        except OSError as e:
            return Finding(name, subject, "info", "not probed",
                           f"a plain MSG_ZEROCOPY UDP send to 127.0.0.1 failed: {e.strerror}")
        try:
            tx.sendmsg([b"x" * 64], [cmsg], MSG_ZEROCOPY)
        except OSError as e:
            if e.errno != errno.EINVAL:
                return Finding(name, subject, "info", "unknown",
                               f"{tried} failed with {errno.errorcode.get(e.errno, e.errno)}")
            return Finding(name, subject, "no", "unsupported",
                           f"{tried} was refused (EINVAL) while the same send without it went "
                           "through: this kernel has no msg_control notifications (mainline)",
                           "read notifications from the error queue (recvmsg MSG_ERRQUEUE)")
    finally:
        rx.close()
        tx.close()
    return Finding(name, subject, "ok", "supported",
                   f"{tried} was accepted: this kernel takes the cmsg (delivery of notifications "
                   "through it was not checked)")


# --- leftovers -------------------------------------------------------------------------------

def leftovers_finding() -> list[Finding]:
    """Namespaces and devices that killed zctrace runs left: removed when allowed, else listed."""
    from .workload import targets  # here: pyroute2 would cost every command's start
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


# --- rendering -------------------------------------------------------------------------------

def render(result: dict) -> str:
    yes = lambda b: "yes" if b else "no"
    lines = [f"kernel       {result['kernel']}",
             f"BTF          {yes(result['btf'])}" + (f" ({result['btf_error']})" if 'btf_error' in result else "")]
    if not result["root"]:
        lines.append("probe tiers  not checked: run as root")
    else:
        lines.append("probe tiers:")
        lines.append(table(("  TIER", "LOADS", "WHY NOT"),
                           [(f"  {t['tier']}", yes(t["ok"]), t["error"]) for t in result["tiers"]]))
        lines.append(f"active tier  {result['active_tier'] or 'none'}")
    if result["probes"]:
        lines.append(f"probes on the {result['active_tier']} tier:")
        lines.append(table(("  PROGRAM", "ATTACH POINT", "OK", "ERROR"),
                           [(f"  {p['program']}", _attach_point(p), yes(p["attached"]), p["error"])
                            for p in result["probes"]]))
    for prog, whats in result["probe_fallbacks"].items():
        lines += [f"  {prog} falls back to {what}" for what in whats]
    if "probes_error" in result:
        lines.append(f"probes on the {result['active_tier']} tier: not loaded: {result['probes_error']}")
    variants = result["kernel_function_variants"]
    lines.append("kernel functions (fentry/kprobe tiers): " + ", ".join(
        f"{f} {yes(ok)}" + (f" (as {variants[f]})" if f in variants else "")
        for f, ok in result["kernel_functions"].items()))
    lines.append("io_uring     " + ", ".join(f"{k} {yes(v)}" for k, v in result["io_uring"].items()))
    lines.append(f"interfaces of this network namespace only ({result['network_namespace']}):")
    lines.append(table(("  IFACE", "KIND", "MTU", "UP", "SG", "TX-CSUM", "TSO", "GSO", "UDP-GSO",
                        "QDISC", "TAPS", "UDP-ZC", "TCP-ZC"),
                       [_iface_row(i) for i in result["interfaces"]]))
    lines.append("findings:")
    for f in result["findings"]:
        lines.append(f"  {f['status']:<5} {f['subject']}: {f['value']}: {f['detail']}")
        if f["advice"]:
            lines.append(f"        -> {f['advice']}")
    return "\n".join(lines)


def _attach_point(p: dict) -> str:
    """The target, and for an older name of a function the name the manifest gives it."""
    return f"{p['target']} (variant of {p['variant_of']})" if p.get("variant_of") else p["target"]


def _iface_row(i: dict) -> tuple:
    f = i["features"]
    onoff = lambda k: ("on" if f[k] else "off") if f else "?"
    csum = ("+".join(k.removesuffix("_csum") for k in ("ip_csum", "ipv6_csum", "hw_csum") if f[k])
            or "off") if f else "?"
    return (f"  {i['name']}", i["kind"], i["mtu"], "yes" if i["up"] else "no", onoff("sg"), csum,
            onoff("tso"), onoff("gso"), onoff("udp_gso"), i["qdisc"] or "-", len(i["taps"]),
            i["udp"], i["tcp"])
