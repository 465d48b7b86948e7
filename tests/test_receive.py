"""Receive side: TCP_ZEROCOPY_RECEIVE, as a real application does it, against the tracer."""

import ctypes
import mmap
import os
import select
import socket
import threading
from pathlib import Path

from zctrace import model, snapshot
from zctrace.exporter.collector import ExportOptions, ZctraceCollector

TOTAL = 4 << 20
CHUNK = 256 << 10
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


class TcpZerocopyReceive(ctypes.Structure):
    _fields_ = [("address", ctypes.c_uint64), ("length", ctypes.c_uint32), ("recv_skip_hint", ctypes.c_uint32),
                ("inq", ctypes.c_uint32), ("err", ctypes.c_int32), ("copybuf_address", ctypes.c_uint64),
                ("copybuf_len", ctypes.c_int32), ("flags", ctypes.c_uint32), ("msg_control", ctypes.c_uint64),
                ("msg_controllen", ctypes.c_uint64), ("msg_flags", ctypes.c_uint32), ("reserved", ctypes.c_uint32)]



def zerocopy_receive(conn: socket.socket, total: int) -> dict[str, int]:
    """Receive `total` bytes with TCP_ZEROCOPY_RECEIVE; what the kernel told us, summed."""
    fd = conn.fileno()
    area = libc.mmap(None, CHUNK, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    assert area not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    copybuf = ctypes.create_string_buffer(CHUNK)
    own = {"calls": 0, "mapped": 0, "copied": 0, "skipped": 0}
    got = 0
    try:
        while got < total:
            select.select([conn], [], [], 5)
            zc = TcpZerocopyReceive(address=area, length=CHUNK, copybuf_address=ctypes.addressof(copybuf),
                                    copybuf_len=CHUNK)
            optlen = ctypes.c_uint32(ctypes.sizeof(zc))
            rc = libc.getsockopt(fd, socket.IPPROTO_TCP, 35, ctypes.byref(zc), ctypes.byref(optlen))
            assert rc == 0, os.strerror(ctypes.get_errno())
            own["calls"] += 1
            own["mapped"] += zc.length
            own["copied"] += max(zc.copybuf_len, 0)
            own["skipped"] += zc.recv_skip_hint
            got += zc.length + max(zc.copybuf_len, 0)
            left = zc.recv_skip_hint
            while left:
                left -= len(conn.recv(left))
            got += zc.recv_skip_hint
    finally:
        libc.munmap(area, CHUNK)
    return own


def receive_from_a_zerocopy_sender() -> dict[str, int]:
    """TOTAL bytes sent with MSG_ZEROCOPY over loopback, received with TCP_ZEROCOPY_RECEIVE."""
    payload = mmap.mmap(-1, 64 << 10)
    payload.write(b"r" * len(payload))
    with socket.create_server(("127.0.0.1", 0)) as server:
        def send():
            with socket.create_connection(server.getsockname()) as c:
                c.setsockopt(socket.SOL_SOCKET, 60, 1)  # SO_ZEROCOPY
                for _ in range(TOTAL // len(payload)):
                    assert c.sendmsg([payload], [], 0x4000000) == len(payload)  # MSG_ZEROCOPY
        sender = threading.Thread(target=send)
        sender.start()
        conn, _ = server.accept()
        with conn:
            own = zerocopy_receive(conn, TOTAL)
        sender.join()
    assert own["mapped"] + own["copied"] + own["skipped"] == TOTAL
    assert own["calls"] > 1 and own["copied"] + own["skipped"] > 0
    return own


def test_tcp_zerocopy_receive_matches_what_the_application_got(tracer):
    """The sender uses MSG_ZEROCOPY: on 6.18 its page-aligned pages reach the receive queue as
    whole pages (copied whole on local delivery), which TCP_ZEROCOPY_RECEIVE maps; 6.12 copies
    them into partial pages, so everything goes through the copy buffer there."""
    tracer.clear()
    own = receive_from_a_zerocopy_sender()
    (rx,) = model.build(snapshot.take(tracer.bpf), tracer.tier).receive
    assert rx.pid == os.getpid()
    assert {k: getattr(rx, k) for k in own} == own
    assert rx.errors == 0


def test_tcp_zerocopy_receive_through_the_exporter(tracer):
    """The exporter's receive families, for this process, equal what the application got."""
    tracer.clear()
    collector = ZctraceCollector(tracer, ExportOptions())
    own = receive_from_a_zerocopy_sender()
    comm = Path("/proc/self/comm").read_text().strip()
    for _ in range(2):  # a new series shows 0 at its first scrape
        fams = {m.name: m for m in collector.collect()}

    def mine(name: str, label: str) -> dict[str, float]:
        return {s.labels[label]: s.value for s in fams[name].samples if s.labels["comm"] == comm}
    assert mine("zctrace_tcp_zerocopy_receive_bytes", "how") == {k: own[k] for k in ("mapped", "copied", "skipped")}
    assert mine("zctrace_tcp_zerocopy_receive_calls", "result") == {"ok": own["calls"], "error": 0}
