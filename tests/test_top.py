"""`zctrace top` in a real terminal (tmux) and as plain snapshots, with a real workload."""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest
from conftest import in_cgroup, scratch_cgroup

ZCTRACE = [sys.executable, "-m", "zctrace.cli"]
WORKLOAD = [sys.executable, "-m", "zctrace.workload", "--mode", "msg_zerocopy", "--target", "loopback",
            "--duration", "30", "--json", "/dev/null"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF programs")


def workload_line(screen: str, pid: int) -> str | None:
    """The row of `pid` if it shows the workload (python3) with copied requests."""
    for line in screen.splitlines():
        fields = line.split()
        if fields[:2] == [str(pid), "python3"] and re.search(r"\bcopied \d+%", line):
            return line
    return None


@pytest.mark.parametrize("key", ["q", "C-c"])
def test_top_in_tmux_shows_the_workload_and_quits_cleanly(tmp_path, key):
    if shutil.which("tmux") is None:
        pytest.skip("tmux not installed (scripts/setup.sh installs it)")
    tmux = ["tmux", "-S", str(tmp_path / "tmux.sock")]  # a tmux server of our own
    status, err = tmp_path / "status", tmp_path / "stderr"
    command = f"{shlex.join(ZCTRACE + ['top', '--interval', '0.5'])} 2>{err}; echo $? >{status}"
    worker = subprocess.Popen(WORKLOAD, stdout=subprocess.DEVNULL)
    try:
        subprocess.run(tmux + ["new-session", "-d", "-s", "top", "-x", "200", "-y", "50", command],
                       check=True)
        screen, line = "", None
        deadline = time.monotonic() + 90
        while line is None and time.monotonic() < deadline and not status.exists():
            time.sleep(0.5)
            screen = subprocess.run(tmux + ["capture-pane", "-p", "-t", "top"], capture_output=True,
                                    text=True).stdout
            line = workload_line(screen, worker.pid)
        assert line is not None, f"workload not on screen:\n{screen}\n{err.read_text() if err.exists() else ''}"
        assert "zctrace top  tier " in screen and "(q quits)" in screen

        subprocess.run(tmux + ["send-keys", "-t", "top", key], check=True)
        deadline = time.monotonic() + 30
        while not (status.exists() and status.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status.read_text().strip() == "0", err.read_text()
        assert "Traceback" not in err.read_text()
        time.sleep(0.5)
        alive = subprocess.run(tmux + ["has-session", "-t", "top"], capture_output=True)
        assert alive.returncode != 0, "the tmux session outlived zctrace top"
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)
        worker.terminate()
        worker.wait(timeout=30)


def test_top_without_a_terminal_prints_snapshots():
    worker = subprocess.Popen(WORKLOAD, stdout=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        r = subprocess.run(ZCTRACE + ["top", "-p", str(worker.pid), "--interval", "0.5",
                                      "--iterations", "2"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.count("zctrace top  tier ") == 2 and "\x1b" not in r.stdout
        assert workload_line(r.stdout, worker.pid)
        assert "sockets with the most copied requests:" in r.stdout
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_top_cgroup_shows_only_that_subtree():
    """--cgroup PARENT shows a sender in PARENT/child and not one outside PARENT."""
    with scratch_cgroup(f"zctrace-top-{os.getpid()}") as parent:
        (parent / "child").mkdir()
        inside = subprocess.Popen(in_cgroup(parent / "child", WORKLOAD), stdout=subprocess.DEVNULL)
        outside = subprocess.Popen(WORKLOAD, stdout=subprocess.DEVNULL)
        try:
            time.sleep(1.0)
            r = subprocess.run(ZCTRACE + ["top", "--cgroup", parent.name, "--interval", "0.5",
                                          "--iterations", "2"], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            last = r.stdout[r.stdout.rindex("zctrace top  tier "):]
            assert workload_line(last, inside.pid) and not workload_line(last, outside.pid), last
            assert "1 process\n" in last
        finally:
            for worker in (inside, outside):
                worker.terminate()
                worker.wait(timeout=30)


@pytest.mark.parametrize("args,message", [
    (["--iterations", "0"], "refreshes must be positive"),
    (["--interval", "-1"], "seconds must be positive"),
    (["-p", "999999999"], "no process with PID"),
    (["--cgroup", "no/such/cgroup"], "no cgroup 'no/such/cgroup'"),
])
def test_top_bad_input_is_one_line_and_exit_2(args, message):
    r = subprocess.run(ZCTRACE + ["top", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr
