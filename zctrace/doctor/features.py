"""Doctor's experiments: the kernel's zerocopy features tried by behaviour, never by version or
number: IORING_SEND_ZC_REPORT_USAGE, io_uring zcrx (a raw io_uring_register), SCM_ZC_NOTIFICATION."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import time

from ..workload.sockio import MSG_ZEROCOPY, SO_ZEROCOPY
from ..workload.uring import IORING_NOTIF_USAGE_ZC_COPIED, Cqe, Ring
from .system import Finding

SCM_ZC_NOTIFICATION = 78  # the never-merged series' number; SO_DEVMEM_LINEAR in mainline
_ZC_INFO_ELEM = 12  # the series' struct zc_info_elem {u32 lo, hi; u8 zerocopy} (padded)

_NR_IO_URING_SETUP, _NR_IO_URING_REGISTER = 425, 427
_SETUP_CQE32, _SETUP_SINGLE_ISSUER, _SETUP_DEFER_TASKRUN = 1 << 11, 1 << 12, 1 << 13
_REGISTER_ZCRX_IFQ = 32
_PARAMS_SIZE = 120  # struct io_uring_params

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


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
