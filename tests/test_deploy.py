"""The deploy files run as written: docs/install.md's install block, verbatim; the systemd unit
it installs, checked by `systemd-analyze verify` and `security --offline` and run as the unit
runs it; the unit's system call filter against the system calls a real exporter makes.

The install block writes /opt/zctrace and /etc/systemd/system: it runs in a private mount
namespace where both are temporary (the rest of /opt is the host's, through links), so the host
and other test runs never see it.
"""

from __future__ import annotations

import ctypes
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import copy_checkout
from test_exporter import UNIT, free_port, unit_prefix, unit_setting

REPO = Path(__file__).resolve().parent.parent
INSTALL_MD = REPO / "docs" / "install.md"
MARKER = "<!-- tests/test_deploy.py runs the next block verbatim"

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze is not installed (scripts/setup.sh installs systemd)")


def install_block() -> str:
    """The ```sh block right after MARKER in docs/install.md."""
    text = INSTALL_MD.read_text()
    assert text.count(MARKER) == 1
    m = re.match(r"[^\n]*\n```sh\n(.*?)\n```", text[text.index(MARKER):], re.S)
    assert m, "no ```sh block right after the marker"
    return m.group(1)


def exec_start() -> list[str]:
    return shlex.split(unit_setting("ExecStart"))


def analyze(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=timeout)


class Namespace:
    """A private mount namespace held open by a sleeping process; commands enter it with nsenter."""

    def __init__(self, tmp: Path) -> None:
        (tmp / "hostopt").mkdir()
        setup = (f"mount --bind /opt {tmp}/hostopt && mount -t tmpfs zctrace-test /opt && "
                 f"for e in {tmp}/hostopt/*; do ln -s \"$e\" /opt/; done && "
                 f"mount -t tmpfs zctrace-test /etc/systemd/system && echo ready && exec sleep 900")
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", setup],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def run(self, argv: list[str], cwd: Path, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", "--target", str(self.proc.pid), "--mount", "--wd=" + str(cwd), "--", *argv],
                              capture_output=True, text=True, timeout=timeout, **kw)

    def popen(self, argv: list[str], cwd: Path, **kw) -> subprocess.Popen:
        return subprocess.Popen(["nsenter", "--target", str(self.proc.pid), "--mount", "--wd=" + str(cwd), "--",
                                 *argv], **kw)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A copy of the checkout, and a namespace where install.md's block has run in it."""
    tmp = tmp_path_factory.mktemp("deploy")
    src = copy_checkout(tmp / "src")
    ns = Namespace(tmp)
    try:
        r = ns.run(["sh", "-ex", "-c", install_block()], src, timeout=600)
        assert r.returncode == 0, f"install.md's block exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, r.stderr
        yield ns, src, tmp, r
    finally:
        ns.close()


def test_install_block_installs_the_unit_and_the_path_it_runs(installed):
    ns, src, _, r = installed
    assert "active tier" in r.stdout  # zctrace doctor ran
    binary = exec_start()[0]
    assert ns.run(["test", "-x", binary], src).returncode == 0, f"{binary} not installed by install.md"
    assert ns.run(["cmp", "/etc/systemd/system/zctrace-exporter.service", str(UNIT)], src).returncode == 0
    # The venv runs the wheel's zctrace, not this checkout's.
    where = ns.run([str(Path(binary).parent / "python"), "-c", "import zctrace; print(zctrace.__file__)"], src.parent)
    assert where.stdout.startswith("/opt/zctrace/lib/"), where


def test_installed_unit_verifies_clean(installed):
    ns, src, _, _ = installed
    r = ns.run(["systemd-analyze", "verify", "/etc/systemd/system/zctrace-exporter.service"], src, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r


def test_installed_exporter_runs_as_the_unit_runs_it(installed):
    """ExecStart of the installed unit (its --listen moved to a free port), as the unit's user
    with the unit's capabilities: serves HEAD and GET /metrics, SIGTERM exits 0."""
    ns, src, tmp, _ = installed
    port = free_port()
    argv = [a if a != "127.0.0.1:9435" else f"127.0.0.1:{port}" for a in exec_start()]
    assert f"127.0.0.1:{port}" in argv
    log = tmp / "exporter.log"
    with open(log, "w") as out:
        proc = ns.popen(unit_prefix(tmp / "cache") + argv, tmp, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while "serving http" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        for method in ("HEAD", "GET"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(f"{method} /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            assert data.startswith(b"HTTP/1.1 200 OK"), data[:200]
            assert (b"zctrace_probe_up" in data) == (method == "GET")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "capabilities after attaching: kept" in text and "Traceback" not in text, text


def test_unit_verify_needs_the_execstart_path(tmp_path):
    """`systemd-analyze verify --root` against the layout install.md makes: clean with an
    executable at ExecStart's path, an error without (the check the install test relies on)."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system")
    unit = "/etc/systemd/system/zctrace-exporter.service"
    r = analyze("verify", f"--root={root}", unit)
    assert r.returncode != 0 and "is not executable" in r.stderr, r
    binary = root / exec_start()[0].lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    r = analyze("verify", f"--root={root}", unit)
    assert r.returncode == 0 and r.stderr.strip() == "", r


def test_unit_security_exposure_is_below_5():
    r = analyze("security", "--offline=yes", str(UNIT))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr
    assert float(m.group(1)) < 5.0, r.stdout


def test_unit_system_call_filter_allows_every_call_the_exporter_makes(tmp_path):
    """The exporter under strace -f (probes compiled and attached, scraped, a MSG_ZEROCOPY
    workload counted, SIGTERM): every system call is in the unit's SystemCallFilter= as
    systemd-analyze expands it, and none maps or protects memory writable and executable
    (MemoryDenyWriteExecute=yes)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (scripts/setup.sh installs it)")
    allowed: set[str] = set()
    pending = unit_setting("SystemCallFilter").split()
    while pending:
        item = pending.pop()
        if not item.startswith("@"):
            allowed.add(item)
            continue
        r = analyze("syscall-filter", item)
        assert r.returncode == 0, r
        for line in r.stdout.splitlines()[1:]:
            word = line.strip()
            if word.startswith("@"):
                pending.append(word)
            elif word and not word.startswith("#"):
                allowed.add(word)
    trace, log, port = tmp_path / "strace.txt", tmp_path / "exporter.log", free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen(["strace", "-f", "-qq", "-o", str(trace), sys.executable, "-m", "zctrace.cli",
                                 "export", "--listen", f"127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT,
                                cwd=REPO)
    try:
        deadline = time.monotonic() + 180
        while "serving http" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        subprocess.run([sys.executable, "-m", "zctrace.workload", "--mode", "msg_zerocopy", "--target", "loopback",
                        "--count", "100"], check=True, capture_output=True, cwd=REPO, timeout=120)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
        assert 'verdict="copied"' in body
        (exporter,) = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        # SIGTERM to the exporter's main thread (tgkill): a process-directed signal may go to
        # another thread while strace holds the main one stopped, and Python runs handlers only
        # in the main thread, which then sleeps on in its wait.
        libc = ctypes.CDLL(None, use_errno=True)
        tgkill = {"x86_64": 234, "aarch64": 131}[os.uname().machine]
        assert libc.syscall(ctypes.c_long(tgkill), int(exporter), int(exporter), signal.SIGTERM) == 0
        try:  # detaching is slow under strace (the kernel's tracepoint unregistration, traced)
            assert proc.wait(timeout=240) == 0, log.read_text()
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit 240 s after SIGTERM: {log.read_text()}") from None
        assert "stopped, probes detached" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    calls, wx = set(), []
    for line in trace.read_text().splitlines():
        m = re.match(r"\d+\s+([a-z_0-9]+)\(", line)
        if m:
            calls.add(m.group(1))
            if re.match(r"\d+\s+(mmap|mprotect|pkey_mprotect)\(.*PROT_EXEC", line) and (
                    "PROT_WRITE" in line or m.group(1) != "mmap"):
                wx.append(line)
    assert {"bpf", "perf_event_open", "capset"} <= calls  # the trace saw the attach and the drop
    assert calls <= allowed, sorted(calls - allowed)
    assert not wx, wx[:5]
