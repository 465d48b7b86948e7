"""The built-in workload on this host's kernel: real targets, real sends, the kernel's verdicts."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyroute2 import IPRoute, netns

from zctrace.workload.senders import MODES, WorkloadSpec, run_workload, validate
from zctrace.workload.targets import TARGETS, UDP_ONLY, Endpoint, open_target
from zctrace.workload.uring import IORING_OP_SEND_ZC, supported_opcodes

ROOT = Path(__file__).resolve().parents[1]
_NAME = re.compile(r"zc(\d+)[sndb]\d+[hp]?")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="veth/netns targets need root")
needs_send_zc = pytest.mark.skipif(IORING_OP_SEND_ZC not in supported_opcodes(),
                                   reason="kernel lacks IORING_OP_SEND_ZC")


def leftovers(pid: int) -> list[str]:
    """Namespaces and links (with any qdisc on them) that targets of process ``pid`` made."""
    with IPRoute() as ipr:
        links = [m.get("IFLA_IFNAME") for m in ipr.link("dump")]
    names = netns.listnetns() + links
    return [n for n in names if (m := _NAME.fullmatch(n)) and int(m.group(1)) == pid]


@pytest.fixture(autouse=True)
def nothing_left_behind():
    yield
    assert leftovers(os.getpid()) == []


def run(mode: str, target: str, proto: str = "udp", size: int = 4000, count: int = 500,
        **kw: object):
    spec = WorkloadSpec(mode=mode, proto=proto, size=size, target=target, count=count, **kw)
    with open_target(target, proto) as endpoint:
        return run_workload(spec, endpoint)


# --- kernel verdicts ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", [1000, 4000, 60000])
def test_msg_zerocopy_udp_sink_is_zerocopy(size: int) -> None:
    r = run("msg_zerocopy", "sink", size=size)
    assert (r.requests, r.bytes) == (500, 500 * size)
    assert (r.kernel_zerocopied, r.kernel_copied, r.kernel_unknown) == (500, 0, 0)


@pytest.mark.parametrize("target,proto", [("loopback", "udp"), ("loopback", "tcp"),
                                          ("netns", "udp"), ("netns", "tcp")])
def test_msg_zerocopy_local_delivery_is_copied(target: str, proto: str) -> None:
    r = run("msg_zerocopy", target, proto, notify_batch=7)
    assert r.requests == 500
    assert (r.kernel_zerocopied, r.kernel_copied, r.kernel_unknown) == (0, 500, 0)


@pytest.mark.parametrize("mode", ["copy", "msg_zerocopy"])
def test_udp_segment_reaches_the_kernel(mode: str) -> None:
    """UDP GSO: 64 segments of 1000 B are one request; 600 segments of 100 B exceed the kernel's
    UDP_MAX_SEGMENTS (64, 128 since 6.10: EINVAL), which a plain 60000 B datagram on the sink
    (MTU 65535) would not."""
    r = run(mode, "sink", size=64000, udp_segment=1000)
    assert (r.requests, r.bytes) == (500, 500 * 64000)
    if mode == "msg_zerocopy":
        assert (r.kernel_zerocopied, r.kernel_copied, r.kernel_unknown) == (500, 0, 0)
    assert run(mode, "sink", size=60000).requests == 500
    with pytest.raises(OSError) as e:
        run(mode, "sink", size=60000, udp_segment=100)
    assert e.value.errno == errno.EINVAL


def test_msg_zerocopy_without_so_zerocopy_gets_no_notification() -> None:
    r = run("msg_zerocopy", "sink", so_zerocopy=False)
    assert r.requests == 500
    assert (r.kernel_zerocopied, r.kernel_copied, r.kernel_unknown) == (0, 0, 500)


@needs_send_zc
@pytest.mark.parametrize("mode", ["uring_zc", "uring_zc_fixed"])
@pytest.mark.parametrize("target,proto,expect", [
    ("sink", "udp", (500, 0, 0)), ("loopback", "udp", (0, 500, 0)),
    ("loopback", "tcp", (0, 500, 0)), ("netns", "tcp", (0, 500, 0))])
def test_uring_zc_report_usage(mode: str, target: str, proto: str,
                               expect: tuple[int, int, int]) -> None:
    r = run(mode, target, proto, inflight=16)
    assert (r.requests, r.bytes) == (500, 500 * 4000)
    assert (r.kernel_zerocopied, r.kernel_copied, r.kernel_unknown) == expect


@needs_send_zc
def test_uring_zc_without_report_usage_is_unknown() -> None:
    r = run("uring_zc", "sink", report_usage=False)
    assert r.requests == 500
    assert (r.kernel_zerocopied, r.kernel_copied, r.kernel_unknown) == (0, 0, 500)


@pytest.mark.parametrize("mode", ["copy", "uring"])
@pytest.mark.parametrize("target,proto", [("sink", "udp"), ("loopback", "tcp"),
                                          ("netns", "udp")])
def test_copy_modes_have_no_kernel_verdict(mode: str, target: str, proto: str) -> None:
    r = run(mode, target, proto, size=1500, count=300, inflight=4)
    assert (r.requests, r.bytes) == (300, 300 * 1500)
    assert (r.kernel_zerocopied, r.kernel_copied, r.kernel_unknown) == (0, 0, 0)


@pytest.mark.parametrize("mode", MODES)
def test_duration_mode_runs(mode: str) -> None:
    spec = WorkloadSpec(mode=mode, size=2000, target="sink", duration=0.05)
    with open_target("sink", "udp") as endpoint:
        r = run_workload(spec, endpoint)
    assert r.requests > 0 and r.bytes == r.requests * 2000
    assert r.seconds > 0 and r.cpu_seconds >= 0 and r.pid == os.getpid()
    assert r.kernel_zerocopied + r.kernel_copied + r.kernel_unknown in (0, r.requests)


# --- targets -----------------------------------------------------------------------------------

# The dummy target needs the dummy driver: the VM kernel has it, our host kernel does not.
TARGET_PARAMS = [pytest.param(t, marks=pytest.mark.vm) if t == "dummy" else t for t in TARGETS]


@pytest.mark.parametrize("name", TARGET_PARAMS)
def test_target_endpoint(name: str) -> None:
    with open_target(name, "udp") as ep:
        assert ep.name == name and ep.family == socket.AF_INET
        if name == "loopback":
            assert ep.addr[0] == "127.0.0.1" and ep.ifname == "lo"
        else:
            assert ep.addr[0].startswith("198.18.") and ep.ifname
            assert str(os.getpid()) in ep.ifname


def test_sink_has_drop_qdisc_and_every_packet_reaches_it() -> None:
    """No ARP on the sink (IFF_NOARP): each datagram goes straight to the drop qdisc."""
    with open_target("sink", "udp") as ep, IPRoute() as ipr, socket.socket(ep.family, socket.SOCK_DGRAM) as s:
        (index,) = ipr.link_lookup(ifname=ep.ifname)
        (link,) = ipr.link("get", index=index)
        assert link.get("IFLA_MTU") == 65535 and link["flags"] & 0x80  # IFF_NOARP
        qdiscs = [q for q in ipr.get_qdiscs(index=index) if q.get("TCA_KIND") == "pfifo"]
        assert qdiscs and qdiscs[0].get("TCA_OPTIONS")["limit"] == 0
        for _ in range(10):
            s.sendto(b"x", ep.addr)
        (pfifo,) = [q for q in json.loads(subprocess.run(["tc", "-s", "-j", "qdisc", "show", "dev", ep.ifname],
                                                        capture_output=True, text=True, check=True).stdout)
                    if q["kind"] == "pfifo"]
    assert pfifo["drops"] == 10


def test_parallel_targets_do_not_collide() -> None:
    with open_target("sink", "udp") as a, open_target("netns", "udp") as b:
        assert a.ifname != b.ifname and a.addr[0] != b.addr[0]
        assert run_workload(WorkloadSpec("msg_zerocopy", target="netns", count=50),
                            b).kernel_copied == 50
        assert run_workload(WorkloadSpec("msg_zerocopy", target="sink", count=50),
                            a).kernel_zerocopied == 50


@pytest.mark.parametrize("name", TARGET_PARAMS)
@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_cleanup_when_body_raises(name: str, exc: type[BaseException]) -> None:
    with pytest.raises(exc):
        with open_target(name, "udp" if name in UDP_ONLY else "tcp"):
            assert name == "loopback" or leftovers(os.getpid())
            raise exc()
    assert leftovers(os.getpid()) == []


def test_tcp_sink_is_refused() -> None:
    with pytest.raises(ValueError, match="tcp cannot use the sink"):
        with open_target("sink", "tcp"):
            pass


# --- validation --------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,match", [
    (dict(mode="splice"), "unknown mode"),
    (dict(mode="copy", proto="sctp"), "unknown protocol"),
    (dict(mode="copy", target="wan"), "unknown target"),
    (dict(mode="copy", size=0), "size must be a positive"),
    (dict(mode="copy", size=65508), "too big for one UDP datagram"),
    (dict(mode="copy", proto="tcp", target="sink"), "tcp cannot use the sink"),
    (dict(mode="copy", duration=None), "exactly one of duration and count"),
    (dict(mode="copy", duration=2.0, count=5), "exactly one of duration and count"),
    (dict(mode="copy", count=0), "count must be"),
    (dict(mode="uring", count=1, inflight=0), "inflight must be"),
    (dict(mode="msg_zerocopy", count=1, notify_batch=0), "notify_batch must be"),
    (dict(mode="uring_zc", count=1, so_zerocopy=False), "only applies to mode msg_zerocopy"),
    (dict(mode="msg_zerocopy", count=1, report_usage=False), "only applies to modes uring_zc"),
    (dict(mode="copy", count=1, proto="tcp", target="loopback", udp_segment=100), "udp_segment must be"),
    (dict(mode="copy", count=1, size=100, udp_segment=200), "udp_segment must be"),
])
def test_validate_rejects(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate(WorkloadSpec(**kw))


def test_count_replaces_default_duration() -> None:
    spec = WorkloadSpec(mode="copy", count=3)
    assert spec.duration is None
    validate(spec)


def test_endpoint_must_match_spec() -> None:
    with pytest.raises(ValueError, match="endpoint is 'loopback'"):
        run_workload(WorkloadSpec("copy", count=1, target="sink"),
                     Endpoint("loopback", ("127.0.0.1", 9), socket.AF_INET, "lo"))


# --- command line ------------------------------------------------------------------------------

def cli(*args: str, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zctrace.workload", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, **kw)


def test_cli_runs_one_workload(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    p = cli("--mode", "msg_zerocopy", "--target", "netns", "--proto", "tcp", "--size", "3000",
            "--count", "200", "--notify-batch", "10", "--json", str(out))
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    assert r["spec"]["mode"] == "msg_zerocopy" and r["spec"]["notify_batch"] == 10
    assert (r["requests"], r["bytes"], r["kernel_copied"]) == (200, 600000, 200)
    assert r["pid"] != os.getpid() and leftovers(r["pid"]) == []


def test_cli_json_to_stdout() -> None:
    p = cli("--mode", "msg_zerocopy", "--count", "100", "--no-so-zerocopy", "--json", "-")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["spec"]["so_zerocopy"] is False and r["kernel_unknown"] == 100


@pytest.mark.parametrize("args", [
    ["--mode", "bogus", "--count", "1"],
    ["--mode", "copy"],
    ["--mode", "copy", "--count", "1", "--duration", "1"],
    ["--mode", "copy", "--count", "x"],
    ["--mode", "copy", "--count", "1", "--size", "70000"],
    ["--mode", "copy", "--count", "1", "--proto", "tcp", "--target", "sink"],
    ["--mode", "uring_zc", "--count", "1", "--inflight", "-3"],
    ["--mode", "copy", "--count", "1", "--json", "/nonexistent/dir/r.json"],
])
def test_cli_bad_input_exits_2_with_one_line(args: list[str]) -> None:
    p = cli(*args)
    assert p.returncode == 2
    assert p.stdout == "" and len(p.stderr.splitlines()) == 1, p.stderr
    assert "Traceback" not in p.stderr


def test_sigterm_to_a_target_user_without_its_own_handler_cleans_up() -> None:
    """A program that opens a target and is stopped with SIGTERM (zctrace bench, a library
    user) leaves no namespace or veth behind."""
    child = ("import sys, time\n"
             "from zctrace.workload.targets import open_target\n"
             "with open_target('sink', 'udp'):\n"
             "    print('ready', flush=True)\n"
             "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", child], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        assert leftovers(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    assert leftovers(proc.pid) == []


def test_cli_sigterm_cleans_up() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "zctrace.workload", "--mode", "copy",
                             "--target", "netns", "--duration", "60"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not leftovers(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers(proc.pid), "the workload never set up its target"
        time.sleep(0.2)  # let it get into the send loop
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and err.strip().endswith("interrupted")
    assert leftovers(proc.pid) == []
