"""zctrace.workload.uring against this host's real io_uring and real loopback sockets."""

from __future__ import annotations

import errno
import resource
import socket
from collections.abc import Iterator

import pytest

from zctrace.workload.uring import (
    IORING_CQE_F_MORE,
    IORING_CQE_F_NOTIF,
    IORING_OP_SEND,
    IORING_OP_SEND_ZC,
    IORING_OP_SENDMSG_ZC,
    Cqe,
    Ring,
    supported_opcodes,
)

OPCODES = supported_opcodes()
pytestmark = pytest.mark.skipif(IORING_OP_SEND_ZC not in OPCODES, reason="no io_uring SEND_ZC here")


def drain(ring: Ring) -> list[Cqe]:
    """Submit and collect CQEs until every request has had its final CQE."""
    out: list[Cqe] = []
    while ring.inflight:
        out += ring.wait(1)
    return out


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "peer closed"
        data += chunk
    return data


@pytest.fixture
def udp() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(sender, receiver), connected over 127.0.0.1, receiver with a 16 MiB buffer."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE: no drops in the tests
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    yield tx, rx
    tx.close()
    rx.close()


@pytest.fixture
def tcp() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(sender, receiver), a TCP connection over 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        tx = socket.create_connection(srv.getsockname())
        rx, _ = srv.accept()
    rx.settimeout(5)
    yield tx, rx
    tx.close()
    rx.close()


@pytest.fixture
def ring() -> Iterator[Ring]:
    with Ring(8) as r:
        yield r


def test_supported_opcodes() -> None:
    assert {IORING_OP_SEND, IORING_OP_SEND_ZC, IORING_OP_SENDMSG_ZC} <= OPCODES


def test_ring_geometry(ring: Ring) -> None:
    assert ring.sq_entries == 8 and ring.cq_entries == 16
    assert ring.sq_space() == 8


def test_send_udp_delivers(ring: Ring, udp: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = udp
    ring.prep_send(tx.fileno(), b"hello uring", user_data=5)
    assert ring.sq_space() == 7
    assert ring.submit() == 1
    assert drain(ring) == [Cqe(5, 11, 0)]
    assert rx.recv(100) == b"hello uring"


def test_send_tcp_delivers(ring: Ring, tcp: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = tcp
    payload = bytes(range(256)) * 64
    ring.prep_send(tx.fileno(), payload, user_data=1)
    (cqe,) = ring.wait(1)
    assert (cqe.user_data, cqe.res, cqe.more, cqe.notif) == (1, len(payload), False, False)
    assert recv_exact(rx, len(payload)) == payload


def split(cqes: list[Cqe]) -> tuple[Cqe, Cqe]:
    """(send CQE, notification CQE) of one SEND_ZC, in whatever order they came."""
    assert len(cqes) == 2
    sends = [c for c in cqes if not c.notif]
    notifs = [c for c in cqes if c.notif]
    assert len(sends) == len(notifs) == 1
    return sends[0], notifs[0]


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_send_zc_more_then_notif(ring: Ring, proto: str, request: pytest.FixtureRequest) -> None:
    tx, rx = request.getfixturevalue(proto)
    ring.prep_send_zc(tx.fileno(), b"z" * 1000, user_data=42)
    send, notif = split(drain(ring))
    assert send.user_data == notif.user_data == 42
    assert send.res == 1000 and send.flags & IORING_CQE_F_MORE and send.more
    assert notif.flags & IORING_CQE_F_NOTIF and not notif.more
    assert notif.res == 0 and not notif.zc_copied  # no REPORT_USAGE: nothing reported
    assert recv_exact(rx, 1000) == b"z" * 1000


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_send_zc_report_usage_loopback_is_copied(ring: Ring, proto: str, request: pytest.FixtureRequest) -> None:
    tx, rx = request.getfixturevalue(proto)
    ring.prep_send_zc(tx.fileno(), b"c" * 1000, user_data=7, report_usage=True)
    send, notif = split(drain(ring))
    assert send.res == 1000 and send.more and not send.zc_copied
    assert notif.zc_copied  # loopback always copies: local delivery
    assert notif.res < 0  # bit 31 set, read as signed 32-bit
    assert recv_exact(rx, 1000) == b"c" * 1000


def test_fixed_buffers(ring: Ring, udp: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = udp
    bufs = [bytearray(b"a" * 4096), bytearray(bytes(range(256)) * 16)]
    ring.register_buffers(bufs)
    view = memoryview(bufs[1])
    ring.prep_send_zc(tx.fileno(), view[100:1100], user_data=1, fixed_index=1)
    ring.prep_send_zc(tx.fileno(), bufs[0], user_data=2, fixed_index=0, report_usage=True)
    cqes = drain(ring)
    assert sorted((c.user_data, c.res) for c in cqes if not c.notif) == [(1, 1000), (2, 4096)]
    assert sum(c.notif for c in cqes) == 2
    assert rx.recv(5000) == bytes(view[100:1100])
    assert rx.recv(5000) == b"a" * 4096


def test_fixed_buffer_outside_registration_fails_in_cqe(ring: Ring, udp: tuple[socket.socket, socket.socket]) -> None:
    tx, _ = udp
    ring.register_buffers([bytearray(4096)])
    ring.prep_send_zc(tx.fileno(), bytearray(100), user_data=3, fixed_index=0)
    results = [c.res for c in drain(ring) if not c.notif]
    assert len(results) == 1 and results[0] < 0


@pytest.mark.parametrize("zc", [False, True])
def test_bad_fd_is_a_negative_res(ring: Ring, zc: bool) -> None:
    bad = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # can never be open
    if zc:
        ring.prep_send_zc(bad, b"x", user_data=9)
    else:
        ring.prep_send(bad, b"x", user_data=9)
    cqes = drain(ring)  # no exception
    assert [(c.user_data, c.res, c.more) for c in cqes if not c.notif] == [(9, -errno.EBADF, zc)]
    assert [c.user_data for c in cqes if c.notif] == ([9] if zc else [])  # failed SEND_ZC: still notified


def test_ring_holds_buffers_until_notification(ring: Ring, udp: tuple[socket.socket, socket.socket]) -> None:
    tx, _ = udp
    buf = bytearray(b"k" * 100)
    ring.prep_send_zc(tx.fileno(), buf, user_data=1)
    ring.submit()
    with pytest.raises(BufferError):
        buf.extend(b"more")  # the ring still holds a view of it
    drain(ring)
    buf.extend(b"more")  # released after the notification


def test_wraparound_many_more_requests_than_entries(ring: Ring, udp: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = udp
    n, seen = 1000, []
    for i in range(n):
        if ring.inflight == ring.sq_entries:
            seen += ring.wait(1)
        ring.prep_send_zc(tx.fileno(), i.to_bytes(4, "little") * 16, user_data=i, report_usage=True)
    seen += drain(ring)
    assert sorted(c.user_data for c in seen if not c.notif) == list(range(n))
    assert sorted(c.user_data for c in seen if c.notif) == list(range(n))
    assert all(c.res == 64 for c in seen if not c.notif)
    assert [int.from_bytes(rx.recv(100)[:4], "little") for _ in range(n)] == list(range(n))
    assert ring.cq_overflow == 0 and ring.sq_dropped == 0


def test_cq_backlog_is_not_lost(ring: Ring, udp: tuple[socket.socket, socket.socket]) -> None:
    """300 SEND_ZC without reaping = 600 CQEs for a 16-entry CQ: the kernel backlog is flushed."""
    tx, _ = udp
    n = 300
    for i in range(n):  # prep submits by itself whenever the SQ is full
        ring.prep_send_zc(tx.fileno(), b"b" * 32, user_data=i)
    cqes = drain(ring)
    assert len(cqes) == 2 * n
    assert sorted(c.user_data for c in cqes if c.notif) == list(range(n))
    assert ring.cq_overflow == 0 and ring.reap() == []


def test_reap_max_n_and_nonblocking(ring: Ring, udp: tuple[socket.socket, socket.socket]) -> None:
    tx, _ = udp
    assert ring.reap() == []
    for i in range(3):
        ring.prep_send(tx.fileno(), b"r", user_data=i)
    ring.submit(wait_nr=3)
    assert [c.user_data for c in ring.reap(max_n=2)] == [0, 1]
    assert [c.user_data for c in ring.reap()] == [2]
    assert ring.inflight == 0


def test_cqe_flags() -> None:
    copied = Cqe(1, -(1 << 31), IORING_CQE_F_NOTIF)
    assert copied.notif and copied.zc_copied and not copied.more
    assert not Cqe(1, -(1 << 31), 0).zc_copied  # bit 31 only means COPIED on a notification
    assert Cqe(1, 10, IORING_CQE_F_MORE).more
