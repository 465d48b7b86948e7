"""Robust under load: /proc reads of busy or vanishing rings at report and scrape time, and the
exporter's HTTP side under a flood of idle, garbage and half-open TLS connections (issue 11)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_exporter import REPO, TAG, ZCTRACE, Exporter, comm_python, families, http_get
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
