"""A Ring for benchmark loops: every SQE slot holds the same request, so a submit of k requests
is one tail store and one io_uring_enter, and completions are counted in bulk.

The send loops of ``zctrace bench`` send one buffer over and over. Writing an SQE per request
and building a Python object per CQE (``Ring.prep_*``/``Ring.reap``) costs more CPU than the
kernel spends on a small send, so the benchmark would measure Python. Here ``fill`` writes the
request into all ``sq_entries`` slots once (user_data = slot index), ``push`` only moves the
SQ tail, and ``reap`` returns the flags and res of all available CQEs as two lists.
The kernel reads an SQE when it consumes it, and the slots never change, so reusing them is safe.
Do not mix with ``Ring.prep_*``/``Ring.reap`` on the same instance.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import select
import time

from .uring import (IORING_OP_SEND, IORING_OP_SEND_ZC, IORING_RECVSEND_FIXED_BUF,
                    IORING_SEND_ZC_REPORT_USAGE, Ring, UringError, _address, _SQE, _U32)

_NR_ENTER = 426
_ENTER_GETEVENTS = 1 << 0
_SQ_CQ_OVERFLOW = 1 << 1

_libc = ctypes.CDLL(None, use_errno=True)
_enter = _libc.syscall  # this CDLL's own function object: argtypes do not leak to uring.py
_enter.restype = ctypes.c_long
_enter.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                   ctypes.c_void_p, ctypes.c_size_t]


class BatchRing(Ring):
    """A Ring whose SQ slots all hold one prepared send (see the module docstring)."""

    def fill(self, fd: int, buf: mmap.mmap, *, zc: bool, fixed: bool = False,
             report_usage: bool = False, msg_flags: int = 0) -> None:
        """Write SEND (or SEND_ZC, optionally from registered buffer 0) of all of ``buf`` to
        ``fd`` into every SQ slot. The ring keeps ``buf`` exported until closed."""
        self._fill_view = memoryview(buf)
        addr, n = _address(self._fill_view)
        opcode = IORING_OP_SEND_ZC if zc else IORING_OP_SEND
        ioprio = (IORING_SEND_ZC_REPORT_USAGE if report_usage else 0) | (
            IORING_RECVSEND_FIXED_BUF if fixed else 0)
        for slot in range(self.sq_entries):
            _SQE.pack_into(self._sqes, slot << 6, opcode, 0, ioprio, fd, 0, addr, n, msg_flags,
                           slot, 0, 0, 0, 0, 0)

    def push(self, k: int, wait_nr: int = 0) -> None:
        """Submit the next ``k`` (<= sq_entries) slots and wait for ``wait_nr`` CQEs."""
        if k:
            self._sqe_tail = (self._sqe_tail + k) & 0xFFFFFFFF
            _U32.pack_into(self._sq, self._sq_tail_off, self._sqe_tail)
        flags = _ENTER_GETEVENTS if wait_nr or self._overflowed() else 0  # waiting flushes too
        if not k and not flags:
            return
        while _enter(_NR_ENTER, self.fd, k, wait_nr, flags, None, 0) < 0:
            err = ctypes.get_errno()
            if err != errno.EINTR:
                raise UringError(err, f"io_uring_enter: {errno.errorcode.get(err, err)}")
            k = 0  # the kernel took the SQEs before the signal; only wait again

    def _overflowed(self) -> bool:
        return bool(_U32.unpack_from(self._sq, self._sq_flags_off)[0] & _SQ_CQ_OVERFLOW)

    def reap(self) -> tuple[list[int], list[int]]:  # type: ignore[override]
        """Consume every available CQE; return their flags and their (signed) res."""
        if self._overflowed():
            self.push(0)  # GETEVENTS: move the kernel's overflow backlog into the CQ
        head = self._cq_head
        n = (_U32.unpack_from(self._cq, self._cq_tail_off)[0] - head) & 0xFFFFFFFF
        if not n:
            return [], []
        start = head & self._cq_mask
        first = min(n, self.cq_entries - start)
        base = self._cqes_off
        raw = self._cq[base + start * 16: base + (start + first) * 16]
        if first < n:
            raw += self._cq[base: base + (n - first) * 16]
        self._cq_head = (head + n) & 0xFFFFFFFF
        _U32.pack_into(self._cq, self._cq_head_off, self._cq_head)
        words = memoryview(raw).cast("i")  # user_data lo, hi, res, flags
        return words[3::4].tolist(), words[2::4].tolist()

    def wait_reap(self, deadline: float) -> tuple[list[int], list[int]]:
        """Like ``reap``, but wait (poll on the ring fd) until CQEs or ``deadline``."""
        got = self.reap()
        left = deadline - time.monotonic()
        if got[0] or left <= 0:
            return got
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.poll(max(1, int(left * 1000)))
        return self.reap()

    def close(self) -> None:
        self._fill_view = None
        super().close()
