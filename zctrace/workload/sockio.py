"""MSG_ZEROCOPY's socket interface (SO_ZEROCOPY, the send flag), and the socket calls the Python
send loops make through ctypes: sendmmsg(2) from a prebuilt vector, and the completion
notifications read from the error queue with recvmsg(2), the kernel's own verdict per request."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import select
import socket
import struct
import time

SO_ZEROCOPY = 60
MSG_ZEROCOPY = 0x4000000
UDP_SEGMENT = 103  # SOL_UDP: UDP GSO segment size (4.18+)
SO_EE_ORIGIN_ZEROCOPY = 5
SO_EE_CODE_ZEROCOPY_COPIED = 1
_IP_RECVERR = 11
_IPV6_RECVERR = 25
_RECVERR_CMSGS = ((socket.IPPROTO_IP, _IP_RECVERR), (socket.IPPROTO_IPV6, _IPV6_RECVERR))
# struct sock_extended_err: ee_errno, ee_origin, ee_type, ee_code, ee_pad, ee_info, ee_data
_SOCK_EE = struct.Struct("=IBBBBII")
_CMSG_SPACE = socket.CMSG_SPACE(_SOCK_EE.size + 28)  # + the offender sockaddr_in6


class Msghdr(ctypes.Structure):
    """struct msghdr."""

    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


_ERRQUEUE_FLAGS = int(socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)  # an int: enum | is slow
_CMSGHDR = struct.Struct("=Qii")  # cmsg_len, cmsg_level, cmsg_type (x86-64)
_libc = ctypes.CDLL(None, use_errno=True)
_recvmsg = _libc.recvmsg
_recvmsg.restype = ctypes.c_ssize_t
_recvmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]


class ErrQueue:
    """Zerocopy completion ranges read from a socket's error queue, counted per request.

    recvmsg(2) goes through ctypes into a reused control buffer: an empty queue is a return
    value, not a Python exception, which matters when the queue is read after every send."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.zerocopied = 0
        self.copied = 0
        self._poll = select.poll()
        self._poll.register(sock, select.POLLERR)
        self._control = ctypes.create_string_buffer(_CMSG_SPACE)
        self._msg = Msghdr(control=ctypes.addressof(self._control))
        self._msg_addr = ctypes.addressof(self._msg)

    @property
    def notified(self) -> int:
        return self.zerocopied + self.copied

    def drain(self) -> None:
        """Read every queued notification without blocking."""
        fd, msg, control = self.sock.fileno(), self._msg, self._control
        flags = _ERRQUEUE_FLAGS
        while True:
            msg.controllen = _CMSG_SPACE
            if _recvmsg(fd, self._msg_addr, flags) < 0:
                err = ctypes.get_errno()
                if err == errno.EAGAIN:
                    return
                if err != errno.EINTR:
                    raise OSError(err, f"recvmsg(MSG_ERRQUEUE): {os.strerror(err)}")
                continue
            off, end = 0, msg.controllen
            while off + _CMSGHDR.size <= end:
                length, level, kind = _CMSGHDR.unpack_from(control, off)
                if length < _CMSGHDR.size:
                    break
                if (level, kind) in _RECVERR_CMSGS and length >= _CMSGHDR.size + _SOCK_EE.size:
                    self._count(_SOCK_EE.unpack_from(control, off + _CMSGHDR.size))
                off += (length + 7) & ~7

    def _count(self, ee: tuple[int, ...]) -> None:
        _, origin, _, code, _, lo, hi = ee
        if origin != SO_EE_ORIGIN_ZEROCOPY:
            return
        n = ((hi - lo) & 0xFFFFFFFF) + 1
        if code & SO_EE_CODE_ZEROCOPY_COPIED:
            self.copied += n
        else:
            self.zerocopied += n

    def wait(self, expected: int, timeout: float) -> bool:
        """Drain until ``expected`` requests are notified or ``timeout`` passes; True if all."""
        deadline = time.monotonic() + timeout
        self.drain()
        while self.notified < expected:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._poll.poll(max(1, int(left * 1000)))
            self.drain()
        return True


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", Msghdr), ("len", ctypes.c_uint)]


sendmmsg = _libc.sendmmsg
sendmmsg.restype = ctypes.c_int
sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]


class Mmsg:
    """A prebuilt sendmmsg(2) vector of ``n`` messages, each all of one buffer."""

    def __init__(self, buf: mmap.mmap, n: int) -> None:
        self._data = ctypes.c_char.from_buffer(buf)  # pins buf's address while we live
        self._iov = _Iovec(ctypes.addressof(self._data), len(buf))
        self.msgs = (_Mmsghdr * n)()
        for m in self.msgs:
            m.hdr.iov, m.hdr.iovlen = ctypes.addressof(self._iov), 1
        self.vec = ctypes.addressof(self.msgs)

    def release(self) -> None:
        """Drop the buffer export (an mmap with exports cannot be closed)."""
        del self._data
