"""Robust under load: /proc reads of busy or vanishing rings at report and scrape time, and the
exporter's HTTP side under a flood of idle, garbage and half-open TLS connections (issue 11)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_exporter import REPO, TAG, ZCTRACE, Exporter, comm_python, families, http_get
from zctrace import snapshot
from zctrace.snapshot import RingRow, parse_ring_fdinfo, read_rings

FDINFO = """pos:\t0
flags:\t02000002
mnt_id:\t17
ino:\t{ino}
SqMask:\t0x3
SqHead:\t5
SqTail:\t5
CachedSqHead:\t5
CqMask:\t0x7
CqHead:\t{head}
CqTail:\t{tail}
CachedCqTail:\t{tail}
SQEs:\t0
CQEs:\t3
UserFiles:\t0
UserBufs:\t0
PollList:
CqOverflowList:
{overflow}NAPI:\tdisabled
"""


def fake_proc(root: Path, pid: int, fdinfo: dict[int, str | None], other: tuple[int, ...] = ()) -> None:
    """/proc/PID/fd and fdinfo of `pid`: io_uring fds with this fdinfo text (None: the fd closed
    between readlink and open), plus `other` fds that are sockets."""
    (root / str(pid) / "fd").mkdir(parents=True)
    (root / str(pid) / "fdinfo").mkdir()
    for fd, text in fdinfo.items():
        os.symlink("anon_inode:[io_uring]", root / str(pid) / "fd" / str(fd))
        if text is not None:
            (root / str(pid) / "fdinfo" / str(fd)).write_text(text)
    for fd in other:
        os.symlink("socket:[1234]", root / str(pid) / "fd" / str(fd))


def test_ring_fdinfo_parser_on_whole_truncated_and_incomplete_files(tmp_path: Path):
    whole = FDINFO.format(ino=77, head=4294967294, tail=1, overflow="  user_data=1, res=0, flags=2\n"
                                                                     "  user_data=2, res=0, flags=8\n")
    assert parse_ring_fdinfo(whole) == (77, 3, 2)  # the CQ indices wrap at 2^32
    assert parse_ring_fdinfo(FDINFO.format(ino=5, head=0, tail=0, overflow="")) == (5, 0, 0)
    assert parse_ring_fdinfo(whole.replace("CqTail:\t1\n", "")) is None  # a busy ring's read
    assert parse_ring_fdinfo(whole[:whole.index("CqHead")]) is None      # cut short
    assert parse_ring_fdinfo(whole[:whole.index("CqOverflowList")]) is None
    assert parse_ring_fdinfo(whole.replace("CqTail:\t1", "CqTail:\t")) is None
    assert parse_ring_fdinfo("") is None

    fake_proc(tmp_path, 10, {3: whole, 4: whole}, other=(5,))       # two fds, one ring
    fake_proc(tmp_path, 11, {3: whole.replace("ino:\t77", "ino:\t78").replace("CqTail:\t1\n", ""),
                             4: FDINFO.format(ino=79, head=1, tail=2, overflow=""), 6: None})
    assert sorted(read_rings({10, 11, 12}, proc=str(tmp_path)), key=lambda r: r.pid) == [
        RingRow(10, 77, 3, 2), RingRow(11, 79, 1, 0)]  # 11's busy ring and closed fd, and 12 (gone): left out


def test_a_ring_in_a_threads_own_file_table_is_found(tmp_path: Path):
    """A thread with a file table of its own (unshare(CLONE_FILES), as zctrace's send engine
    does) holds its ring where /proc/PID/fd does not show it: read from /proc/PID/task/TID."""
    fake_proc(tmp_path, 20, {}, other=(3,))  # the process's table: a socket, no ring
    fake_proc(tmp_path / "20" / "task", 20, {}, other=(3,))
    fake_proc(tmp_path / "20" / "task", 21, {7: FDINFO.format(ino=90, head=2, tail=5, overflow="")})
    assert read_rings({20}, proc=str(tmp_path)) == [RingRow(20, 90, 3, 0)]


def test_a_busy_rings_last_complete_reading_stands(tmp_path: Path):
    """A ring whose fdinfo stays incomplete (its submitter holds the lock) keeps the last
    complete reading the caller passed in `last`, rather than leaving the process's gauges."""
    whole = FDINFO.format(ino=91, head=1, tail=4, overflow="")
    fake_proc(tmp_path, 30, {3: whole})
    last: dict = {}
    assert read_rings({30}, proc=str(tmp_path), last=last) == [RingRow(30, 91, 3, 0)]
    (tmp_path / "30" / "fdinfo" / "3").write_text(whole.replace("CqTail:\t4\n", ""))  # busy now
    assert read_rings({30}, proc=str(tmp_path), last=last) == [RingRow(30, 91, 3, 0)]
    assert read_rings({30}, proc=str(tmp_path)) == []  # without a last reading: left out


def test_a_ring_never_read_whole_is_tried_on_further_apart(tmp_path: Path, monkeypatch):
    """A ring the caller has no reading of, busy for more than the quick tries (its submitter
    holds the lock), is read again further apart, and found: the exporter's first scrape of it
    then holds the process's gauges (one CI scrape in 120 missed them)."""
    whole = FDINFO.format(ino=92, head=0, tail=2, overflow="")
    fake_proc(tmp_path, 40, {3: whole})
    reads = []
    parse = snapshot.parse_ring_fdinfo

    def busy_at_first(text: str):
        reads.append(text)
        return None if len(reads) <= snapshot.RING_READ_TRIES + 3 else parse(text)

    monkeypatch.setattr(snapshot, "parse_ring_fdinfo", busy_at_first)
    assert read_rings({40}, proc=str(tmp_path), last={}) == [RingRow(40, 92, 2, 0)]
    assert len(reads) == snapshot.RING_READ_TRIES + 4
    reads.clear()  # with a reading to fall back on, only the quick tries
    assert read_rings({40}, proc=str(tmp_path), last={(40, 92): RingRow(40, 92, 1, 0)}) == [RingRow(40, 92, 1, 0)]
    assert len(reads) == snapshot.RING_READ_TRIES


@pytest.fixture
def busy_ring_sender(tmp_path: Path):
    """A real io_uring SEND_ZC sender over loopback, busy for the test's length."""
    comm = f"zbr{TAG}"
    proc = subprocess.Popen([comm_python(tmp_path, comm), "-m", "zctrace.workload", "--mode", "uring_zc",
                             "--target", "loopback", "--duration", "120"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    yield comm
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def test_trace_reports_next_to_a_busy_ring(busy_ring_sender: str, tmp_path: Path):
    """The report reads the sender's ring fdinfo while it is busy: no KeyError, a report, exit 0."""
    for i in range(3):
        out = tmp_path / f"trace{i}.json"
        run = subprocess.run(ZCTRACE + ["trace", "--duration", "2", "--json", str(out)], cwd=REPO,
                             capture_output=True, text=True, timeout=180)
        assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
        assert busy_ring_sender in out.read_text()


def test_every_scrape_next_to_a_busy_ring_has_the_per_process_families(busy_ring_sender: str, tmp_path: Path):
    """8 clients scrape an exporter next to the busy sender: every scrape holds its families."""
    exporter = Exporter(tmp_path, "busy", [])
    try:
        exporter.wait_ready()
        time.sleep(1)  # the sender's first requests
        missing: list[str] = []

        def scrape() -> None:
            for _ in range(15):
                status, _, body = http_get(exporter.url, timeout=30)
                fams = families(body)
                for name in ("zctrace_zerocopy_requests", "zctrace_zerocopy_bytes", "zctrace_io_uring_unreaped_cqes"):
                    comms = {s.labels.get("comm") for s in fams[name].samples} if name in fams else set()
                    if status != 200 or busy_ring_sender not in comms:
                        missing.append(name)
                if fams["zctrace_scrape_errors"].samples[0].value:
                    missing.append("zctrace_scrape_errors")

        threads = [threading.Thread(target=scrape) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not missing, f"{len(missing)} missing families in 120 scrapes: {sorted(set(missing))}"
    finally:
        exporter.proc.send_signal(signal.SIGTERM)
        assert exporter.proc.wait(timeout=30) == 0
    assert "Traceback" not in exporter.log.read_text()


def half_open_tls(port: int) -> socket.socket:
    """A connection that sends a real ClientHello and then never answers the server."""
    s = socket.create_connection(("127.0.0.1", port))
    tls = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO())
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    s.sendall(outgoing.read())
    return s


def bad_connection(kind: str, port: int) -> socket.socket:
    if kind == "half_open_tls":
        return half_open_tls(port)
    s = socket.create_connection(("127.0.0.1", port))
    if kind == "garbage":
        s.sendall(os.urandom(300) + b"\r\n\r\n")
    elif kind == "plain_http":
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    elif kind == "slow_head":
        s.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the rest
    return s  # "idle": nothing at all


def get(conn: http.client.HTTPConnection) -> int:
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    response.read()
    return response.status


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_flood_of_bad_connections_neither_stops_scrapes_nor_fills_the_log(tmp_path: Path, scheme: str):
    """500 bad connections at once (idle, garbage, plain HTTP on the TLS port or a request head
    that never ends, half-open TLS handshakes), held past every time limit, against a real
    `zctrace export`, while a client scrapes it twice a second: every scrape answers, the log
    stays a few lines without a traceback, and the errors are counted."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    tls = ["--tls-cert", str(cert), "--tls-key", str(key)] if scheme == "https" else []
    exporter = Exporter(tmp_path, "flood", tls, scheme=scheme,
                        ctx=ssl.create_default_context(cafile=str(cert)) if tls else None)
    kinds = ["idle", "garbage", "plain_http" if tls else "slow_head", "half_open_tls"]
    try:
        exporter.wait_ready()
        before = len(exporter.log.read_text().splitlines())
        scrapes: list[int] = []
        done = threading.Event()

        def scrape() -> None:
            while not done.wait(0.5):
                try:
                    scrapes.append(http_get(exporter.url, ctx=exporter.ctx, timeout=20)[0])
                except OSError:
                    scrapes.append(-1)

        scraper = threading.Thread(target=scrape)
        scraper.start()
        keep_alive = (http.client.HTTPSConnection("127.0.0.1", exporter.port, context=exporter.ctx, timeout=10)
                      if tls else http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=10))
        flood = [bad_connection(kinds[i % len(kinds)], exporter.port) for i in range(500)]
        keep_alive_status = [get(keep_alive)]
        time.sleep(15)  # past the handshake and request time limits
        keep_alive_status.append(get(keep_alive))  # a scrape interval later, on the same connection
        keep_alive.close()
        for s in flood:
            s.close()
        time.sleep(1)
        done.set()
        scraper.join()
        fams = exporter.metrics()
    finally:
        exporter.proc.send_signal(signal.SIGTERM)
        assert exporter.proc.wait(timeout=30) == 0
    log = exporter.log.read_text()
    assert "Traceback" not in log
    assert len(log.splitlines()) - before <= 10, log
    assert len(scrapes) >= 10 and set(scrapes) == {200}, scrapes
    assert keep_alive_status == [200, 200]
    errors = {s.labels["kind"]: s.value for s in fams["zctrace_http_client_errors"].samples}
    assert errors["timeout" if not tls else "tls_handshake"] > 0 and sum(errors.values()) >= 375, errors
    if tls:  # no request timed out: the keep-alive connection's idle time is no error
        assert errors["timeout"] == 0, errors


def test_a_family_that_fails_loses_only_itself(tmp_path: Path, monkeypatch, caplog):
    """The ring walk raising (as any /proc read of a vanishing process might) drops the CQ gauges
    of that scrape alone: the other per-process families stay, each failure is counted, and the
    log says so once, not once per scrape."""
    from zctrace.btf import Btf
    from zctrace.exporter.collector import ExportOptions, ZctraceCollector
    from zctrace.probes import Session

    def vanished(pids: set[int], proc: str = "/proc", last: dict | None = None) -> list:
        raise ProcessLookupError("process exited mid-read")

    comm = f"zff{TAG}"
    with Session.open("tracepoint", Btf.load(), pids=[os.getpid()]) as session:
        collector = ZctraceCollector(session, ExportOptions())
        subprocess.run([comm_python(tmp_path, comm), "-m", "zctrace.workload", "--mode", "uring_zc", "--target",
                        "sink", "--count", "50"], cwd=REPO, check=True, capture_output=True)
        monkeypatch.setattr(snapshot, "read_rings", vanished)
        for _ in range(3):
            fams = {m.name: m for m in collector.collect()}
    assert "zctrace_io_uring_unreaped_cqes" not in fams
    assert {s.labels["comm"] for s in fams["zctrace_zerocopy_bytes"].samples} == {comm}
    assert "zctrace_zerocopy_pinned_bytes" in fams and "zctrace_bpf_map_entries" in fams
    assert fams["zctrace_scrape_errors"].samples[0].value == 3
    assert [r.getMessage() for r in caplog.records if "io_uring_cqes failed" in r.getMessage()] == [
        "scrape: io_uring_cqes failed: ProcessLookupError: process exited mid-read"]
