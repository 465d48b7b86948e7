"""Send loops of the built-in workload, one per mode, and the kernel's own zerocopy verdict.

Modes: ``copy`` (send), ``msg_zerocopy`` (SO_ZEROCOPY + MSG_ZEROCOPY, notifications read from
the error queue every ``notify_batch`` sends, like the kernel selftest msg_zerocopy -l),
``uring`` (IORING_OP_SEND), ``uring_zc`` (IORING_OP_SEND_ZC) and ``uring_zc_fixed`` (SEND_ZC
from a registered buffer), the io_uring modes keeping ``inflight`` requests in flight: like the
published benchmark (and liburing's send-zerocopy example) they submit the free part of the window
and wait for all its send completions, then refill.

The loops are batched so that the kernel, not Python, sets the pace: the socket modes send
``batch`` requests per sendmmsg(2) call (1: one send(2) each), the io_uring modes submit every
free in-flight slot in one io_uring_enter from a ring whose SQEs are written once (batchring).
A SEND_ZC request is in flight until its notification CQE (``notif="wait"``: the buffer is free
again) or only until its send CQE (``notif="lazy"``: notifications are reaped as they come, the
loop of liburing's send-zerocopy example; safe here because the payload never changes).

The same loops exist compiled (engine.c, the extension ``_engine``): ``engine="c"`` (the default,
everywhere) runs them with the GIL released, so the rate is the kernel's and not the
interpreter's; ``engine="python"`` runs the loops below, kept as a cross-check of the engine.

Verdict counts are per send request and come only from the kernel: error-queue ranges
lo..hi (hi-lo+1 requests, COPIED if ee_code bit 0) or SEND_ZC notification CQEs (res bit 31
with REPORT_USAGE). For the zerocopy modes zerocopied + copied + unknown == requests, where
unknown means no verdict arrived (no notification within the final wait, MSG_ZEROCOPY without
SO_ZEROCOPY, SEND_ZC without report_usage). ``copy`` and ``uring`` request no zerocopy and
report 0/0/0.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import ipaddress
import mmap
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from .batchring import BatchRing
from .sockio import MSG_ZEROCOPY, SO_ZEROCOPY, UDP_SEGMENT, ErrQueue, Mmsg, sendmmsg
from .targets import Endpoint, check_target
from .uring import IORING_CQE_F_MORE, IORING_CQE_F_NOTIF

MODES = ("copy", "msg_zerocopy", "uring", "uring_zc", "uring_zc_fixed")
ZC_MODES = ("msg_zerocopy", "uring_zc", "uring_zc_fixed")
URING_MODES = ("uring", "uring_zc", "uring_zc_fixed")

MAX_UDP_SIZE = 65507
MAX_TCP_SIZE = 1 << 24
MAX_INFLIGHT = 4096
MAX_BATCH = 1024  # UIO_MAXIOV: the most messages one sendmmsg call takes
NOTIF_POLICIES = ("wait", "lazy")
ENGINES = ("c", "python")
FINAL_WAIT = 10.0  # bound on the wait for outstanding notifications at the end (they are
#                   normally there at once; a loaded or emulated machine can take seconds)
_CLOCK_EVERY = 64  # sends between clock checks in the non-zerocopy socket loop
_DEFAULT_DURATION = 1.0


@dataclass(frozen=True)
class WorkloadSpec:
    """One workload run. Set exactly one of ``duration`` (seconds) and ``count`` (requests);
    giving ``count`` replaces the default duration."""

    mode: str
    proto: str = "udp"
    size: int = 4000
    target: str = "sink"
    duration: float | None = _DEFAULT_DURATION
    count: int | None = None
    notify_batch: int = 32
    report_usage: bool = True
    inflight: int = 8
    so_zerocopy: bool = True
    batch: int = 32
    notif: str = "wait"
    engine: str = "c"  # the compiled loops, as users run them; "python": the cross-check
    udp_segment: int = 0  # UDP GSO: the kernel cuts each request into datagrams of this size

    def __post_init__(self) -> None:
        if self.count is not None and self.duration == _DEFAULT_DURATION:
            object.__setattr__(self, "duration", None)


@dataclass
class WorkloadResult:
    """What one run did; ``kernel_*`` are the kernel's own per-request zerocopy verdicts and
    ``cpu_seconds`` is the sending thread's user+system CPU time."""

    spec: WorkloadSpec
    requests: int
    bytes: int
    seconds: float
    cpu_seconds: float
    kernel_zerocopied: int
    kernel_copied: int
    kernel_unknown: int
    pid: int = field(default_factory=os.getpid)


def remote_endpoint(target: str) -> Endpoint | None:
    """The Endpoint of a remote target ``ADDR:PORT`` (IPv6 as ``[ADDR]:PORT``), None for a named
    local target. Nothing is set up: a receiver there (for TCP) is the user's business."""
    host, sep, port = target.rpartition(":")
    if not sep:
        return None
    try:
        addr = ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
        number = int(port)
    except ValueError:
        raise ValueError(f"remote target must be ADDR:PORT with an IP address, not {target!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"port must be between 1 and 65535, not {port!r}")
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    return Endpoint(target, (str(addr), number), family, None)


def validate(spec: WorkloadSpec) -> None:
    """Raise ValueError with one clear sentence if ``spec`` cannot run."""
    if spec.mode not in MODES:
        raise ValueError(f"unknown mode {spec.mode!r}; choose one of {', '.join(MODES)}")
    if remote_endpoint(spec.target) is None:
        check_target(spec.target, spec.proto)
    if not _positive_int(spec.size):
        raise ValueError(f"size must be a positive number of bytes, not {spec.size!r}")
    if spec.proto == "udp" and spec.size > MAX_UDP_SIZE:
        raise ValueError(f"size {spec.size} is too big for one UDP datagram (max {MAX_UDP_SIZE})")
    if spec.size > MAX_TCP_SIZE:
        raise ValueError(f"size {spec.size} is too big (max {MAX_TCP_SIZE} bytes per send)")
    if (spec.duration is None) == (spec.count is None):
        raise ValueError("give exactly one of duration and count")
    if spec.duration is not None and not (isinstance(spec.duration, (int, float))
                                          and spec.duration > 0):
        raise ValueError(f"duration must be a positive number of seconds, not {spec.duration!r}")
    if spec.count is not None and not _positive_int(spec.count):
        raise ValueError(f"count must be a positive integer, not {spec.count!r}")
    if not _positive_int(spec.notify_batch):
        raise ValueError(f"notify_batch must be a positive integer, not {spec.notify_batch!r}")
    if not (_positive_int(spec.inflight) and spec.inflight <= MAX_INFLIGHT):
        raise ValueError(f"inflight must be between 1 and {MAX_INFLIGHT}, not {spec.inflight!r}")
    if not spec.so_zerocopy and spec.mode != "msg_zerocopy":
        raise ValueError("so_zerocopy=False only applies to mode msg_zerocopy")
    if not spec.report_usage and spec.mode not in ("uring_zc", "uring_zc_fixed"):
        raise ValueError("report_usage=False only applies to modes uring_zc and uring_zc_fixed")
    if not (_positive_int(spec.batch) and spec.batch <= MAX_BATCH):
        raise ValueError(f"batch must be between 1 and {MAX_BATCH}, not {spec.batch!r}")
    if spec.notif not in NOTIF_POLICIES:
        raise ValueError(f"notif must be one of {', '.join(NOTIF_POLICIES)}, not {spec.notif!r}")
    if spec.notif != "wait" and spec.mode not in ("uring_zc", "uring_zc_fixed"):
        raise ValueError("notif='lazy' only applies to modes uring_zc and uring_zc_fixed")
    if spec.udp_segment and not (spec.proto == "udp" and _positive_int(spec.udp_segment)
                                 and spec.udp_segment <= spec.size):
        raise ValueError(f"udp_segment must be a UDP segment size of at most size ({spec.size} B), "
                         f"not {spec.udp_segment!r}")
    if spec.engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {spec.engine!r}")


def _positive_int(x: object) -> bool:
    return type(x) is int and x > 0


def run_workload(spec: WorkloadSpec, endpoint: Endpoint) -> WorkloadResult:
    """Run ``spec`` against an open target and return what the kernel said about it."""
    validate(spec)
    if endpoint.name != spec.target:
        raise ValueError(f"spec wants target {spec.target!r} but the endpoint is {endpoint.name!r}")
    if spec.engine == "c":
        engine = compiled_engine()
        with _connect(spec, endpoint) as sock:
            return _run_c(engine, spec, sock)
    buf = _payload(spec.size)  # unmapped when the last reference goes (rings keep views)
    gc_was_on = gc.isenabled()
    gc.disable()  # no collector pauses inside the timed loop (as timeit does)
    try:
        with _connect(spec, endpoint) as sock:
            if spec.mode in URING_MODES:
                return _run_uring(spec, sock, buf)
            return _run_socket(spec, sock, buf)
    finally:
        if gc_was_on:
            gc.enable()


def compiled_engine():
    """The extension module zctrace.workload._engine, or ValueError saying how to get it."""
    try:
        from . import _engine
    except ImportError:
        raise ValueError("the compiled send engine is not built (pip install ., or python3 setup.py "
                         "build_ext --inplace in a checkout); --engine python runs without it") from None
    return _engine


def _run_c(engine, spec: WorkloadSpec, sock: socket.socket) -> WorkloadResult:
    """One run of the compiled loops on the connected socket, in a thread of its own (the GIL
    released) while this one waits: signal handlers run here, and an exception they raise
    (KeyboardInterrupt) stops the loops before it goes on."""
    zc = spec.mode in ZC_MODES
    out: dict[str, object] = {}

    def work() -> None:
        try:
            engine.private_files()  # socket calls as cheap as a single-threaded sender's
            out["result"] = engine.run(
                sock.fileno(), spec.mode, spec.size, tcp=spec.proto == "tcp",
                duration=spec.duration or 0.0, count=spec.count or -1, notify_batch=spec.notify_batch,
                batch=spec.batch, inflight=spec.inflight, lazy=spec.notif == "lazy",
                report_usage=spec.report_usage,
                final_wait=0.0 if spec.mode == "msg_zerocopy" and not spec.so_zerocopy else FINAL_WAIT)
        except BaseException as e:  # handed to the waiting thread
            out["error"] = e

    loop = threading.Thread(target=work, name="zctrace-engine", daemon=True)
    loop.start()
    try:
        while loop.is_alive():
            loop.join(0.1)
    except BaseException:
        while loop.is_alive():  # again until it ends: a request before run() began is cleared
            engine.stop()
            loop.join(0.1)
        raise
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    requests, nbytes, seconds, cpu, zcd, cpd = out["result"]  # type: ignore[misc]
    return WorkloadResult(spec, requests, nbytes, seconds, cpu, zcd, cpd,
                          requests - zcd - cpd if zc else 0)


def _payload(size: int) -> mmap.mmap:
    """A page-aligned buffer with every page touched (so none is the shared zero page)."""
    buf = mmap.mmap(-1, size)
    pattern = bytes(range(256)) * 16
    for off in range(0, size, len(pattern)):
        buf[off:off + len(pattern)] = pattern[:size - off]
    return buf


def _connect(spec: WorkloadSpec, endpoint: Endpoint) -> socket.socket:
    """A socket connected to the endpoint and bound to its device, so it never routes elsewhere."""
    kind = socket.SOCK_STREAM if spec.proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(endpoint.family, kind)
    try:
        if endpoint.ifname:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, endpoint.ifname.encode())
        if spec.mode == "msg_zerocopy" and spec.so_zerocopy:
            sock.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        if spec.udp_segment:
            sock.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, spec.udp_segment)
        if spec.proto == "tcp":  # one segment per request, no Nagle wait on unacked zc data
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect(endpoint.addr)
    except BaseException:
        sock.close()
        raise
    return sock


# --- socket modes ----------------------------------------------------------------------------

def _run_socket(spec: WorkloadSpec, sock: socket.socket, buf: mmap.mmap) -> WorkloadResult:
    zc = spec.mode == "msg_zerocopy"
    flags = MSG_ZEROCOPY if zc else 0
    errq = ErrQueue(sock) if zc else None
    group = spec.notify_batch if zc else max(spec.batch, _CLOCK_EVERY)  # sends between drains
    chunk = min(spec.batch, group)
    mmsg = Mmsg(buf, chunk) if chunk > 1 else None
    fd, send, size, tcp = sock.fileno(), sock.send, spec.size, spec.proto == "tcp"
    left = spec.count
    requests = nbytes = 0
    cpu0 = time.thread_time()
    t0 = time.monotonic()
    deadline = t0 + spec.duration if spec.duration is not None else 0.0
    try:
        while True:
            n = group if left is None else min(group, left)
            done = 0
            try:
                while done < n:
                    if mmsg is None:
                        nbytes += send(buf, flags)
                        done += 1
                        continue
                    k = sendmmsg(fd, mmsg.vec, min(chunk, n - done), flags)
                    if k < 0:
                        err = ctypes.get_errno()
                        raise OSError(err, os.strerror(err))
                    nbytes += sum(m.len for m in mmsg.msgs[:k]) if tcp else k * size
                    done += k
            except OSError as e:
                # ENOBUFS: too many zerocopy sends outstanding (optmem / locked pages); wait for some.
                if errq is None or e.errno != errno.ENOBUFS or not errq.wait(errq.notified + 1, 1.0):
                    raise
            requests += done
            if errq is not None:
                errq.drain()
            if left is not None:
                left -= done
                if not left:
                    break
            elif time.monotonic() >= deadline:
                break
        if errq is not None:
            # Without SO_ZEROCOPY the kernel posts nothing: one last look, no waiting.
            errq.wait(requests, FINAL_WAIT if spec.so_zerocopy else 0.0)
        seconds = time.monotonic() - t0
        cpu = time.thread_time() - cpu0
    finally:
        if mmsg is not None:
            mmsg.release()
    zcd, cpd = (errq.zerocopied, errq.copied) if errq else (0, 0)
    unknown = requests - zcd - cpd if zc else 0
    return WorkloadResult(spec, requests, nbytes, seconds, cpu, zcd, cpd, unknown)


# --- io_uring modes --------------------------------------------------------------------------

def _run_uring(spec: WorkloadSpec, sock: socket.socket, buf: mmap.mmap) -> WorkloadResult:
    zc = spec.mode != "uring"
    tally = _UringTally(zc and spec.report_usage, zc and spec.notif == "wait")
    inflight, left = spec.inflight, spec.count
    entries = 1 << max(6, (2 * inflight - 1).bit_length())  # CQ = 2 x entries: room for notifs
    with BatchRing(entries=entries) as ring:
        if spec.mode == "uring_zc_fixed":
            ring.register_buffers([buf])
        ring.fill(sock.fileno(), buf, zc=zc, fixed=spec.mode == "uring_zc_fixed",
                  report_usage=tally.usage,
                  msg_flags=socket.MSG_WAITALL if spec.proto == "tcp" else 0)  # no short sends
        push, reap, add = ring.push, ring.reap, tally.add
        submitted = 0
        cpu0 = time.thread_time()
        t0 = time.monotonic()
        deadline = t0 + spec.duration if spec.duration is not None else 0.0
        cq_room = ring.cq_entries
        while left if left is not None else time.monotonic() < deadline:
            # Never more CQEs owed than the CQ holds (lazy notifications pile up otherwise).
            unsent = submitted - tally.requests
            n = min(inflight - (submitted - tally.done),
                    (cq_room - tally.outstanding(submitted) - unsent) // 2)
            n = max(n, 0)
            if left is not None:
                n = min(n, left)
                left -= n
            submitted += n
            push(n, max(1, unsent + n))  # every send CQE of the window
            add(*reap())
        t_end = time.monotonic() + FINAL_WAIT  # then missing notifications stay unknown
        while tally.outstanding(submitted) and time.monotonic() < t_end:
            add(*ring.wait_reap(t_end))
        seconds = time.monotonic() - t0
        cpu = time.thread_time() - cpu0
    unknown = tally.requests - tally.zerocopied - tally.copied if zc else 0
    return WorkloadResult(spec, tally.requests, tally.bytes, seconds, cpu, tally.zerocopied,
                          tally.copied, unknown)


class _UringTally:
    """Counts send CQEs (requests, bytes) and notification CQEs (with REPORT_USAGE, verdicts).

    A request is done at its send CQE, or with ``wait_notif`` at its notification CQE if the
    send CQE said one follows (IORING_CQE_F_MORE). CQEs come as two lists (flags, res) and are
    counted with list methods; anything but successful sends and notifications is an error.
    """

    _COPIED = -(1 << 31)  # IORING_NOTIF_USAGE_ZC_COPIED as a signed res

    def __init__(self, usage: bool, wait_notif: bool) -> None:
        self.usage, self.wait_notif = usage, wait_notif
        self.requests = self.bytes = self.zerocopied = self.copied = 0
        self.notified = self.expected_notifs = self.done = 0

    def add(self, flags: list[int], res: list[int]) -> None:
        notifs, more = flags.count(IORING_CQE_F_NOTIF), flags.count(IORING_CQE_F_MORE)
        sends = flags.count(0) + more
        if sends + notifs != len(flags) or (res and min(res) < 0 and not self._failed_ok(flags, res)):
            raise self._error(flags, res)
        copied = res.count(self._COPIED)
        self.requests += sends
        self.bytes += sum(res) - copied * self._COPIED
        self.expected_notifs += more
        self.notified += notifs
        if self.usage:
            self.copied += copied
            self.zerocopied += notifs - copied
        self.done += (sends - more + notifs) if self.wait_notif else sends

    def _failed_ok(self, flags: list[int], res: list[int]) -> bool:
        """Only notifications carry a negative res (the COPIED bit)."""
        return all(f == IORING_CQE_F_NOTIF for f, r in zip(flags, res) if r < 0)

    @staticmethod
    def _error(flags: list[int], res: list[int]) -> OSError:
        for f, r in zip(flags, res):
            if r < 0 and f != IORING_CQE_F_NOTIF:
                return OSError(-r, f"io_uring send failed: {os.strerror(-r)}")
        return OSError(errno.EPROTO, f"unexpected CQE flags {sorted(set(flags))}")

    def outstanding(self, submitted: int) -> int:
        """Requests or notifications the kernel still owes."""
        return submitted - self.requests + self.expected_notifs - self.notified
