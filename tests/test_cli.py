"""The `zctrace` command as users run it: separate processes, real probes, real workloads."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import in_cgroup, scratch_cgroup

ZCTRACE = [sys.executable, "-m", "zctrace.cli"]
WORKLOAD = [sys.executable, "-m", "zctrace.workload"]


def run(args, **kw):
    return subprocess.run(ZCTRACE + args, capture_output=True, text=True, timeout=120, **kw)


def loaded_programs() -> set[int]:
    """IDs of the BPF programs loaded right now, anyone's."""
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool not installed")
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True).stdout
    return {prog["id"] for prog in json.loads(out)}


def programs_held_by(pid: int) -> set[int]:
    """IDs of the BPF programs `pid` holds an fd of (its own, not other runs' on this host)."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:  # closed meanwhile
            continue
        ids.update(int(line.split()[1]) for line in text.splitlines() if line.startswith("prog_id:"))
    return ids


@pytest.mark.parametrize("mode,target,verdict", [
    ("msg_zerocopy", "sink", "zerocopied"),
    ("msg_zerocopy", "loopback", "copied"),
    ("uring_zc", "sink", "zerocopied"),
])
def test_trace_command_matches_its_own_error_queue_counts(tmp_path, mode, target, verdict):
    out, rep = tmp_path / "workload.json", tmp_path / "report.json"
    r = run(["trace", "--json", str(rep), "--", *WORKLOAD, "--mode", mode, "--target", target,
             "--count", "300", "--size", "1000", "--json", str(out)])
    assert r.returncode == 0, r.stderr
    own = json.loads(out.read_text())
    report = json.loads(rep.read_text())
    assert report["tier"] in ("fentry", "kprobe", "tracepoint")
    (proc,) = report["processes"]
    assert proc["pid"] == own["pid"]
    assert proc["counts"]["zc_requests"] == own["requests"] == 300
    assert proc["counts"][verdict] == own[f"kernel_{verdict}"] == 300
    assert report["totals"]["zerocopied"] == own["kernel_zerocopied"]
    assert report["totals"]["copied"] == own["kernel_copied"]
    assert verdict in r.stdout and "TOTAL" in r.stdout


def test_trace_follows_children_of_the_command(tmp_path):
    rep = tmp_path / "report.json"
    script = ("import subprocess, sys; subprocess.run([sys.executable, '-m', 'zctrace.workload', "
              "'--mode', 'msg_zerocopy', '--target', 'loopback', '--count', '50', '--json', '/dev/null'], check=True)")
    r = run(["trace", "--json", str(rep), "--", sys.executable, "-c", script])
    assert r.returncode == 0, r.stderr
    assert json.loads(rep.read_text())["totals"]["copied"] == 50


def test_trace_pid_and_comm_filter(tmp_path):
    rep = tmp_path / "report.json"
    worker = subprocess.Popen(WORKLOAD + ["--mode", "msg_zerocopy", "--target", "loopback",
                                          "--duration", "120", "--json", "/dev/null"])
    try:
        time.sleep(1.0)
        r = run(["trace", "-p", str(worker.pid), "--duration", "2", "--json", str(rep)])
        assert r.returncode == 0, r.stderr
        report = json.loads(rep.read_text())
        assert [p["pid"] for p in report["processes"]] == [worker.pid]
        assert report["totals"]["zc_requests"] > 0
        r = run(["trace", "-p", str(worker.pid), "--comm", "no-such-comm", "--duration", "1", "--json", "-"])
        assert json.loads(r.stdout[r.stdout.index("{"):])["processes"] == []
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_trace_cgroup_filter_takes_the_subtree(tmp_path):
    """--cgroup PARENT reports a process in PARENT/child and leaves out one outside PARENT."""
    rep = tmp_path / "report.json"
    loop = ["--mode", "msg_zerocopy", "--target", "loopback", "--duration", "120", "--json", "/dev/null"]
    with scratch_cgroup(f"zctrace-test-{os.getpid()}") as parent:
        (parent / "child").mkdir()
        inside = subprocess.Popen(in_cgroup(parent / "child", WORKLOAD + loop))
        outside = subprocess.Popen(WORKLOAD + loop)
        try:
            time.sleep(1.0)
            r = run(["trace", "--cgroup", parent.name, "--duration", "2", "--json", str(rep)])
            assert r.returncode == 0, r.stderr
            report = json.loads(rep.read_text())
            assert [p["pid"] for p in report["processes"]] == [inside.pid]
            assert report["totals"]["zc_requests"] > 0
            r = run(["trace", "-p", str(outside.pid), "--duration", "2", "--json", "-"])
            assert json.loads(r.stdout[r.stdout.index("{"):])["totals"]["zc_requests"] > 0  # it was sending
        finally:
            for worker in (inside, outside):
                worker.terminate()
                worker.wait(timeout=30)


def test_trace_exit_status_is_the_commands():
    r = run(["trace", "--", sys.executable, "-c", "raise SystemExit(3)"])
    assert r.returncode == 3


@pytest.mark.parametrize("args,message", [
    (["trace", "-p", "0"], "not a PID"),
    (["trace", "-p", "abc"], "not a PID"),
    (["trace", "-p", "999999999"], "no process with PID"),
    (["trace", "--tier", "ebpf"], "invalid choice"),
    (["trace", "--duration", "-1"], "seconds must be positive"),
    (["trace", "--", "/no/such/command"], "command not found"),
    (["trace", "-p", "1", "--", "true"], "not both"),
    (["trace", "--cgroup", "no/such/cgroup"], "no cgroup 'no/such/cgroup'"),
    (["bench", "--mode", "teleport"], "invalid choice"),
    (["bench", "--size", "0"], "positive"),
    (["bench", "--size", "70000"], "too big for one UDP datagram"),
    (["bench", "--duration", "1", "--count", "5"], "not both"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    r = run(args)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr


def test_trace_and_top_check_a_pid_alike():
    """-p is checked once (argtypes.pid), when the command line is read: the same line for both."""
    errors = {command: run([command, "-p", "999999999"]) for command in ("trace", "top")}
    assert {r.returncode for r in errors.values()} == {2}
    assert errors["trace"].stderr == errors["top"].stderr == \
        "zctrace: error: argument -p/--pid: no process with PID 999999999\n"


def test_without_privileges_is_one_line():
    drop = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--"] if os.geteuid() == 0 else []
    r = subprocess.run(drop + ZCTRACE + ["trace", "--duration", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().endswith("to load BPF programs") and r.stderr.count("\n") == 1


def test_ctrl_c_stops_tracing_reports_and_unloads(procs):
    p = procs.popen(ZCTRACE + ["trace"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    line = ""
    while "tracing" not in line and time.monotonic() < deadline:
        line = p.stderr.readline()
    # Its own programs: other runs on a shared host load and unload theirs meanwhile.
    held = programs_held_by(p.pid)
    assert held and held <= loaded_programs()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "TOTAL" in out
    assert not held & loaded_programs()  # IDs are allocated cyclically: not reused so soon


def test_doctor_json(tmp_path):
    r = run(["doctor", "--json", str(tmp_path / "d.json")])
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "d.json").read_text())
    assert d["btf"] is True
    assert d["active_tier"] in ("fentry", "kprobe", "tracepoint")
    assert d["io_uring"] == {"send_zc": True, "sendmsg_zc": True}
    assert d["probes"] and all(p["attached"] for p in d["probes"])
    assert "active tier" in r.stdout


def test_bench_json_contract_and_check():
    r = run(["bench", "--mode", "msg_zerocopy", "--mode", "copy", "--size", "1000", "--count", "100",
             "--json", "-", "--check"])
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout[r.stdout.index("{"):])
    assert len(doc["results"]) == 4  # 2 modes x loopback, sink
    for res in doc["results"]:
        assert {"mode", "proto", "size", "target", "requests", "requests_per_s", "bytes_per_s",
                "kernel", "traced"} <= res.keys()
        assert res["requests"] == 100 and res["requests_per_s"] > 0
        assert res["match"] is True
    sink = next(x for x in doc["results"] if x["target"] == "sink" and x["mode"] == "msg_zerocopy")
    assert sink["kernel"]["zerocopied"] == sink["traced"]["zerocopied"] == 100


# --- output contracts: --json - is JSON alone, --interval's lines, --version, --help's examples ---

@pytest.mark.parametrize("args,text", [
    (["doctor", "--json", "-"], "active tier"),
    (["trace", "--duration", "1", "--json", "-"], "TOTAL"),
    (["bench", "--json", "-", "--mode", "msg_zerocopy", "--size", "1000", "--count", "100"], "zctrace bench"),
], ids=["doctor", "trace", "bench"])
def test_json_to_stdout_is_all_stdout_holds(args, text):
    """With --json -, stdout is one JSON document; the text goes to stderr."""
    r = run(args)
    assert r.returncode == 0, r.stderr
    assert isinstance(json.loads(r.stdout), dict)
    assert text in r.stderr


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("to_file", [False, True], ids=["stdout", "file"])
def test_trace_interval_writes_a_json_line_per_interval_then_the_report(tmp_path, to_file):
    out = tmp_path / "lines.json"
    r = run(["trace", "--interval", "1", "--duration", "3", "--json", str(out) if to_file else "-"])
    assert r.returncode == 0, r.stderr
    lines = json_lines(out.read_text() if to_file else r.stdout)
    assert len(lines) >= 3, lines
    *intervals, final = lines
    assert [line["type"] for line in intervals] == ["interval"] * len(intervals) and final["type"] == "report"
    assert [line["seq"] for line in intervals] == list(range(1, len(intervals) + 1))
    assert all(a["end"] == b["start"] for a, b in zip(intervals, intervals[1:]))  # no gaps, no overlaps
    assert intervals[-1]["cumulative"]["totals"] == final["totals"]
    assert ("TOTAL" in r.stdout) == to_file and ("TOTAL" in r.stderr) != to_file


def test_trace_interval_deltas_add_up_to_the_report_of_a_running_workload():
    """Four workloads of 500 MSG_ZEROCOPY sends each, half a second apart, traced with a JSON line
    every 0.5 s: the intervals' deltas (per total and per process) sum to the final report's
    counts, and the command's own stdout goes to stderr, leaving stdout to the JSON lines."""
    one = " ".join(WORKLOAD + ["--mode", "msg_zerocopy", "--target", "loopback", "--count", "500",
                               "--json", "/dev/null"])
    script = f"echo started; for i in 1 2 3 4; do {one} || exit 1; sleep 0.5; done"
    r = run(["trace", "--interval", "0.5", "--json", "-", "--", "sh", "-c", script])
    assert r.returncode == 0, r.stderr
    assert "started" in r.stderr
    *intervals, final = json_lines(r.stdout)
    assert final["type"] == "report" and len(intervals) >= 3
    deltas = [line["delta"] for line in intervals]
    assert sum(d["totals"]["zc_requests"] for d in deltas) == final["totals"]["zc_requests"] == 2000
    assert sum(d["totals"]["copied"] for d in deltas) == final["totals"]["copied"] == 2000
    assert sum(d["totals"]["copied_reasons"].get("local_delivery", 0) for d in deltas) == 2000
    assert sum(1 for d in deltas if d["totals"]["zc_requests"]) >= 2  # counted as it ran, not at the end
    for proc in final["processes"]:
        assert sum(p["counts"]["bytes"] for d in deltas for p in d["processes"]
                   if p["pid"] == proc["pid"]) == proc["counts"]["bytes"] == 500 * 4000
    assert len(final["processes"]) == 4


def test_trace_interval_without_json_is_a_line_on_stderr_each():
    r = run(["trace", "--interval", "0.5", "--", sys.executable, "-c", "import time; time.sleep(1.2)"])
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if " requests, " in line]
    assert len(lines) >= 2 and all(line.startswith("zctrace: ") and "0 requests, 0 B" in line for line in lines)
    assert "no zerocopy sends seen" in r.stdout and "{" not in r.stdout


def test_version():
    import tomllib
    from pathlib import Path
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    r = run(["--version"])
    assert (r.returncode, r.stdout, r.stderr) == (0, f"zctrace {pyproject['project']['version']}\n", "")


def help_examples(command: str) -> list[str]:
    """The example command lines of `zctrace COMMAND --help`."""
    r = run([command, "--help"])
    assert r.returncode == 0, r.stderr
    text = r.stdout[r.stdout.index("\nexamples:\n"):]
    return [line.strip() for line in text.splitlines() if line.startswith("  zctrace ")]


def test_every_help_example_parses():
    """Each subcommand's --help has a description and 2 or 3 examples, and each example's
    arguments are taken by the parser as they are (a `$(...)` stands for a live PID; what follows
    a pipe is another program's)."""
    import shlex

    from zctrace.cli import COMMANDS, build_parser
    from zctrace.errors import ZctraceError
    for command, (text, _, _) in COMMANDS.items():
        assert f"zctrace {command}: {text}" in run([command, "--help"]).stdout
        examples = help_examples(command)
        assert 2 <= len(examples) <= 3, examples
        for line in examples:
            argv = shlex.split(line)
            argv = argv[:argv.index("|")] if "|" in argv else argv
            assert argv[:2] == ["zctrace", command], line
            argv = [str(os.getpid()) if a.startswith("$(") else a for a in argv[1:]]
            try:
                args = build_parser().parse_args(argv)
            except (ZctraceError, SystemExit) as e:
                raise AssertionError(f"{line}: {e}") from None
            assert args.cmd == command
