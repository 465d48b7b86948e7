"""Installed like a user would: a wheel built from this checkout, installed into a fresh virtual
environment (system site packages, for Debian's bcc), run from outside the checkout.

The wheel must carry everything zctrace reads at run time (the probe sources, the C reference
sender); an editable checkout hides a missing file, so nothing here imports from the checkout.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_checkout


def _run(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{argv} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A venv with the wheel of this checkout's files (tracked and new, not ignored) installed."""
    tmp = tmp_path_factory.mktemp("install")
    src, dist, env = tmp / "src", tmp / "dist", tmp / "venv"
    copy_checkout(src)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
          str(src)], tmp)
    wheel, = dist.glob("zctrace-*.whl")
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env)], tmp)
    _run([sys.executable, "-m", "pip", "--python", str(env / "bin/python"), "install", "-q", "--no-index",
          "--no-deps", str(wheel)], tmp)
    return env


def test_wheel_is_what_runs(venv, tmp_path):
    """The venv's zctrace is the wheel's, with its probes and C sender as package data."""
    r = _run([str(venv / "bin/python"), "-c",
              "import zctrace.paths as p; print(p.__file__); print(p.PROBE_DIR); print(p.reference_source())"],
             tmp_path)
    site = str(venv / "lib")
    module, probes, reference = r.stdout.split()
    assert module.startswith(site) and probes.startswith(site) and reference.startswith(site)
    assert (Path(probes) / "manifest.toml").is_file() and (Path(probes) / "zctrace.h").is_file()


def test_the_wheel_holds_no_test_harness_or_developer_tool(venv):
    """What ships is the package: no VM harness, benchmark or test (issue 24)."""
    site = next((venv / "lib").glob("python3*/site-packages"))
    shipped = {p.relative_to(site).as_posix() for p in (site / "zctrace").rglob("*") if p.is_file()}
    assert "zctrace/workload/zc_ref_sender.c" in shipped and "zctrace/_probes/manifest.toml" in shipped
    for name in shipped:
        assert not any(part in name for part in ("vmtest", "bench_", "soak_", "test_", "conftest")), name
    assert not (site / "scripts").exists() and not (site / "tests").exists()


def test_doctor(venv, tmp_path):
    r = _run([str(venv / "bin/zctrace"), "doctor", "--json", "-"], tmp_path)
    assert "active tier" in r.stderr and json.loads(r.stdout)["active_tier"] == "tracepoint"


def test_trace_a_command(venv, tmp_path):
    report = tmp_path / "trace.json"
    _run([str(venv / "bin/zctrace"), "trace", "--json", str(report), "--", str(venv / "bin/python"), "-m",
          "zctrace.workload", "--mode", "msg_zerocopy", "--target", "loopback", "--count", "40"], tmp_path)
    totals = json.loads(report.read_text())["totals"]
    assert totals["zc_requests"] == 40 and totals["copied"] == 40  # loopback delivery copies


def test_bench(venv, tmp_path):
    report = tmp_path / "bench.json"
    _run([str(venv / "bin/zctrace"), "bench", "--mode", "msg_zerocopy", "--size", "1000", "--count", "200",
          "--check", "--json", str(report)], tmp_path)
    results = json.loads(report.read_text())["results"]
    assert results and all(r["match"] and r["traced"]["requests"] == 200 for r in results)


def test_netns_receiver_ships(venv, tmp_path):
    """The netns target's receiver, a program of its own (zctrace/workload/netns_receiver.py), runs
    from the wheel: a TCP bench cell into the namespace only completes if it accepts."""
    report = tmp_path / "netns.json"
    _run([str(venv / "bin/zctrace"), "bench", "--target", "netns", "--proto", "tcp", "--mode", "copy", "--size", "1000",
          "--count", "50", "--no-trace", "--json", str(report)], tmp_path)
    (result,) = json.loads(report.read_text())["results"]
    assert result["target"] == "netns" and result["requests"] == 50


def test_reference_sender_builds(venv, tmp_path):
    """`bench --reference` compiles the C sender shipped in the wheel."""
    env_cache = tmp_path / "cache"
    r = _run(["env", f"XDG_CACHE_HOME={env_cache}", str(venv / "bin/python"), "-c",
              "from zctrace.bench.reference import build_reference; print(build_reference())"], tmp_path)
    assert Path(r.stdout.strip()).is_file()
