"""`zctrace trace --cost`: the probes' own cost from the kernel's real run statistics, switched on
for the session only, per request and against the traced command's CPU time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ZCTRACE = [sys.executable, "-m", "zctrace.cli"]
REPO = Path(__file__).resolve().parent.parent


def trace(tmp_path: Path, *args: str, count: int = 5000) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "trace.json"
    r = subprocess.run(ZCTRACE + ["trace", *args, "--json", str(out), "--", sys.executable, "-m", "zctrace.workload",
                                  "--mode", "uring_zc", "--target", "sink", "--count", str(count), "--engine", "c"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return r, json.loads(out.read_text())


def test_cost_per_request_and_share_of_the_commands_cpu(tmp_path: Path):
    r, doc = trace(tmp_path, "--cost")
    c = doc["cost"]
    assert c["how"] == "--cost" and c["requests"] == doc["totals"]["zc_requests"] == 5000
    ring = [p for p in c["programs"] if p["program"].endswith("io_uring_complete")]
    assert ring and ring[0]["runs"] >= 2 * 5000  # a send CQE and a notification CQE per request
    assert 0 < c["ns_per_request"] < 100_000 and c["runs_per_request"] >= 2
    assert c["cpu_seconds"] > 0 and 0 < c["cpu_share"] < 1
    assert "tracer cost: " in r.stdout and "of the traced command's" in r.stdout


def test_without_cost_one_line_says_how_to_measure(tmp_path: Path):
    r, doc = trace(tmp_path, count=100)
    assert doc["cost"] is None
    assert [line for line in r.stdout.splitlines() if line.startswith("tracer cost:")] == [
        "tracer cost: not measured (zctrace trace --cost measures it; BPF statistics add about 28 ns to every "
        "program run while on)"]
