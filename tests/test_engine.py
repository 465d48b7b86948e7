"""The compiled send engine: the kernel's verdicts per column, traced in-process, named in every
output, bad input in one line, and present in a wheel install without a compiler."""

import json
import os
import shutil
import subprocess
import sys
import threading
import venv
from pathlib import Path

import pytest

from zctrace.bench import cells
from zctrace.bench import suites
from zctrace.btf import Btf
from zctrace.probes import Session
from zctrace.workload import _engine
from zctrace.workload.senders import WorkloadSpec, run_workload
from zctrace.workload.targets import open_target

ROOT = Path(__file__).resolve().parent.parent
ZCTRACE = [sys.executable, "-m", "zctrace.cli"]
COUNT = 300
# every column of the suites: (mode, notify_batch, inflight, notif)
COLUMNS = sorted({(c.mode, c.notify_batch if c.mode == "msg_zerocopy" else 32,
                   c.inflight if c.mode.startswith("uring") else 8, c.notif)
                  for c in suites.SEED_COLUMNS + suites.OVERHEAD_COLUMNS})


@pytest.fixture(scope="module")
def tracer():
    with Session.open("tracepoint", Btf.load(), pids=[os.getpid()]) as session:
        yield session


@pytest.mark.parametrize("target,proto,verdict", [("sink", "udp", "zerocopied"),
                                                  ("loopback", "udp", "copied"),
                                                  ("loopback", "tcp", "copied")])
def test_every_column_reports_the_kernels_verdicts(tracer, target, proto, verdict):
    """Sink: every zerocopy request zerocopied; loopback: every one copied (local delivery); the
    tracer, watching this process, counts the same requests and verdicts."""
    specs = [WorkloadSpec(mode=m, proto=proto, size=4000, target=target, count=COUNT, notify_batch=nb,
                          inflight=inf, notif=notif, engine="c") for m, nb, inf, notif in COLUMNS]
    for spec, cell in zip(specs, cells.run(specs, tracer)):
        assert cell.engine == "c" and cell.requests == COUNT, spec
        if spec.mode in ("copy", "uring"):
            assert cell.kernel == {"zerocopied": 0, "copied": 0, "unknown": 0, "so_zerocopy": True}
        else:
            assert cell.kernel[verdict] == COUNT and cell.kernel["unknown"] == 0, (spec, cell.kernel)
        assert cell.matches is True and not cell.lost, (spec, cell.traced, cell.kernel)


def test_without_a_verdict_the_requests_are_unknown():
    """SEND_ZC without REPORT_USAGE and MSG_ZEROCOPY without SO_ZEROCOPY: no verdict, all unknown."""
    with open_target("sink", "udp") as ep:
        for spec in (WorkloadSpec(mode="uring_zc", count=COUNT, report_usage=False, engine="c"),
                     WorkloadSpec(mode="msg_zerocopy", count=COUNT, so_zerocopy=False, engine="c")):
            r = run_workload(spec, ep)
            assert (r.requests, r.kernel_zerocopied, r.kernel_copied, r.kernel_unknown) == (COUNT, 0, 0, COUNT)


def test_duration_runs_and_bytes_count():
    with open_target("loopback", "tcp") as ep:
        r = run_workload(WorkloadSpec(mode="uring", proto="tcp", target="loopback", size=1000,
                                      duration=0.2, engine="c"), ep)
    assert r.requests > 0 and r.bytes == 1000 * r.requests and 0.2 <= r.seconds < 1.0
    assert 0 < r.cpu_seconds <= r.seconds * 1.05


def test_the_sending_thread_has_a_file_table_of_its_own(monkeypatch):
    """The engine's loops run in a thread whose file descriptor table is its own: the kernel then
    takes no reference on the socket's file at each call, as for a single-threaded sender (with
    a shared table msg_zc/1 ran at 0.91-0.94 of the C reference). Seen from that thread, a file
    that a thread of the process's table opens once it runs is not in its table."""
    asked, done, opened = threading.Event(), threading.Event(), []

    def opener() -> None:  # started from the main thread: it shares the main thread's table
        asked.wait(30)
        opened.append(os.open("/dev/null", os.O_RDONLY))
        done.set()

    seen: list[bool] = []
    real = _engine.run

    def run(fd, *args, **kw):
        asked.set()
        done.wait(30)
        try:
            os.fstat(opened[0])
            seen.append(True)
        except OSError:
            seen.append(False)
        return real(fd, *args, **kw)

    other = threading.Thread(target=opener)
    other.start()
    monkeypatch.setattr(_engine, "run", run)
    try:
        with open_target("sink", "udp") as ep:
            run_workload(WorkloadSpec(mode="copy", target="sink", count=10, size=100, engine="c"), ep)
    finally:
        asked.set()
        other.join()
        for fd in opened:
            os.close(fd)
    assert seen == [False]


def test_socket_calls_bypass_glibcs_cancellation_wrappers():
    """glibc's send, sendmmsg, recvmsg and poll are cancellation points: in a multi-threaded
    process (the engine runs in a thread of zctrace's) each call switches asynchronous
    cancellation on and off, two atomic operations a single-threaded sender never pays (msg_zc/1,
    three calls a request, ran at 0.94 of the C reference with them). The engine calls them
    through syscall(2): it imports none of them."""
    out = subprocess.run(["nm", "-D", "--undefined-only", _engine.__file__], capture_output=True, text=True,
                         check=True).stdout
    imported = {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}
    assert "syscall" in imported
    assert not imported & {"send", "sendto", "sendmsg", "sendmmsg", "recv", "recvmsg", "poll", "ppoll"}, imported


def test_engine_module_rejects_bad_calls():
    with pytest.raises(ValueError, match="unknown mode"):
        _engine.run(0, "nope", 1000, count=1)
    with pytest.raises(ValueError, match="bad engine arguments"):
        _engine.run(0, "copy", 1000, count=1, duration=1.0)  # both a count and a duration
    with pytest.raises(OSError) as e:
        _engine.run(-1, "copy", 1000, count=1)  # not a socket
    assert e.value.errno == 9 and "send" in str(e.value)


@pytest.mark.parametrize("engine,title", [("c", "workload: compiled C engine"),
                                          ("python", "workload: Python engine")])
def test_engine_named_in_table_and_json(engine, title):
    r = subprocess.run(ZCTRACE + ["bench", "--engine", engine, "--target", "sink", "--mode", "uring_zc",
                                  "--size", "1000", "--count", str(COUNT), "--no-trace", "--json", "-"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"zctrace bench ({title};" in r.stderr  # the table: stdout holds the JSON alone
    doc = json.loads(r.stdout)
    assert doc["engine"] == engine and [x["engine"] for x in doc["results"]] == [engine]


def test_suite_csv_names_the_engine(tmp_path):
    r = subprocess.run(ZCTRACE + ["bench", "--suite", "seed-tables", "--engine", "python", "--size", "1000",
                                  "--count", "50", "--no-trace", "--csv", "-"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "workload: Python engine" in r.stderr  # the tables: stdout holds the CSV alone
    header, *rows = r.stdout.splitlines()
    col = header.split(",").index("engine")
    assert all(row.startswith("sink,") for row in rows)
    assert len(rows) == len(suites.SEED_COLUMNS) and {row.split(",")[col] for row in rows} == {"python"}


@pytest.mark.parametrize("setup,argv,message", [
    ("", ["--engine", "rust"], "invalid choice: 'rust'"),
    # an install without the extension: said in one line before anything runs
    ("sys.modules['zctrace.workload._engine'] = None", ["--count", "5"],
     "the compiled send engine is not built"),
    ("", ["--min-ratio", "0.9"], "--min-ratio needs --suite overhead"),
    ("", ["--suite", "seed-tables", "--max-ns-per-request", "100"],
     "--max-ns-per-request needs --suite overhead"),
])
def test_bad_input_is_one_line_and_exit_2(setup, argv, message):
    code = f"import sys\n{setup}\nfrom zctrace.cli import main\nsys.exit(main({['bench', *argv]!r}))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr


def test_wheel_install_has_the_engine_without_a_compiler(tmp_path):
    """Build the wheel, install it into a fresh environment, run the engine with no compiler on
    PATH and from outside the checkout (so the installed copy is the one imported)."""
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp_path / "dist").glob("zctrace-*.whl")
    env_dir = tmp_path / "env"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    py = env_dir / "bin" / "python"
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                        str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    bare = {"PATH": str(env_dir / "bin"), "HOME": str(tmp_path)}
    assert shutil.which("gcc", path=bare["PATH"]) is None and shutil.which("cc", path=bare["PATH"]) is None
    probe = ("import zctrace.workload._engine as e, zctrace.workload.senders as s; "
             "print(e.__file__); print(s.__file__)")
    r = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, env=bare, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert all(line.startswith(str(env_dir)) for line in r.stdout.split()), r.stdout
    r = subprocess.run([str(py), "-m", "zctrace.workload", "--engine", "c", "--target", "loopback",
                        "--mode", "uring_zc", "--size", "1000", "--count", "50"],
                       capture_output=True, text=True, env=bare, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["spec"]["engine"] == "c" and result["kernel_copied"] == 50
