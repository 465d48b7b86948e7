"""Copy reasons: each provoked on purpose and checked against what the tracer says.

Per probe tier like test_trace.py: the tracepoint tier on the host; fentry, kprobe and the
tracepoint tier inside the full-kernel VM. Reasons only the fentry/kprobe tiers can prove (a
packet tap, TX timestamps, tun/tap) are `unknown` on the tracepoint tier, never a guess; a BPF
redirect to local delivery is `local_delivery` there (what it can prove).
"""

import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import stat
import subprocess
import struct
import sys
import threading
import time

import pytest
from pyroute2 import Ethtool, IPRoute

from conftest import optmem_room
from zctrace import model, reasons, snapshot
from zctrace.bench import cells
from zctrace.header import STACK_DEPTH
from zctrace.report import render
from zctrace.workload.senders import WorkloadSpec
from zctrace.workload.sockio import ErrQueue
from zctrace.workload.targets import open_target
from zctrace.workload.uring import Ring

N = 100
SO_ZEROCOPY, MSG_ZEROCOPY = 60, 0x4000000



def report(tracer) -> model.Report:
    return model.build(snapshot.take(tracer.bpf), tracer.tier)


def reasons_after(tracer, endpoint=None, **spec) -> tuple[cells.Cell, dict[str, int]]:
    """Run one workload cell (on `endpoint` if given) and return it with the copied reasons."""
    specs = [WorkloadSpec(count=N, **spec)]
    (cell,) = cells.run(specs, tracer) if endpoint is None else cells.run_on(endpoint, specs, tracer)
    return cell, report(tracer).totals.copied_reasons


@pytest.mark.parametrize("target", ["loopback", "netns"])
@pytest.mark.parametrize("mode", ["msg_zerocopy", "uring_zc"])
def test_local_delivery(tracer, target, mode):
    cell, reasons = reasons_after(tracer, mode=mode, target=target, size=4000)
    assert cell.kernel["copied"] == N, cell
    assert reasons == {"local_delivery": N}


@contextlib.contextmanager
def _tcp_over_loopback():
    """A TCP connection over loopback whose receiver reads all it gets: the sending socket; at
    the end the sender shuts down and the reader finishes."""
    with socket.create_server(("127.0.0.1", 0)) as srv, socket.create_connection(srv.getsockname()) as s:
        peer, _ = srv.accept()

        def drain() -> None:
            while peer.recv(65536):
                pass

        reader = threading.Thread(target=drain)
        reader.start()
        try:
            yield s
        finally:
            s.shutdown(socket.SHUT_WR)
            reader.join()
            peer.close()


def test_a_chain_of_linked_notifications_longer_than_one_walk(tracer):
    """Since 6.10 io_uring links the notifications of TCP sends whose data shares skbs into one
    chain, completed together. 1,000 SEND_ZC of 100 B slices of one buffer on a corked TCP
    socket over loopback make one chain of 1,000 (on 6.1 a notification each): every one gets
    its verdict (copied: local delivery), not only the 256 the completion walks."""
    n, size = 1000, 100
    tracer.clear()
    buf = memoryview(bytearray(b"k" * n * size))
    with _tcp_over_loopback() as s, Ring(1024) as ring:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        for i in range(n):
            ring.prep_send_zc(s.fileno(), buf[i * size:(i + 1) * size], i)
        assert ring.submit() == n  # queued behind the cork (or waiting for room)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        cqes = []
        while len(cqes) < 2 * n:
            cqes += ring.wait(1)
    sends = [c for c in cqes if not c.notif]
    assert len(sends) == n and all(c.more and 0 < c.res <= size for c in sends), sends  # short when sndbuf is full
    assert [(c.more, c.res) for c in cqes if c.notif] == [(False, 0)] * n
    sent = sum(c.res for c in sends)
    rep = report(tracer)
    t = rep.totals
    assert rep.lost == {}
    assert (t.zc_requests, t.bytes, t.notifications) == (n, sent, n), t
    if tracer.tier == "tracepoint":  # no REPORT_USAGE: no verdict on this tier
        assert (t.zerocopied, t.copied, t.unknown) == (0, 0, n), t
    else:  # every one has its verdict; 6.1 (no chains: an skb per send) frees a few sent skbs
        # uncopied, the kernel's own verdict zerocopied (1 and 36 of 1,000 seen on its fentry tier)
        assert t.unknown == 0 and t.zerocopied + t.copied == n and t.copied >= n // 2, t
        assert t.copied_reasons == {"local_delivery": t.copied}


def _linked_chains() -> bool:
    """Does this kernel link io_uring notifications (6.10+)? The probes' own rule."""
    from zctrace.btf import Btf
    from zctrace.offsets import links_notifications
    return links_notifications(Btf.load())


def _uring_tcp_sends(ring: Ring, s: socket.socket, n: int, size: int, buf: memoryview) -> list:
    """n SEND_ZC of `size` B of `buf` with REPORT_USAGE on `s`, submitted and all completed:
    the CQEs so far (notifications may still be to come)."""
    for i in range(n):
        ring.prep_send_zc(s.fileno(), buf[i * size:(i + 1) * size], i, report_usage=True)
    assert ring.submit() == n
    cqes = []
    while sum(not c.notif for c in cqes) < n:
        cqes += ring.wait(1)
    sent = [c for c in cqes if not c.notif]
    assert all(c.more and 0 < c.res <= size for c in sent), sent  # short when sndbuf is full
    return cqes


def _notifications(ring: Ring, cqes: list, n: int) -> list:
    """Every notification CQE of n requests, `cqes` the ones reaped so far."""
    while sum(c.notif for c in cqes) < n:
        cqes += ring.wait(1)
    return [c for c in cqes if c.notif]


def _kernel_and_zctrace(tracer, notifs: list) -> tuple[int, model.Counts]:
    """The kernel's own count of copied requests (REPORT_USAGE), and zctrace's totals, whose
    verdicts must be the kernel's."""
    copied = sum(c.zc_copied for c in notifs)
    rep = report(tracer)
    t = rep.totals
    n = len(notifs)
    assert rep.lost == {}
    if tracer.tier == "kprobe":  # a kprobe program does not run while another kprobe or tracepoint
        # program runs on its CPU (bpf_prog_active): a copy in the softirq of an interrupt that
        # came in one goes unseen, its request zerocopied (12 of 1,000 on 6.1 in the VM)
        assert (t.zc_requests, t.unknown) == (n, 0) and t.zerocopied + t.copied == n, t
        assert copied - n // 20 <= t.copied <= copied, t
    else:
        assert (t.zc_requests, t.zerocopied, t.copied, t.unknown) == (n, n - copied, copied, 0), t
    return copied, t


def test_many_long_chains_completed_in_one_batch(tracer):
    """Eight TCP connections over loopback, 100 SEND_ZC of 100 B each, all in one submission:
    MSG_MORE holds each connection's data in one skb until its last send pushes it. Each
    connection's 100 notifications are one chain (6.10+), and all eight chains complete inside
    that one io_uring_enter: their CQEs are posted in one batch of task work. Every chain longer
    than one walk waits for those CQEs at once; all of them get their verdicts (4 waiting chains
    per ring were the most there was room for: the rest were lost as notifs_full)."""
    conns, n, size = 8, 100, 100
    buf = memoryview(bytearray(b"m" * n * size))
    tracer.clear()
    with contextlib.ExitStack() as stack, Ring(2048) as ring:
        socks = [stack.enter_context(_tcp_over_loopback()) for _ in range(conns)]
        for c, s in enumerate(socks):
            for i in range(n):
                ring.prep_send_zc(s.fileno(), buf[i * size:(i + 1) * size], c * n + i, report_usage=True,
                                  msg_flags=socket.MSG_MORE if i < n - 1 else 0)
        assert ring.submit() == conns * n
        cqes = []
        while sum(not c.notif for c in cqes) < conns * n:
            cqes += ring.wait(1)
        notifs = _notifications(ring, cqes, conns * n)
    _kernel_and_zctrace(tracer, notifs)


def test_linked_notifications_take_the_reason_of_the_skbs_that_carried_them(tracer):
    """TCP SEND_ZC over loopback with REPORT_USAGE: since 6.10 most notifications are linked
    into a chain and own no skb (their pages rode in an earlier send's skb, which local
    delivery copied). The kernel counts each copied; its reason is local delivery, that of the
    skbs that carried it, not io_uring_not_used (952 of 1,000 said so on the host before)."""
    n, size = 1000, 1000
    buf = memoryview(bytearray(b"z" * n * size))
    tracer.clear()
    with _tcp_over_loopback() as s, Ring(1024) as ring:
        notifs = _notifications(ring, _uring_tcp_sends(ring, s, n, size, buf), n)
    copied, t = _kernel_and_zctrace(tracer, notifs)
    assert copied >= n // 2, t  # a few sent skbs may be freed before the copy (6.1: 1 and 36 of 1,000)
    assert t.copied_reasons == {"local_delivery": t.copied}, t


def test_linked_notifications_whose_skbs_were_never_sent(tracer):
    """TCP SEND_ZC with REPORT_USAGE queued behind a closed receive window, then the connection
    reset: the skbs are freed unsent and uncopied. Each chain's notifications with skbs of their
    own are zero-copy; the linked ones without (6.10+) the kernel counts copied, for no copy at
    all: `linked_notification`, not io_uring_not_used (102 of 200 on the host before)."""
    n, size = 200, 1000
    SO_SNDBUFFORCE = 32
    buf = memoryview(bytearray(b"z" * n * size))
    tracer.clear()
    with socket.socket() as srv, Ring(1024) as ring:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        s = socket.create_connection(srv.getsockname())
        peer, _ = srv.accept()
        s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)
        s.setblocking(False)
        for _ in range(64):  # plain data fill the receiver (which never reads): the window closes
            with contextlib.suppress(BlockingIOError):
                s.send(b"p" * 1000)
            time.sleep(0.001)
        time.sleep(0.3)
        cqes = _uring_tcp_sends(ring, s, n, size, buf)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # a reset: the write queue is freed
        notifs = _notifications(ring, cqes, n)
        peer.close()
    copied, t = _kernel_and_zctrace(tracer, notifs)
    if _linked_chains():
        assert copied > 0, t
    assert t.copied_reasons == ({"linked_notification": t.copied} if t.copied else {}), t


def test_a_caller_zctrace_does_not_know_is_other(tracer, monkeypatch):
    """A late copy whose stack names none of the known callers is `other`, its stack kept for
    --verbose. Real local-delivery copies stand in for a kernel that moved the copy into a
    function zctrace does not list (as 6.18 did: ip_local_deliver_finish): their frames are
    taken out of the caller table."""
    if tracer.tier == "tracepoint":
        pytest.skip("the tracepoint tier has no kernel stacks: it proves local delivery from netif_receive_skb")
    full = dict(reasons._LATE_COPY_CALLERS)
    monkeypatch.setattr(reasons, "_LATE_COPY_CALLERS",
                        {f: r for f, r in full.items() if r != "local_delivery"})
    cell, got = reasons_after(tracer, mode="msg_zerocopy", target="loopback", size=4000)
    assert cell.kernel["copied"] == N, cell
    assert got == {"other": N}
    # The probe unwinds STACK_DEPTH frames and no more (its cost): a delivery from a send's
    # softirq is deeper, so every stack is cut there, and the frames that name it are kept.
    stacks = [s.stack for s in snapshot.take(tracer.bpf).copy_sites]
    assert stacks and {len(s) for s in stacks} == {STACK_DEPTH}, stacks
    rep = report(tracer)
    sites = [s for s in rep.copy_sites if s.reason == "other"]
    assert sum(s.count for s in sites) >= N, rep.copy_sites
    monkeypatch.setattr(reasons, "_LATE_COPY_CALLERS", full)
    assert {reasons.classify(tuple(s.stack)) for s in sites} == {"local_delivery"}
    text = render(rep, verbose=True)
    assert "late copies by kernel call site" in text
    assert any(line.split()[0] == "other" and " <- ".join(sites[0].stack) in line
               for line in text.splitlines() if line.strip())


@pytest.mark.parametrize("mode", ["msg_zerocopy", "uring_zc"])
def test_really_zerocopied_has_no_reason(tracer, mode):
    cell, reasons = reasons_after(tracer, mode=mode, target="sink", size=4000)
    assert cell.kernel["zerocopied"] == N, cell
    assert reasons == {}
    assert report(tracer).totals.top_reason == "-"


@pytest.mark.parametrize("mode,reason", [("msg_zerocopy", "over_mtu"), ("uring_zc", "over_mtu")])
def test_udp_over_the_mtu_is_copied_at_send(tracer, mode, reason):
    with open_target("sink", "udp") as ep, IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=ep.ifname)[0], mtu=1500)
        cell, reasons = reasons_after(tracer, ep, mode=mode, target="sink", size=4000)
    assert cell.kernel["copied"] == N, cell
    assert reasons == {reason: N}


def test_no_scatter_gather_is_copied_at_send(tracer):
    with open_target("sink", "udp") as ep, Ethtool() as eth:
        features = eth.get_features(ep.ifname)
        features.features["tx-scatter-gather"].enable = False
        eth.set_features(ep.ifname, features)
        assert not eth.get_features(ep.ifname).features["tx-scatter-gather"].enable
        cell, reasons = reasons_after(tracer, ep, mode="msg_zerocopy", target="sink", size=1000)
    assert cell.kernel["copied"] == N, cell
    assert reasons == {"no_sg": N}


@pytest.mark.parametrize("target,how", [("sink", "device"), ("sink", "msg_more"), ("sink", "udp_cork"),
                                        ("loopback", "msg_more"), ("loopback", "udp_cork")])
def test_udp_without_checksum_partial_is_copied_at_send(tracer, target, how):
    """UDP zerocopy needs CHECKSUM_PARTIAL: a device without TX checksum offload, or a corked
    datagram (MSG_MORE, or UDP_CORK, without GSO), is checksummed in software and
    __ip_append_data copies every part. Over loopback too: the copy at send comes before the
    local delivery (which would copy it again), and would happen on a real NIC."""
    UDP_CORK, MSG_MORE = 1, 0x8000
    tracer.clear()
    with open_target(target, "udp") as ep, socket.socket(ep.family, socket.SOCK_DGRAM) as s:
        if how == "device":
            with Ethtool() as eth:
                features = eth.get_features(ep.ifname)
                for name in ("tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-ipv6"):
                    if name in features.features:
                        features.features[name].enable = False
                eth.set_features(ep.ifname, features)
                after = eth.get_features(ep.ifname).features
                assert not after["tx-checksum-ip-generic"].enable and after["tx-scatter-gather"].enable
        s.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        s.connect(ep.addr)
        notes = ErrQueue(s)
        for _ in range(N // 2):  # N requests: two per datagram when corked
            if how == "device":
                s.send(b"d" * 1000, MSG_ZEROCOPY)
                s.send(b"d" * 1000, MSG_ZEROCOPY)
            elif how == "udp_cork":
                s.setsockopt(socket.IPPROTO_UDP, UDP_CORK, 1)
                s.send(b"c" * 500, MSG_ZEROCOPY)
                s.send(b"c" * 500, MSG_ZEROCOPY)
                s.setsockopt(socket.IPPROTO_UDP, UDP_CORK, 0)
            else:
                s.send(b"m" * 500, MSG_ZEROCOPY | MSG_MORE)
                s.send(b"m" * 500, MSG_ZEROCOPY)
        assert notes.wait(N, 10), (notes.copied, notes.zerocopied)
    assert (notes.copied, notes.zerocopied) == (N, 0)
    totals = report(tracer).totals
    assert totals.zc_requests == N
    assert totals.copied_reasons == {"no_csum_offload": N}


def _copied_reasons_by_api(tracer) -> dict[str, dict[str, int]]:
    """The copied reasons of each API (msg_zerocopy, io_uring) over every process."""
    out: dict[str, dict[str, int]] = {}
    for proc in report(tracer).processes:
        for flow in proc.flows:
            mine = out.setdefault(flow.api, {})
            for reason, n in flow.counts.copied_reasons.items():
                mine[reason] = mine.get(reason, 0) + n
    return out


@pytest.mark.parametrize("how,reason", [("over_mtu", "over_mtu"), ("no_sg", "no_sg"),
                                        ("device_csum", "no_csum_offload"), ("udp_cork", "no_csum_offload"),
                                        ("msg_more", "no_csum_offload")])
def test_io_uring_copied_at_send_has_the_reason_msg_zerocopy_has(tracer, how, reason):
    """io_uring SEND_ZC from a registered buffer (REPORT_USAGE) on a path or socket state that
    makes __ip_append_data copy at send: the MTU (4000 B over 1500), the sink's device without
    scatter-gather or checksum offload, a corked datagram (UDP_CORK, MSG_MORE). The kernel drops
    the request's msg_ubuf there as it marks a MSG_ZEROCOPY send copied: the same sends with
    MSG_ZEROCOPY on the same socket must get the same reason (they said io_uring_not_used
    before, on every tier). Pairs: two sends per datagram when corked."""
    UDP_CORK, MSG_MORE, pairs = 1, 0x8000, N // 2
    size = 4000 if how == "over_mtu" else 500
    with open_target("sink", "udp") as ep, socket.socket(ep.family, socket.SOCK_DGRAM) as s, Ring(64) as ring:
        if how == "over_mtu":
            subprocess.run(["ip", "link", "set", "dev", ep.ifname, "mtu", "1500"], check=True)
        elif how in ("no_sg", "device_csum"):
            with Ethtool() as eth:
                features = eth.get_features(ep.ifname)
                names = (("tx-scatter-gather",) if how == "no_sg" else
                         ("tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-ipv6"))
                for name in names:
                    if name in features.features:
                        features.features[name].enable = False
                eth.set_features(ep.ifname, features)
                after = eth.get_features(ep.ifname).features
                assert not after[names[0]].enable
        buf = bytearray(b"r" * 2 * size)
        ring.register_buffers([buf])
        halves = (memoryview(buf)[:size], memoryview(buf)[size:])
        s.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        s.connect(ep.addr)
        notes = ErrQueue(s)
        first = MSG_MORE if how == "msg_more" else 0
        tracer.clear()
        for _ in range(pairs):
            if how == "udp_cork":
                s.setsockopt(socket.IPPROTO_UDP, UDP_CORK, 1)
            s.send(halves[0], MSG_ZEROCOPY | first)
            s.send(halves[1], MSG_ZEROCOPY)
            if how == "udp_cork":
                s.setsockopt(socket.IPPROTO_UDP, UDP_CORK, 0)
        assert notes.wait(N, 10), (notes.copied, notes.zerocopied)
        assert (notes.copied, notes.zerocopied) == (N, 0)
        notifs = []
        for i in range(pairs):
            if how == "udp_cork":
                s.setsockopt(socket.IPPROTO_UDP, UDP_CORK, 1)
            for j, flags in ((0, first), (1, 0)):  # one at a time: in this order on the socket
                ring.prep_send_zc(s.fileno(), halves[j], 2 * i + j, report_usage=True, fixed_index=0,
                                  msg_flags=flags)
                cqes = ring.wait(1)
                while not any(not c.notif for c in cqes):
                    cqes += ring.wait(1)
                notifs += [c for c in cqes if c.notif]
            if how == "udp_cork":
                while len(notifs) < 2 * (i + 1):  # the cork stays until the pair's notifications
                    notifs += [c for c in ring.wait(1) if c.notif]
                s.setsockopt(socket.IPPROTO_UDP, UDP_CORK, 0)
        while len(notifs) < N:
            notifs += [c for c in ring.wait(1) if c.notif]
    assert sum(c.zc_copied for c in notifs) == N  # the kernel's own word: copied, every one
    got = _copied_reasons_by_api(tracer)
    assert got.get("msg_zerocopy") == {reason: N}, got
    assert got.get("io_uring") == got["msg_zerocopy"], got


def disconnect(s: socket.socket) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    unspec = struct.pack("HH12x", socket.AF_UNSPEC, 0)
    if libc.connect(s.fileno(), unspec, len(unspec)):
        raise OSError(ctypes.get_errno(), "connect(AF_UNSPEC)")


def test_a_reconnected_socket_gets_each_sends_own_reason(tracer):
    """One UDP socket: 100 sends to a receiver on loopback (copied: local delivery), then, connected
    to the sink with an MTU of 1500, 100 of 4000 B (copied at send: over the MTU). Each send gets
    its own reason; the first route's does not stick to the socket."""
    tracer.clear()
    with open_target("loopback", "udp") as lo, open_target("sink", "udp") as sink, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        subprocess.run(["ip", "link", "set", "dev", sink.ifname, "mtu", "1500"], check=True)
        s.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        notes = ErrQueue(s)
        s.connect(lo.addr)
        for _ in range(N):
            s.send(b"l" * 1000, MSG_ZEROCOPY)
        assert notes.wait(N, 10), (notes.copied, notes.zerocopied)
        disconnect(s)  # AF_UNSPEC: forget the destination and the source address it chose
        s.connect(sink.addr)
        for _ in range(N):
            s.send(b"m" * 4000, MSG_ZEROCOPY)
        assert notes.wait(2 * N, 10), (notes.copied, notes.zerocopied)
    assert (notes.copied, notes.zerocopied) == (2 * N, 0)
    assert report(tracer).totals.copied_reasons == {"local_delivery": N, "over_mtu": N}


@contextlib.contextmanager
def sysctl(path: str, value: str):
    with open(path) as f:
        old = f.read().strip()
    with open(path, "w") as f:
        f.write(value)
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write(old)


def test_enobufs_from_optmem(tracer):
    """A socket that never reads its notifications runs out of optmem: ENOBUFS, never tried."""
    tracer.clear()
    failures = 0
    with open_target("sink", "udp") as ep, socket.socket(ep.family, socket.SOCK_DGRAM) as s, \
            sysctl("/proc/sys/net/core/optmem_max", "600"):
        s.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        s.connect(ep.addr)
        for _ in range(N):
            try:
                s.send(b"o" * 1000, MSG_ZEROCOPY)
            except OSError as e:
                assert e.errno == errno.ENOBUFS
                failures += 1
    assert failures > 0
    assert report(tracer).totals.not_attempted_reasons == {"enobufs_optmem": failures}


def test_enobufs_from_memlock(tracer):
    """Pinned pages over RLIMIT_MEMLOCK (without CAP_IPC_LOCK): every send is ENOBUFS."""
    tracer.clear()
    child = (
        "import resource, socket, sys\n"
        "resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.SOL_SOCKET, 60, 1)\n"
        "s.connect((sys.argv[1], int(sys.argv[2])))\n"
        "fails = 0\n"
        f"for _ in range({N}):\n"
        "    try: s.send(b'm' * 8192, 0x4000000)\n"
        "    except OSError: fails += 1\n"
        "print(fails)\n")
    with open_target("sink", "udp") as ep:
        out = subprocess.run(["setpriv", "--bounding-set", "-ipc_lock", "--inh-caps", "-ipc_lock", "--",
                              sys.executable, "-c", child, ep.addr[0], str(ep.addr[1])],
                             capture_output=True, text=True, check=True).stdout
    assert int(out) == N
    assert report(tracer).totals.not_attempted_reasons == {"enobufs_memlock": N}


def test_eopnotsupp_from_io_uring_on_a_unix_socket(tracer):
    tracer.clear()
    a, b = socket.socketpair()
    with a, b, Ring(64) as ring:
        for i in range(N):
            ring.prep_send_zc(a.fileno(), b"u" * 100, i)
        ring.submit()
        while ring.inflight:
            ring.wait(1)
    counts = report(tracer).totals
    assert counts.not_attempted_reasons == {"eopnotsupp": N}
    assert (counts.zc_requests, counts.copied, counts.zerocopied) == (0, 0, 0)


@pytest.mark.parametrize("mode", ["msg_zerocopy", "uring_zc"])
@pytest.mark.parametrize("bound", [True, False], ids=["device_tap", "any_device_tap"])
def test_packet_tap(tracer, freeing_device, mode, bound):
    """An AF_PACKET socket on the egress device (tcpdump -i DEV), or on every device (tcpdump
    -i any), copies every zerocopy send for the sniffer. It needs a device that frees packets
    after the tap (dummy, or a port-less bridge): the sink drops before it. Without the tap the
    same sends are zero-copy."""
    ep = freeing_device
    cell, reasons = reasons_after(tracer, ep, mode=mode, target=ep.name, size=1000)
    assert cell.kernel["zerocopied"] == N and reasons == {}, cell
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)) as tap:
        if bound:
            tap.bind((ep.ifname, 0))
        cell, reasons = reasons_after(tracer, ep, mode=mode, target=ep.name, size=1000)
    assert cell.kernel["copied"] == N, cell
    assert reasons == {"packet_tap": N}


@pytest.mark.parametrize("tsonly", [False, True], ids=["with_payload", "tsonly"])
def test_tx_timestamps(tracer, tsonly):
    """SCHED TX timestamps without OPT_TSONLY clone the skb with its payload: copied. With
    OPT_TSONLY the timestamp carries no payload and the sends stay zero-copy. (The error queue is
    read after all N sends: optmem must hold N notifications, more than 6.1's default 20 KiB.)"""
    SO_TIMESTAMPING, TX_SCHED, SOFTWARE, OPT_ID, OPT_TSONLY = 37, 1 << 8, 1 << 4, 1 << 7, 1 << 11
    tracer.clear()
    with open_target("sink", "udp") as ep, socket.socket(ep.family, socket.SOCK_DGRAM) as s, optmem_room():
        s.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING,
                     TX_SCHED | SOFTWARE | OPT_ID | (OPT_TSONLY if tsonly else 0))
        s.connect(ep.addr)
        for _ in range(N):
            s.send(b"t" * 1000, MSG_ZEROCOPY)
            time.sleep(0.001)
        notes = ErrQueue(s)
        notes.wait(N, 10)
    reasons = report(tracer).totals.copied_reasons
    if tsonly:
        assert (notes.zerocopied, reasons) == (N, {})
    else:
        assert (notes.copied, reasons) == (N, {"tx_timestamp": N})



# A tc egress program that turns each UDP/IPv4 packet around, as if the peer had sent it to
# us (MAC and IPv4 addresses swapped: the IP and UDP checksums do not change), and redirects
# it into the ingress of the device it leaves by: the host then delivers it locally.
REFLECT = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>

BPF_ARRAY(reflected, u64, 1);

int reflect(struct __sk_buff *skb)
{
	int zero = 0;
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	unsigned char mac[ETH_ALEN];
	__be32 addr;

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != 17)
		return TC_ACT_OK;
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	addr = ip->daddr;
	ip->daddr = ip->saddr;
	ip->saddr = addr;
	u64 *n = reflected.lookup(&zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}
"""


@pytest.fixture(scope="module")
def reflector():
    from bcc import BPF
    b = BPF(text=REFLECT)
    b.load_func("reflect", BPF.SCHED_CLS)
    yield b
    b.cleanup()


def reflect_on(b, ipr: IPRoute, ep) -> None:
    """Attach the reflector to the egress of the endpoint's device, and wait until it turns
    packets around (plain datagrams, before any zerocopy send is measured)."""
    (index,) = ipr.link_lookup(ifname=ep.ifname)
    ipr.tc("add", "clsact", index=index)
    ipr.tc("add-filter", "bpf", index=index, handle=":1", fd=b.funcs[b"reflect"].fd, name="reflect",
           parent="ffff:fff3", classid=1, direct_action=True)  # clsact egress
    counter = b[b"reflected"]
    start = counter[0].value
    deadline = time.monotonic() + 10
    with socket.socket(ep.family, socket.SOCK_DGRAM) as probe:
        while counter[0].value == start:
            assert time.monotonic() < deadline, f"the tc reflector on {ep.ifname} never saw a packet"
            probe.sendto(b"?", ep.addr)
            time.sleep(0.05)


@pytest.mark.parametrize("mode", ["msg_zerocopy", "uring_zc"])
def test_bpf_redirect(tracer, reflector, mode):
    """A tc program redirects the sink's zerocopy traffic back into this host, which copies it
    on delivery. The copy's stack is local delivery (__netif_receive_skb_core on 6.12, no
    redirect frame on it); the fentry/kprobe tiers saw the redirect (skb_do_redirect) and name
    it, the tracepoint tier can prove only the local delivery."""
    with open_target("sink", "udp") as ep, IPRoute() as ipr:
        reflect_on(reflector, ipr, ep)
        cell, reasons = reasons_after(tracer, ep, mode=mode, target="sink", size=1000)
    assert cell.kernel["copied"] == N, cell
    assert reasons == ({"local_delivery": N} if tracer.tier == "tracepoint" else {"bpf_redirect": N})


@contextlib.contextmanager
def tun_device():
    """A tun device with checksum offload (so scatter-gather stays on) and a /30 on it; it
    goes away when its file descriptor is closed, and is waited for until it has.

    The /30 is from TEST-NET-2, outside 198.18.0.0/15 where the workload targets pick their
    subnets (under their own lock, which this device does not take)."""
    TUNSETIFF, TUNSETOFFLOAD, IFF_TUN, IFF_NO_PI, TUN_F_CSUM = 0x400454CA, 0x400454D0, 1, 0x1000, 1
    name = f"zc{os.getpid()}t"
    if not os.path.exists("/dev/net/tun"):  # a minimal system (the VM): load tun, make its node
        subprocess.run(["modprobe", "tun"], capture_output=True)
        if not os.path.exists("/dev/net/tun"):
            os.makedirs("/dev/net", exist_ok=True)
            os.mknod("/dev/net/tun", 0o666 | stat.S_IFCHR, os.makedev(10, 200))
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
        fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM)
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=name)[0]
            ipr.addr("add", index=index, address="198.51.100.253", prefixlen=30)
            ipr.link("set", index=index, state="up")
        yield "198.51.100.254"
    finally:
        os.close(fd)
        with IPRoute() as ipr:
            deadline = time.monotonic() + 10
            while ipr.link_lookup(ifname=name) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not ipr.link_lookup(ifname=name), f"{name} still exists 10 s after its fd closed"


def test_tun_transmit(tracer):
    """tun_net_xmit copies zerocopy frags before queueing the packet for its reader."""
    tracer.clear()
    with tun_device() as peer, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        s.connect((peer, 9))
        for _ in range(N):
            s.send(b"t" * 1000, MSG_ZEROCOPY)
        notes = ErrQueue(s)
        notes.wait(N, 10)
    assert notes.copied == N
    reasons = report(tracer).totals.copied_reasons
    assert reasons == {"tun_tap": N}
