"""A small io_uring ring in pure Python (ctypes syscalls, mmap'd rings, struct-packed SQEs).

PyPI ``liburing`` (2026.3.30, Zig/C wrapper) was evaluated and rejected: ``CQE.res`` raises
OSError for any negative value, so a SEND_ZC notification with bit 31 set (COPIED) and a -EBADF
send both raise instead of being data, and its prep_send_zc(_fixed) are marked "not tested".

Memory ordering: writes to the mmap'd rings are plain stores issued in program order; we never
use SQPOLL, so ``io_uring_enter`` (a full barrier) publishes the SQ tail. On x86-64 (TSO)
reading the CQ tail before the CQEs is ordered too; weakly ordered CPUs would need an acquire.

A ``Ring`` is not thread-safe. It holds a reference (a memoryview, which also pins a
bytearray's size) to every buffer it sent until that request's final CQE: the send CQE, or
for SEND_ZC the notification CQE (the send CQE carries IORING_CQE_F_MORE when one follows);
requests sharing a ``user_data`` keep all their buffers until the last of them completes.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import select
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeAlias

IORING_OP_POLL_ADD = 6
IORING_OP_SEND = 26
IORING_OP_SEND_ZC = 47
IORING_OP_SENDMSG_ZC = 48

IORING_POLL_ADD_MULTI = 1 << 0
IORING_CQE_F_MORE = 1 << 1
IORING_CQE_F_NOTIF = 1 << 3

IORING_NOTIF_USAGE_ZC_COPIED = 1 << 31
IORING_SEND_ZC_REPORT_USAGE = 1 << 3
IORING_RECVSEND_FIXED_BUF = 1 << 2

_NR_SETUP, _NR_ENTER, _NR_REGISTER = 425, 426, 427

_SETUP_CQSIZE = 1 << 3
_SETUP_SUBMIT_ALL = 1 << 7
_OPTIONAL_SETUP_FLAGS = _SETUP_SUBMIT_ALL

_FEAT_SINGLE_MMAP = 1 << 0
_FEAT_NODROP = 1 << 1

_ENTER_GETEVENTS = 1 << 0
_SQ_CQ_OVERFLOW = 1 << 1

_REGISTER_BUFFERS = 0
_REGISTER_PROBE = 8
_OP_SUPPORTED = 1 << 0

_OFF_SQ_RING = 0
_OFF_CQ_RING = 0x8000000
_OFF_SQES = 0x10000000

# struct io_uring_params: 10 u32 (sq_entries .. resv[3]), io_sqring_offsets, io_cqring_offsets.
_PARAMS = struct.Struct("<10I 8IQ 8IQ")
# struct io_uring_sqe: opcode, flags, ioprio, fd, off, addr, len, msg_flags, user_data,
# buf_index, personality, file_index, addr3, __pad2.
_SQE = struct.Struct("<BBHiQQIIQHHIQQ")
_CQE = struct.Struct("<QiI")
_U32 = struct.Struct("<I")
_IOVEC = struct.Struct("<QQ")

Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap
"""Anything C-contiguous with the buffer protocol."""

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _PyBuffer(ctypes.Structure):
    """CPython's Py_buffer; only ``buf`` and ``len`` are read."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_void_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None


def _address(view: memoryview) -> tuple[int, int]:
    """(address, nbytes) of a C-contiguous buffer; ``view`` must stay alive to keep it valid."""
    pb = _PyBuffer()
    _get_buffer(view, ctypes.byref(pb), 0)  # PyBUF_SIMPLE: raises BufferError if not contiguous
    try:
        return pb.buf or 0, pb.len
    finally:
        _release_buffer(ctypes.byref(pb))


class UringError(OSError):
    """io_uring_setup / io_uring_enter / io_uring_register failed; ``errno`` is set."""


def _sys(nr: int, *args: int | ctypes.c_void_p) -> int:
    """Raw syscall with 64-bit arguments; retries EINTR, raises UringError on failure."""
    cargs = [a if isinstance(a, ctypes.c_void_p) else ctypes.c_long(a) for a in args]
    while True:
        ret: int = _syscall(ctypes.c_long(nr), *cargs)
        if ret >= 0:
            return ret
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise UringError(err, os.strerror(err))


@dataclass(frozen=True, slots=True)
class Cqe:
    """One completion; ``res`` is the signed 32-bit result (negative = -errno)."""

    user_data: int
    res: int
    flags: int

    @property
    def more(self) -> bool:
        """Another CQE (the SEND_ZC notification) follows for this request."""
        return bool(self.flags & IORING_CQE_F_MORE)

    @property
    def notif(self) -> bool:
        """This is a SEND_ZC notification: the kernel no longer uses the buffer."""
        return bool(self.flags & IORING_CQE_F_NOTIF)

    @property
    def zc_copied(self) -> bool:
        """Notification says the data was copied (needs IORING_SEND_ZC_REPORT_USAGE)."""
        return self.notif and bool(self.res & IORING_NOTIF_USAGE_ZC_COPIED)


class Ring:
    """An io_uring instance with ``entries`` SQEs and a CQ of twice that size.

    prep_* only write SQEs (submitting first if the SQ is full); submit() hands them to the
    kernel in one io_uring_enter. Overflowed CQEs (kernel IORING_FEAT_NODROP backlog) are
    flushed by reap()/wait(), so none are lost even if more than ``entries`` SEND_ZC requests
    are left unreaped; keep ``inflight`` <= ``entries`` to avoid the slower backlog path.
    """

    def __init__(self, entries: int = 256) -> None:
        self.fd = -1
        self._maps: list[mmap.mmap] = []
        self._held: dict[int, list[Any]] = {}
        self._registered: list[memoryview] = []
        self._last: tuple[object, memoryview, int, int] | None = None
        self.inflight = 0  # requests whose final CQE has not been reaped yet
        params = self._setup(entries)
        try:
            self._map_rings(params)
        except BaseException:
            self.close()
            raise

    def _setup(self, entries: int) -> tuple[int, ...]:
        flags = _SETUP_CQSIZE | _OPTIONAL_SETUP_FLAGS
        while True:
            buf = bytearray(_PARAMS.size)
            _PARAMS.pack_into(buf, 0, 0, 2 * entries, flags, *([0] * 25))
            c_buf = (ctypes.c_char * len(buf)).from_buffer(buf)
            try:
                self.fd = _sys(_NR_SETUP, entries, ctypes.c_void_p(ctypes.addressof(c_buf)))
            except UringError as e:
                if e.errno == errno.EINVAL and flags & _OPTIONAL_SETUP_FLAGS:
                    flags &= ~_OPTIONAL_SETUP_FLAGS  # pre-5.18 kernel
                    continue
                raise
            del c_buf
            self.setup_flags = flags
            return _PARAMS.unpack(buf)

    def _map_rings(self, p: tuple[int, ...]) -> None:
        sq_entries, cq_entries, _, _, _, self.features = p[0:6]
        sq_head, sq_tail, sq_mask, _, sq_flags, sq_dropped, sq_array = p[10:17]
        cq_head, cq_tail, cq_mask, _, cq_overflow, cqes = p[19:25]
        if not self.features & _FEAT_NODROP:
            raise UringError(errno.EOPNOTSUPP, "io_uring without IORING_FEAT_NODROP")
        sq_size = sq_array + 4 * sq_entries
        cq_size = cqes + _CQE.size * cq_entries

        def mm(size: int, offset: int) -> mmap.mmap:
            self._maps.append(mmap.mmap(self.fd, size, offset=offset))
            return self._maps[-1]

        if self.features & _FEAT_SINGLE_MMAP:
            sq = cq = mm(max(sq_size, cq_size), _OFF_SQ_RING)
        else:
            sq = mm(sq_size, _OFF_SQ_RING)
            cq = mm(cq_size, _OFF_CQ_RING)
        self._sqes = mm(_SQE.size * sq_entries, _OFF_SQES)
        self._sq, self._cq = sq, cq
        self.sq_entries, self.cq_entries = sq_entries, cq_entries
        self._sq_mask = _U32.unpack_from(sq, sq_mask)[0]
        self._cq_mask = _U32.unpack_from(cq, cq_mask)[0]
        self._sq_head_off, self._sq_tail_off, self._sq_flags_off = sq_head, sq_tail, sq_flags
        self._sq_dropped_off = sq_dropped
        self._cq_head_off, self._cq_tail_off, self._cq_overflow_off = cq_head, cq_tail, cq_overflow
        self._cqes_off = cqes
        struct.pack_into(f"<{sq_entries}I", sq, sq_array, *range(sq_entries))  # SQE i at slot i
        self._sqe_tail: int = _U32.unpack_from(sq, sq_tail)[0]
        self._sq_khead: int = self._sqe_tail  # last kernel SQ head we read
        self._cq_head = _U32.unpack_from(cq, cq_head)[0]

    def close(self) -> None:
        """Unmap the rings, close the fd and drop buffer references.

        Reap all notifications first if the bytes on the wire matter: the kernel may still be
        sending from buffers of requests that had no final CQE yet.
        """
        for m in self._maps:
            m.close()
        self._maps.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._held.clear()
        self._registered.clear()
        self._last = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def cq_overflow(self) -> int:
        """Kernel count of CQEs dropped because even the overflow backlog failed (should be 0)."""
        return int(_U32.unpack_from(self._cq, self._cq_overflow_off)[0])

    @property
    def sq_dropped(self) -> int:
        """Kernel count of invalid SQ array entries it skipped (should be 0)."""
        return int(_U32.unpack_from(self._sq, self._sq_dropped_off)[0])

    def register_buffers(self, bufs: Sequence[bytearray | memoryview]) -> None:
        """IORING_REGISTER_BUFFERS; buffer i is then usable as ``fixed_index=i``."""
        views = [memoryview(b) for b in bufs]
        iov = bytearray(_IOVEC.size * len(views))
        for i, v in enumerate(views):
            _IOVEC.pack_into(iov, i * _IOVEC.size, *_address(v))
        c_iov = (ctypes.c_char * len(iov)).from_buffer(iov)
        _sys(_NR_REGISTER, self.fd, _REGISTER_BUFFERS, ctypes.c_void_p(ctypes.addressof(c_iov)), len(views))
        self._registered = views

    def sq_space(self) -> int:
        """Free SQ slots (SQEs prepared but not yet consumed by the kernel count as used)."""
        return self.sq_entries - self._pending()

    def _push(self, opcode: int, fd: int, addr: int, n: int, msg_flags: int, user_data: int, ioprio: int = 0,
              buf_index: int = 0) -> None:
        tail = self._sqe_tail
        if (tail - self._sq_khead) & 0xFFFFFFFF >= self.sq_entries and not self.sq_space():
            self.submit()
            if not self.sq_space():
                raise UringError(errno.EBUSY, "SQ ring full and the kernel consumed nothing")
        _SQE.pack_into(self._sqes, (tail & self._sq_mask) << 6, opcode, 0, ioprio, fd, 0, addr, n,
                       msg_flags, user_data, buf_index, 0, 0, 0, 0)
        self._sqe_tail = (tail + 1) & 0xFFFFFFFF

    def _prep(self, opcode: int, fd: int, buf: Buffer, user_data: int, msg_flags: int, ioprio: int, buf_index: int) -> None:
        last = self._last
        if last is not None and last[0] is buf:
            _, view, addr, n = last
        else:
            view = memoryview(buf)
            addr, n = _address(view)
            self._last = (buf, view, addr, n)
        self._push(opcode, fd, addr, n, msg_flags, user_data, ioprio, buf_index)
        held = self._held.get(user_data)
        if held is None:
            self._held[user_data] = [1, view]
        else:
            held[0] += 1
            held.append(view)
        self.inflight += 1

    def prep_poll_multishot(self, fd: int, user_data: int, events: int = select.POLLIN) -> None:
        """Queue a multishot IORING_OP_POLL_ADD: a CQE with F_MORE (res: the ready events) each
        time ``fd`` becomes ready, until the ring closes. Not counted in ``inflight``."""
        self._push(IORING_OP_POLL_ADD, fd, 0, IORING_POLL_ADD_MULTI, events, user_data)

    def prep_send(self, fd: int, buf: Buffer, user_data: int, msg_flags: int = 0) -> None:
        """Queue IORING_OP_SEND of the whole of ``buf`` on connected socket ``fd``."""
        self._prep(IORING_OP_SEND, fd, buf, user_data, msg_flags, 0, 0)

    def prep_send_zc(self, fd: int, buf: Buffer, user_data: int, *, report_usage: bool = False,
                     fixed_index: int | None = None, msg_flags: int = 0) -> None:
        """Queue IORING_OP_SEND_ZC; with ``fixed_index``, ``buf`` must lie inside that registered buffer."""
        ioprio = IORING_SEND_ZC_REPORT_USAGE if report_usage else 0
        if fixed_index is not None:
            ioprio |= IORING_RECVSEND_FIXED_BUF
        self._prep(IORING_OP_SEND_ZC, fd, buf, user_data, msg_flags, ioprio, fixed_index or 0)

    def _enter(self, to_submit: int, min_complete: int, flags: int) -> int:
        return _sys(_NR_ENTER, self.fd, to_submit, min_complete, flags, 0, 0)

    def _pending(self) -> int:
        """How many prepared SQEs the kernel has not consumed yet."""
        self._sq_khead = int(_U32.unpack_from(self._sq, self._sq_head_off)[0])
        return (self._sqe_tail - self._sq_khead) & 0xFFFFFFFF

    def _publish(self) -> int:
        """Publish the SQ tail (after the SQEs were written); return ``_pending()``."""
        _U32.pack_into(self._sq, self._sq_tail_off, self._sqe_tail)
        return self._pending()

    def submit(self, wait_nr: int = 0) -> int:
        """Submit all prepared SQEs (and wait for ``wait_nr`` CQEs); returns how many the kernel took."""
        pending = self._publish()
        if not pending and not wait_nr:
            return 0
        return self._enter(pending, wait_nr, _ENTER_GETEVENTS if wait_nr else 0)

    def reap(self, max_n: int | None = None) -> list[Cqe]:
        """Return available CQEs (at most ``max_n``) without blocking and advance the CQ head."""
        if _U32.unpack_from(self._sq, self._sq_flags_off)[0] & _SQ_CQ_OVERFLOW:
            self._enter(0, 0, _ENTER_GETEVENTS)  # move the kernel's overflow backlog into the CQ
        head = self._cq_head
        n = (_U32.unpack_from(self._cq, self._cq_tail_off)[0] - head) & 0xFFFFFFFF
        if max_n is not None:
            n = min(n, max_n)
        if not n:
            return []
        start = head & self._cq_mask
        first = min(n, self.cq_entries - start)
        base = self._cqes_off
        raw = self._cq[base + start * 16: base + (start + first) * 16]
        if first < n:  # wrap-around
            raw += self._cq[base: base + (n - first) * 16]
        out = [Cqe(ud, res, fl) for ud, res, fl in _CQE.iter_unpack(raw)]
        self._cq_head = (head + n) & 0xFFFFFFFF
        _U32.pack_into(self._cq, self._cq_head_off, self._cq_head)
        held = self._held
        for c in out:
            if not c.flags & IORING_CQE_F_MORE:
                h = held.get(c.user_data)
                if h is not None:
                    self.inflight -= 1
                    h[0] -= 1
                    if not h[0]:
                        del held[c.user_data]
        if not self.inflight:
            self._last = None  # let the caller resize its last buffer
        return out

    def wait(self, min_complete: int) -> list[Cqe]:
        """Submit anything prepared, block until >= ``min_complete`` CQEs, return all available."""
        to_submit = self._publish()
        out: list[Cqe] = []
        while True:
            need = min_complete - len(out)
            if to_submit or need > 0:
                self._enter(to_submit, max(need, 0), _ENTER_GETEVENTS if need > 0 else 0)
                to_submit = 0
            out += self.reap()
            if len(out) >= min_complete:
                return out


def supported_opcodes() -> set[int]:
    """Opcodes this kernel supports (IORING_REGISTER_PROBE); empty if io_uring is unavailable."""
    try:
        ring = Ring(1)
    except OSError:
        return set()
    with ring:
        n_ops = 256
        probe = bytearray(16 + 8 * n_ops)
        c_probe = (ctypes.c_char * len(probe)).from_buffer(probe)
        try:
            _sys(_NR_REGISTER, ring.fd, _REGISTER_PROBE, ctypes.c_void_p(ctypes.addressof(c_probe)), n_ops)
        except UringError:
            return set()
        del c_probe
        ops_len = probe[1]
        return {probe[16 + 8 * i] for i in range(ops_len)
                if struct.unpack_from("<H", probe, 16 + 8 * i + 2)[0] & _OP_SUPPORTED}
