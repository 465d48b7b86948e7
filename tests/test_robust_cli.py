"""The command line under bad input, missing privileges, signals at any moment and runs killed
with SIGKILL: one line and exit 2 before any work, reports written, nothing left behind."""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyroute2 import IPRoute, netns

from zctrace.errors import ZctraceError
from zctrace.exporter.server import read_basic_auth

ZCTRACE = [sys.executable, "-m", "zctrace.cli"]
UNPRIVILEGED = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--"]
WAIT = 60  # seconds any bounded wait gives up after


def run(args, prefix=(), **kw):
    return subprocess.run([*prefix, *ZCTRACE, *args], capture_output=True, text=True, timeout=120, **kw)


def one_error_line(r, message: str) -> None:
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("zctrace: error: "), r.stderr
    assert message in r.stderr, r.stderr


# --- bad input: one line, exit 2, nothing run ----------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["trace", "--duration", "nan"], "not a number of seconds"),
    (["trace", "--duration", "inf"], "at most 2592000"),
    (["trace", "--duration", "1e12"], "at most 2592000"),
    (["bench", "--duration", "nan"], "not a number of seconds"),
    (["top", "--interval", "inf"], "at most 2592000"),
    (["trace", "--interval", "0"], "seconds must be positive"),
    (["trace", "--interval", "nan"], "not a number of seconds"),
    (["trace", "--interval", "inf", "--json", "-"], "at most 2592000"),
    (["bench", "--suite", "seed-tables", "--json", "-", "--csv", "-"], "would share stdout"),
    (["trace", "--comm", "a-sixteen-bytes!"], "1 to 15 bytes"),
    (["top", "--comm", "a-sixteen-bytes!"], "1 to 15 bytes"),
    (["trace", "--comm", ""], "1 to 15 bytes"),
    (["trace", "--"], "nothing to run after --"),
    (["bench", "--size", "1,,2"], "comma-separated"),
    (["bench", "--size", "1000,"], "comma-separated"),
    (["trace", "--duration", "1", "--json", "/nonexistent/x.json"], "no directory /nonexistent"),
    (["doctor", "--json", "/nonexistent/x.json"], "no directory /nonexistent"),
    (["doctor", "--json", "/"], "it is a directory"),
    (["bench", "--count", "10", "--json", "/nonexistent/x.json"], "no directory /nonexistent"),
    (["bench", "--suite", "seed-tables", "--csv", "/nonexistent/x.csv"], "no directory /nonexistent"),
    (["bench", "--suite", "seed-tables", "--plot", "/nonexistent/x.png"], "no directory /nonexistent"),
    (["trace", "--duration", "1", "--json", "/sys/x.json"], "cannot write /sys/x.json: Permission denied"),
    (["trace", "--duration", "1", "--json", "/proc/x.json"], "cannot write /proc/x.json"),
])
def test_bad_input_is_refused_before_any_work(args, message):
    one_error_line(run(args), message)  # one line: no probe tier line, no progress, no traceback


def test_a_comm_of_15_bytes_is_taken():
    r = run(["trace", "--comm", "fifteen-bytes-x", "--duration", "0.1"])
    assert r.returncode == 0, r.stderr


# --- privileges first ----------------------------------------------------------------------------

def test_unprivileged_untraced_bench_refuses_before_the_first_cell():
    r = run(["bench", "--no-trace", "--count", "10"], prefix=UNPRIVILEGED)
    one_error_line(r, "the sink target needs root")
    assert "bench 1/" not in r.stderr


def test_unprivileged_untraced_bench_on_loopback_runs():
    r = run(["bench", "--no-trace", "--count", "10", "--mode", "copy", "--target", "loopback",
             "--json", "-"], prefix=UNPRIVILEGED)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout[r.stdout.index("{"):])["results"][0]["requests"] == 10


def test_unprivileged_export_refuses_before_binding():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run(["export", "--listen", f"127.0.0.1:{port}"], prefix=UNPRIVILEGED)
    one_error_line(r, "needs root")


# --- the exporter's listen address and auth file ------------------------------------------------

def test_basic_auth_file_open_to_others_is_refused(tmp_path: Path):
    users = tmp_path / "users"
    users.write_text("prometheus:secret\n")
    for mode in (0o644, 0o640, 0o602):
        users.chmod(mode)
        with pytest.raises(ZctraceError, match=f"open to group or others \\(mode 0{mode:o}\\)"):
            read_basic_auth(str(users))
        one_error_line(run(["export", "--listen", f"127.0.0.1:{free_port()}", "--basic-auth-file", str(users)]),
                       "chmod 600")
    users.chmod(0o600)
    assert read_basic_auth(str(users)) == {"prometheus": "secret"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def test_listen_on_every_address_is_said_in_one_line(procs):
    port = free_port()
    p = procs.popen(ZCTRACE + ["export", "--listen", f":{port}"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        lines = read_until(p, "serving ")
        assert lines[-1].startswith(f"zctrace: serving http://0.0.0.0:{port}/metrics")
        notes = [line for line in lines if f"--listen :{port} serves every address" in line]
        assert len(notes) == 1, lines
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=WAIT)
    assert p.returncode == 0


def test_export_stops_on_a_sigterm_taken_by_another_thread(procs):
    """A SIGTERM that a thread other than the main one takes (seen under strace) still stops the
    exporter promptly: Python runs the handler in the main thread, which must not sleep an hour."""
    import ctypes
    port = free_port()
    p = procs.popen(ZCTRACE + ["export", "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE, text=True)
    read_until(p, "serving ")
    threads = [int(t) for t in os.listdir(f"/proc/{p.pid}/task") if int(t) != p.pid]
    assert threads
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(234, p.pid, threads[0], signal.SIGTERM) == 0  # tgkill: to that thread only
    p.communicate(timeout=10)
    assert p.returncode == 0


def read_until(p: subprocess.Popen, text: str) -> list[str]:
    """Lines of `p`'s stderr up to the first holding `text` (bounded)."""
    lines = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no {text!r} on stderr: {''.join(lines)}")


# --- signals ---------------------------------------------------------------------------------

def signal_mask(pid: int, field: str) -> int:
    """A signal set of /proc/PID/status (SigCgt, ShdPnd, ...); 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1], 16) for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration):
        return 0


def handles_sigterm(pid: int) -> bool:
    """Has `pid` installed a SIGTERM handler yet?"""
    return bool(signal_mask(pid, "SigCgt") >> (signal.SIGTERM - 1) & 1)


def send_twice(p: subprocess.Popen, signum: int) -> None:
    """Two signals, the second once the first is taken (pending ones of a kind merge into one)."""
    p.send_signal(signum)
    wait_for(lambda: not (signal_mask(p.pid, "ShdPnd") >> (signum - 1) & 1), "the first signal taken")
    p.send_signal(signum)


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("args", [["trace"], ["top"], ["bench", "--count", "10"],
                                  ["trace", "--", "sleep", "30"]], ids=["trace", "top", "bench", "trace-cmd"])
def test_a_signal_while_probes_load_is_one_line(procs, args, signum):
    """SIGTERM/SIGINT right after start (the probes take seconds to load): one line, exit
    128+signal, no traceback (bcc's 'Failed to detach' included), nothing run."""
    p = procs.popen(ZCTRACE + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: handles_sigterm(p.pid), "the signal handlers")
    p.send_signal(signum)
    out, err = p.communicate(timeout=WAIT)
    assert p.returncode == 128 + signum, err
    assert err.splitlines()[-1] == (f"zctrace: stopped by {signum.name} before the probes were "
                                    "attached: nothing done"), err
    assert "Traceback" not in err and "Failed to detach" not in err and out == ""


CHILD = """
import signal, sys, time
def stop(signum, frame):
    open(sys.argv[1], "w").write(signal.Signals(signum).name)
    sys.exit(7)
signal.signal(signal.SIGTERM, stop if sys.argv[2] == "exit" else signal.SIG_IGN)
print("ready", flush=True)
time.sleep(120)
"""


def start_traced_child(procs, tmp_path: Path, on_sigterm: str) -> tuple[subprocess.Popen, Path, Path]:
    """`zctrace trace --json F -- python CHILD`, returned once the child runs."""
    marker, rep = tmp_path / "marker", tmp_path / "report.json"
    p = procs.popen(ZCTRACE + ["trace", "--json", str(rep), "--", sys.executable, "-c", CHILD,
                               str(marker), on_sigterm],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n", p.stderr.read()
    return p, marker, rep


def test_sigterm_is_forwarded_to_the_traced_command(procs, tmp_path):
    p, marker, rep = start_traced_child(procs, tmp_path, "exit")
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=WAIT)
    assert marker.read_text() == "SIGTERM"  # the command got it and ran its handler
    assert p.returncode == 7, err  # trace's status is the command's
    assert "TOTAL" in out and json.loads(rep.read_text())["tier"]


def test_a_second_signal_stops_waiting_for_the_command_and_still_reports(procs, tmp_path):
    p, _, rep = start_traced_child(procs, tmp_path, "ignore")
    child = next(int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _ppid(int(pid)) == p.pid)
    try:
        send_twice(p, signal.SIGTERM)
        p.wait(timeout=WAIT)
    finally:
        os.kill(child, signal.SIGKILL)  # it holds trace's stdout and stderr open
    out, err = p.communicate(timeout=WAIT)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert f"(pid {child}) has not exited after a second signal" in err
    assert "TOTAL" in out and json.loads(rep.read_text())["tier"]
    assert "Traceback" not in err


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])
    except OSError:
        return None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_two_signals_in_a_row_still_write_the_report(procs, tmp_path, signum):
    rep = tmp_path / "report.json"
    p = procs.popen(ZCTRACE + ["trace", "--json", str(rep)], stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True)
    read_until(p, "zctrace: tracing")
    send_twice(p, signum)
    out, err = p.communicate(timeout=WAIT)
    assert p.returncode == 0, err
    assert "TOTAL" in out and json.loads(rep.read_text())["tier"]
    assert "Traceback" not in err


def test_sigterm_during_bench_reports_the_finished_cells(procs, tmp_path):
    rep = tmp_path / "bench.json"
    p = procs.popen(ZCTRACE + ["bench", "--mode", "copy", "--target", "loopback", "--size",
                               "1000,2000,3000", "--duration", "5", "--json", str(rep)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    read_until(p, "zctrace: bench 1/3")
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=WAIT)
    assert p.returncode == 128 + signal.SIGTERM, err
    results = json.loads(rep.read_text())["results"]
    assert 1 <= len(results) < 3 and results[0]["size"] == 1000 and results[0]["match"] is True
    assert "loopback  udp    copy  1000" in out
    assert f"stopped by SIGTERM after {len(results)} of 3 cells" in err and "Traceback" not in err


# --- what a bench killed with SIGKILL leaves ------------------------------------------------------

def owned_by(pid: int) -> set[str]:
    """Namespaces and host devices named after `pid` (zc<pid><kind><seq>[h])."""
    with IPRoute() as ipr:
        links = {link.get("IFLA_IFNAME") for link in ipr.get_links()}
    return {n for n in links | set(netns.listnetns()) if n.startswith(f"zc{pid}") and n[len(f"zc{pid}")].isalpha()}


def long_bench(procs) -> subprocess.Popen:
    """An untraced bench on the sink (a netns, a veth pair, a qdisc), running until killed."""
    p = procs.popen(ZCTRACE + ["bench", "--no-trace", "--target", "sink", "--mode", "copy",
                               "--size", "1000", "--duration", "600"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: len(owned_by(p.pid)) == 2, "the bench's netns and veth")
    return p


@pytest.mark.parametrize("reclaimer", [["bench", "--no-trace", "--target", "sink", "--mode", "copy",
                                        "--size", "1000", "--count", "10"],
                                       ["doctor", "--json", "-"]], ids=["bench", "doctor"])
def test_sigkilled_bench_leftovers_are_removed_but_not_a_live_runs(procs, reclaimer):
    killed, alive = long_bench(procs), long_bench(procs)
    try:
        killed.kill()
        killed.wait(timeout=WAIT)
        left = owned_by(killed.pid)
        assert len(left) == 2  # what SIGKILL leaves: the namespace and the veth (with its qdisc)
        r = run(reclaimer)
        assert r.returncode == 0, r.stderr
        assert owned_by(killed.pid) == set()
        assert len(owned_by(alive.pid)) == 2  # a running bench's target is left alone
        if reclaimer[0] == "bench":
            assert f"removed what a killed run (pid {killed.pid}) left" in r.stderr
        else:
            doc = json.loads(r.stdout[r.stdout.index("{"):])
            (found,) = [f for f in doc["findings"] if f["check"] == "leftovers"]
            assert set(found["facts"]["removed"]) == left
            assert all(i["name"] not in left for i in doc["interfaces"])
    finally:
        alive.terminate()
        alive.wait(timeout=WAIT)
    assert owned_by(alive.pid) == set()  # SIGTERM: the bench removed its own


def test_the_terminals_ctrl_c_reaches_the_traced_command_once(tmp_path):
    """^C in a terminal goes to trace and CMD alike: trace does not send CMD a second one."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux not installed (scripts/setup.sh installs it)")
    ready, count, status = tmp_path / "ready", tmp_path / "count", tmp_path / "status"
    child = (f"import signal, time\nn = 0\ndef h(s, f):\n    global n\n    n += 1\n"
             f"    open({str(count)!r}, 'w').write(str(n))\nsignal.signal(signal.SIGINT, h)\n"
             f"open({str(ready)!r}, 'w').close()\nwhile not n: time.sleep(0.05)\ntime.sleep(1)\n"
             "raise SystemExit(5)\n")
    command = shlex.join(ZCTRACE + ["trace", "--", sys.executable, "-c", child]) + f" >/dev/null 2>&1; echo $? >{status}"
    tmux = ["tmux", "-S", str(tmp_path / "tmux.sock")]
    try:
        subprocess.run(tmux + ["new-session", "-d", "-s", "t", "-x", "200", "-y", "50", command], check=True)
        wait_for(ready.exists, "the traced command")
        subprocess.run(tmux + ["send-keys", "-t", "t", "C-c"], check=True)
        wait_for(lambda: status.exists() and status.read_text().strip(), "trace's exit")
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)
    assert status.read_text().strip() == "5"  # trace waited for the command and took its status
    assert count.read_text() == "1"
