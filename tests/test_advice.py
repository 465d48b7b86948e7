"""Advice on the host: a real (short) crossover measurement of the sink saved into a tmp state
dir, then real MSG_ZEROCOPY senders traced (issue 25's "done when"). No timed assertions: what
the measurement says on this noisy host decides what the advice must say."""

import json
import os
import subprocess
import sys

import pytest

ZCTRACE = [sys.executable, "-m", "zctrace.cli"]
WORKLOAD = [sys.executable, "-m", "zctrace.workload", "--mode", "msg_zerocopy", "--engine", "c"]


def run(args, state, prefix=(), **kw):
    env = {**os.environ, "ZCTRACE_STATE_DIR": str(state)}
    return subprocess.run([*prefix, *ZCTRACE, *args], capture_output=True, text=True, timeout=300, env=env, **kw)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """`bench --suite crossover --target sink --size 1000,65000`, small counts: (state dir, record)."""
    state = tmp_path_factory.mktemp("state")
    r = run(["bench", "--suite", "crossover", "--target", "sink", "--size", "1000,65000", "--count", "3000",
             "--repeat", "3"], state)
    assert r.returncode == 0, r.stderr
    assert "crossover (by CPU per request" in r.stdout and "MSG_ZEROCOPY vs copy" in r.stdout
    (saved,) = state.glob("crossover-*.json")
    assert saved.name == "crossover-sink-udp.json" and f"saved sink udp (path veth MTU 65535) to {saved}" in r.stderr
    rec = json.loads(saved.read_text())
    assert rec["kernel"] == os.uname().release and rec["engine"] == "c" and rec["date"] and rec["version"]
    assert rec["path"]["kind"] == "veth" and rec["path"]["mtu"] == 65535
    assert [row["size"] for row in rec["sizes"]] == [1000, 65000]
    for row in rec["sizes"]:  # every column at every size, untraced, the kernel's verdict kept
        assert set(row["columns"]) == {"copy", "msg_zc/32", "uring", "zc/8", "zc-fixed/8"}
        assert row["columns"]["msg_zc/32"]["verdict"] == "zerocopied" and row["columns"]["copy"]["verdict"] == "-"
        assert all(c["runs"] == 3 and c["cpu_us_per_request"] > 0 for c in row["columns"].values())
    assert set(rec["crossovers"]) == {"msg_zerocopy", "send_zc", "send_zc_fixed"}
    return state, rec


def traced(state, size, target="sink"):
    """The report of `trace --json -` around one MSG_ZEROCOPY sender; the sender's process."""
    stop = ["--duration", "1.5"] if target == "sink" else ["--count", "2000"]
    r = run(["trace", "--json", "-", "--", *WORKLOAD, "--target", target, "--size", str(size), *stop], state)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    (proc,) = [p for p in doc["processes"] if any(f["api"] == "msg_zerocopy" for f in p["flows"])]
    assert "advice (docs/advice.md):" in r.stderr if proc["advice"] else True
    return doc, proc


def by_code(proc):
    return {a["code"]: a for a in proc["advice"]}


def test_below_the_measured_crossover_at_1000_bytes(measured):
    state, rec = measured
    cross = rec["crossovers"]["msg_zerocopy"]["vs"]["copy"]["crossover"]
    doc, proc = traced(state, 1000)
    assert proc["counts"]["zerocopied"] > 0, proc
    advice = by_code(proc)
    if cross is None or cross > 1000:  # zerocopy behind copy at 1000 B here
        a = advice["below_crossover"]
        assert a["evidence"]["crossover"]["size"] == cross and a["evidence"]["sizes"] == "histogram"
        assert a["evidence"]["p50"] == 1024  # 1000 B requests, in the probes' [512, 1024) bucket
        assert a["evidence"]["measured"]["size"] == 1000 and a["evidence"]["measurement"]["target"] == "sink"
        assert a["evidence"]["path"]["kind"] == "veth"
        assert "below_crossover" in [t["code"] for t in doc["totals"]["advice"]]
    else:  # this noisy host measured zerocopy ahead from 1000 B
        assert "below_crossover" not in advice and "crossover_not_measured" not in advice, advice


def test_no_size_advice_at_65000_bytes(measured):
    state, rec = measured
    cross = rec["crossovers"]["msg_zerocopy"]["vs"]["copy"]["crossover"]
    _, proc = traced(state, 65000)
    advice = by_code(proc)
    assert "crossover_not_measured" not in advice
    if cross is None:  # behind copy even at 65000 B on this run: then it is below too
        assert advice["below_crossover"]["evidence"]["crossover"]["never_up_to"] == 65000
    else:
        assert "below_crossover" not in advice, advice


def test_loopback_sender_is_always_copied(measured):
    state, _ = measured
    _, proc = traced(state, 1000, target="loopback")
    a = by_code(proc)["always_copied"]
    assert a["evidence"]["reason"] == "local_delivery"
    assert a["evidence"]["cost"] is None  # only the sink was measured: it says so and names the command
    assert a["evidence"]["command"] == "zctrace bench --suite crossover --target loopback --proto udp"


def test_without_a_saved_crossover_the_advice_names_the_command(tmp_path):
    _, proc = traced(tmp_path, 1000)
    a = by_code(proc)["crossover_not_measured"]
    assert "below_crossover" not in by_code(proc)
    assert a["evidence"]["command"] == "zctrace bench --suite crossover --target sink --proto udp"
    assert "zctrace bench --suite crossover --target sink" in a["text"]


def test_a_column_the_target_cannot_run_is_skipped_with_the_reason(tmp_path):
    """No CAP_IPC_LOCK and RLIMIT_MEMLOCK 0: MSG_ZEROCOPY pins pages against it (ENOBUFS) and io_uring
    rings cannot be set up (ENOMEM): those columns are skipped, each with its reason; copy runs."""
    r = run(["bench", "--suite", "crossover", "--target", "sink", "--size", "1000", "--count", "500",
             "--repeat", "1", "--json", str(tmp_path / "x.json")], tmp_path,
            prefix=("capsh", "--drop=cap_ipc_lock", "--", "-c", 'ulimit -l 0 && exec "$@"', "zctrace"))
    assert r.returncode == 0, r.stderr
    for col in ("msg_zc/32", "uring", "zc/8", "zc-fixed/8"):
        assert f"note: sink udp: column {col} skipped: OSError:" in r.stdout, r.stdout
    rec = json.loads((tmp_path / "crossover-sink-udp.json").read_text())
    assert set(rec["skipped"]) == {"msg_zc/32", "uring", "zc/8", "zc-fixed/8"}
    assert list(rec["sizes"][0]["columns"]) == ["copy"] and rec["crossovers"] == {}


def test_an_unwritable_state_dir_is_one_line_and_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = run(["bench", "--suite", "crossover", "--size", "1000", "--count", "10"], blocker / "state")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "state directory" in r.stderr, r.stderr
    assert r.stdout == ""
