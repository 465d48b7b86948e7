"""`zctrace bench --suite`: real workloads, real probes, tiny counts; no timed assertions."""

import csv
import dataclasses
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading

import pytest

from zctrace import cli
from zctrace.bench import cells
from zctrace.bench import output, progress, suites
from zctrace.btf import Btf
from zctrace.probes import Session
from zctrace.workload.senders import WorkloadSpec

ZCTRACE = [sys.executable, "-m", "zctrace.cli"]
COUNT = 200


def run(args, **kw):
    return subprocess.run(ZCTRACE + args, capture_output=True, text=True, timeout=300, **kw)


def test_seed_tables_end_to_end(tmp_path):
    """Reduced sizes, sink (UDP) and loopback (UDP, TCP), with the C reference beside each cell."""
    out = {k: tmp_path / f"seed.{k}" for k in ("json", "csv", "png")}
    r = run(["bench", "--suite", "seed-tables", "--size", "1000,4000", "--count", str(COUNT),
             "--target", "sink", "--target", "loopback", "--reference", "--json", str(out["json"]),
             "--csv", str(out["csv"]), "--plot", str(out["png"])])
    assert r.returncode == 0, r.stderr
    planned = 2 * len(suites.SEED_COLUMNS) * 3  # sizes x columns x (sink udp, loopback udp, tcp)
    assert f"bench {planned}/{planned}:" in r.stderr  # plain progress lines off a terminal
    for title in ("sink udp: requests/s", "loopback tcp: requests/s", "IO size", "zc fixed 8 lazy",
                  "W/REF CPU/REQ", "against the C reference", "workload: compiled C engine",
                  "io_uring zerocopy against io_uring send", "crossover:"):
        assert title in r.stdout

    doc = json.loads(out["json"].read_text())
    assert doc["suite"] == "seed-tables" and doc["tier"] and doc["date"] and doc["command"]
    assert len(doc["results"]) == planned
    for res in doc["results"]:
        assert {"mode", "proto", "size", "target", "requests", "requests_per_s", "bytes_per_s",
                "kernel", "traced", "column", "cpu_us_per_request", "speedup_vs_copy",
                "verdict"} <= res.keys()
        assert res["requests"] == COUNT and res["requests_per_s"] > 0
        assert res["reference"]["requests"] == COUNT
        assert res["ref_ratio"] > 0 and res["ref_cpu"] > 0 and res["engine"] == "c"
        assert res["lost"] == {}
    udp4k = {(r["target"], r["column"]): r for r in doc["results"] if r["size"] == 4000
             and r["proto"] == "udp"}
    assert udp4k[("sink", "msg_zc/32")]["verdict"] == "zerocopied"
    assert udp4k[("loopback", "msg_zc/32")]["verdict"] == "copied"  # local delivery
    assert udp4k[("sink", "copy")]["verdict"] == "-"
    lazy = udp4k[("sink", "zc-fixed/8-lazy")]
    assert lazy["kernel"]["zerocopied"] == lazy["reference"]["kernel"]["zerocopied"] == COUNT
    assert "*" in r.stdout  # loopback cells are marked as not really zero-copy

    rows = list(csv.DictReader(out["csv"].open()))
    assert len(rows) == planned and set(output.CSV_FIELDS) == set(rows[0])
    assert {row["column"] for row in rows} == {c.key for c in suites.SEED_COLUMNS}
    png = out["png"].read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


@pytest.mark.parametrize("suite", ["seed-tables", "overhead"])
def test_a_signal_keeps_the_cells_a_suite_finished(procs, tmp_path, suite):
    """SIGTERM in the middle of a suite: the tables and the JSON hold the cells finished before
    it, one line says so, exit 128+15 (the suite used to end with nothing written)."""
    out = tmp_path / "suite.json"
    extra = ["--repeat", "2"] if suite == "overhead" else []
    p = procs.popen(ZCTRACE + ["bench", "--suite", suite, "--size", "1000,4000", "--count", "20000",
                               "--json", str(out), *extra],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in p.stderr:  # plain progress lines off a terminal
        lines.append(line)
        if line.startswith("zctrace: bench 3/"):
            break
    p.send_signal(signal.SIGTERM)
    stdout, rest = p.communicate(timeout=300)
    err = "".join(lines) + rest
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    stopped = [line for line in err.splitlines() if line.startswith("zctrace: stopped by SIGTERM after ")]
    assert len(stopped) == 1, err
    done = int(stopped[0].split()[5])
    doc = json.loads(out.read_text())
    assert 3 <= done == len(doc["results"]) and doc["tier"], err
    assert all(r["requests"] > 0 for r in doc["results"])
    if suite == "overhead":  # ratios only for cells with both sides run
        assert all(o["untraced_requests_per_s"] > 0 for o in doc["overhead"]), doc["overhead"]


def test_overhead_suite_reports_ratios(tmp_path):
    path = tmp_path / "overhead.json"
    r = run(["bench", "--suite", "overhead", "--size", "1000", "--count", str(COUNT), "--repeat", "2",
             "--json", str(path), "--check"])
    assert r.returncode == 0, r.stderr
    assert "TRACED/UNTRACED" in r.stdout
    doc = json.loads(path.read_text())
    assert len(doc["overhead"]) == len(suites.OVERHEAD_COLUMNS)
    for o in doc["overhead"]:
        assert o["ratio"] > 0 and o["cpu_per_request_ratio"] > 0
        assert o["runs"] == 2 and o["exact"] is True
    traced = [res["traced_run"] for res in doc["results"]]
    n = len(suites.OVERHEAD_COLUMNS)
    assert traced.count(False) == 2 * n and traced.count(True) == 3 * n  # + the cost pass
    assert traced[:n] == [True] * n and traced[2 * n:3 * n] == [False] * n  # round 2 starts untraced
    # The ratios come from runs with BPF statistics off (they cost every program run two clock
    # reads); each program's cost from one more traced pass, the last, with them on.
    assert [res["cost_pass"] for res in doc["results"]] == [False] * 4 * n + [True] * n
    assert all((res["bpf"] is not None) == res["cost_pass"] for res in doc["results"])
    assert "BPF statistics off" in r.stdout
    assert r.stderr.count("zctrace: probe tier ") == 1, r.stderr  # later rounds open the probes quietly


def test_overhead_suite_reports_bpf_time_and_budgets(tmp_path):
    """Each traced cell carries every program's run time and count from bpf_stats; a budget no
    io_uring cell can meet (1 ns per request) fails the run, one line per cell over it."""
    path = tmp_path / "overhead.json"
    r = run(["bench", "--suite", "overhead", "--size", "1000", "--count", str(COUNT), "--repeat", "1",
             "--json", str(path), "--check", "--max-ns-per-request", "1"])
    assert r.returncode == 1, r.stderr
    assert "BPF NS/REQ" in r.stdout and "per program" in r.stdout and "workload: compiled C engine" in r.stdout
    over = [line for line in r.stderr.splitlines() if line.startswith("zctrace: over budget:")]
    assert {"zc/8", "zc/8-lazy", "zc-fixed/8", "zc-fixed/8-lazy"} <= {line.split()[7].rstrip(":") for line in over}
    doc = json.loads(path.read_text())
    assert doc["engine"] == "c"
    for o in doc["overhead"]:
        assert o["exact"] is True
        if o["column"].startswith("zc"):  # two CQEs per request (and others' events)
            assert o["programs"]["raw_tracepoint:io_uring_complete"]["runs_per_request"] >= 2
            assert o["bpf_ns_per_request"] > 1
    for res in doc["results"]:  # program costs from the cost pass only
        assert (res["bpf"] is None) == (not res["cost_pass"])


@pytest.fixture(scope="module")
def tracer():
    with Session.open("tracepoint", Btf.load(), pids=[os.getpid()]) as session:
        yield session


def test_check_compares_real_cells(tracer, capsys):
    """Real traced cells pass; the same cells with one request moved, or a lost event, fail."""
    done = cells.run([WorkloadSpec(mode=m, target="sink", size=1000, count=COUNT)
                      for m in ("msg_zerocopy", "uring_zc")], tracer)
    assert cells.check_status(done) == 0
    for cell in done:
        t = cell.tracer_counts
        moved = dataclasses.replace(t, zerocopied=t.zerocopied - 1, copied=1)
        assert cells.check_status([dataclasses.replace(cell, tracer_counts=moved)]) == 1
        assert "differ from the kernel's" in capsys.readouterr().err
        assert cells.check_status([dataclasses.replace(cell, lost={"stats_full": 1})]) == 1
        assert "lost events" in capsys.readouterr().err


def test_check_exit_status_through_the_cli(monkeypatch, capsys):
    """The suite's --check path, with the tracer's counts of real cells off by one request."""
    real = cells.traced_counts

    def off_by_one(snap, spec, tier="tracepoint"):
        counts = real(snap, spec, tier)
        if counts.zc_requests:
            counts.zerocopied -= 1
        return counts

    argv = ["bench", "--suite", "seed-tables", "--size", "1000", "--count", str(COUNT), "--check"]
    monkeypatch.setattr(cells, "traced_counts", off_by_one)
    assert cli.main(argv) == 1
    assert "differ from the kernel's" in capsys.readouterr().err


def test_remote_target_on_the_loopback_address():
    """ADDR:PORT sends to whatever listens there (here a UDP socket of ours on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(0.2)
        port = rx.getsockname()[1]
        stop = threading.Event()

        def drain():
            while not stop.is_set():
                try:
                    rx.recv(65536)
                except OSError:
                    pass

        t = threading.Thread(target=drain, daemon=True)
        t.start()
        try:
            r = run(["bench", "--target", f"127.0.0.1:{port}", "--mode", "copy", "--mode", "uring",
                     "--size", "1000", "--count", str(COUNT), "--no-trace", "--json", "-"])
        finally:
            stop.set()
            t.join()
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout[r.stdout.index("{"):])
    assert [(x["target"], x["requests"]) for x in doc["results"]] == [(f"127.0.0.1:{port}", COUNT)] * 2


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_plain_lines_otherwise():
    tty, plain = _Tty(), io.StringIO()
    for stream in (tty, plain):
        p = progress.Progress(4, stream)
        for i in range(4):
            p.step(f"cell {i}")
        p.close()
    assert "\r[" + "#" * progress.Progress.WIDTH + "] 4/4" in tty.getvalue()
    assert tty.getvalue().endswith("\n") and tty.getvalue().count("\n") == 1
    assert plain.getvalue().splitlines() == [f"zctrace: bench {i + 1}/4: cell {i}" for i in range(4)]


@pytest.mark.parametrize("args,message", [
    (["--suite", "nope"], "invalid choice"),
    (["--suite", "seed-tables", "--mode", "copy"], "drop --mode"),
    (["--csv", "x.csv"], "--csv needs --suite"),
    (["--suite", "overhead", "--plot", "x.png"], "--plot needs --suite seed-tables"),
    (["--suite", "overhead", "--reference"], "--reference needs --suite seed-tables"),
    (["--suite", "overhead", "--no-trace"], "drop --no-trace"),
    (["--suite", "overhead", "--min-ratio", "0"], "must be positive"),
    (["--suite", "seed-tables", "--size", "70000"], "too big for one UDP datagram"),
    (["--target", "nowhere"], "unknown target"),
    (["--target", "192.0.2.1:0"], "port must be between"),
    (["--target", "example:80"], "ADDR:PORT with an IP address"),
    (["--notif", "sometimes"], "invalid choice"),
    (["--batch", "2000", "--mode", "copy"], "batch must be between"),
    (["--repeat", "0"], "must be positive"),
    (["--target", "127.0.0.1:1", "--proto", "tcp", "--mode", "copy", "--no-trace"], "Connection refused"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    r = run(["bench", *args])
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr


def test_probe_floor_bpf_ns_measures_both_variants_with_statistics():
    """scripts/bench_probe_floor.py --bpf-ns: for each round a floor and a zctrace row per cell,
    the BPF ns and program runs of every io_uring request (two CQEs, each a run of
    io_uring_complete on the tracepoint tier), zctrace's counts exact and dearer than the floor."""
    from conftest import REPO
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_probe_floor.py"), "--bpf-ns",
                          "--rounds", "1", "--seconds", "0.3", "--cells", "zc/8-lazy 1000 B"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {r.split("|")[2].strip(): r.split("|") for r in out.stdout.splitlines() if r.startswith("| 1 |")}
    assert set(rows) == {"floor", "zctrace"}, out.stdout
    ns = {v: float(r[4].replace(",", "")) for v, r in rows.items()}
    for r in rows.values():  # (rx_evidence runs for whatever else this host receives meanwhile)
        assert re.search(r"raw_tracepoint:io_uring_complete [\d,]+ x 2\.00\b", r[6]), out.stdout
        assert 2.0 <= float(r[5]) < 2.2, out.stdout
    assert "(exact)" in rows["zctrace"][6], out.stdout
    assert 0 < ns["floor"] < ns["zctrace"], out.stdout
