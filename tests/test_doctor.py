"""`zctrace doctor` on real interfaces and real limits: loopback, the sink veth, a veth with
scatter-gather off, and optmem/memlock estimates checked against the kernel refusing sends."""

import json
import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from itertools import count

import pytest
from pyroute2 import IPRoute

from zctrace.doctor import features, netdev, system
from zctrace.workload.senders import WorkloadSpec, run_workload
from zctrace.workload.targets import open_target

from conftest import HOST_AND_VM

ZCTRACE = [sys.executable, "-m", "zctrace.cli"]
TIMEOUT = 900  # a safety net only: the VM (TCG) runs the doctor's probe checks 20-50x slower
_seq = count()

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, veth, BPF)")


@pytest.fixture(autouse=True, params=HOST_AND_VM)
def where(request) -> str:
    """Every doctor test runs on the host kernel and again on the VM's full kernel (one test
    overrides it: test_veth_without_scatter_gather_says_no)."""
    return request.param


def run_doctor(*args: str, netns: str | None = None) -> tuple[dict, str]:
    """Run `zctrace doctor --json -` (inside `netns` if given); return (JSON, human output): the
    JSON is all stdout holds, the text is on stderr."""
    enter = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
    r = subprocess.run(enter + ZCTRACE + ["doctor", "--json", "-", *args],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def iface(doc: dict, name: str) -> dict:
    (found,) = [i for i in doc["interfaces"] if i["name"] == name]
    return found


def findings(doc: dict, check: str, subject: str | None = None) -> list[dict]:
    return [f for f in doc["findings"] if f["check"] == check and subject in (None, f["subject"])]


@contextmanager
def private_netns(tag: str):
    """A network namespace of our own, always removed (with every device in it)."""
    name = f"zcdoc{os.getpid()}{tag}{next(_seq)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
        assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True).stdout


def ip(netns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", netns, *args], check=True)


def in_netns(netns: str, code: str, *args: str, prefix: tuple[str, ...] = ()) -> str:
    """Run Python `code` with `args` inside `netns`, under the `prefix` command; its stdout."""
    r = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", *prefix, sys.executable, "-c",
                        code, *args], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_loopback_cannot_and_the_sink_can(where):
    with open_target("sink", "udp") as ep:
        doc, human = run_doctor()
        sink = iface(doc, ep.ifname)
    with IPRoute() as ipr:
        assert not ipr.link_lookup(ifname=ep.ifname), "the sink veth outlived its target"

    # Existing keys stay.
    assert {"kernel", "btf", "root", "tiers", "active_tier", "kernel_functions", "probes",
            "io_uring"} <= doc.keys()
    assert doc["io_uring"] == {"send_zc": True, "sendmsg_zc": True}
    # The active tier is the best one that loads; the VM's full kernel loads all three.
    usable = [t["tier"] for t in doc["tiers"] if t["ok"]]
    assert doc["active_tier"] == usable[0] and doc["probes_checked"] and doc["probes"]
    if where == "vm":
        assert usable == ["fentry", "kprobe", "tracepoint"]
        assert all(p["attached"] for p in doc["probes"]), doc["probes"]

    lo = iface(doc, "lo")
    assert (lo["kind"], lo["udp"], lo["tcp"]) == ("loopback", "no", "no")
    (f,) = findings(doc, "interface", "lo")
    assert f["status"] == "no" and f["reason"] == "local_delivery" and "local" in f["detail"]

    assert sink["kind"] == "veth" and sink["mtu"] == 65535
    assert sink["features"]["sg"] and (sink["features"]["hw_csum"] or sink["features"]["ip_csum"])
    assert sink["drops_all"] and sink["qdisc"] == "pfifo limit 0"
    assert (sink["udp"], sink["tcp"]) == ("yes", "no")
    (f,) = findings(doc, "interface", ep.ifname)
    assert f["status"] == "ok" and f["detail"].startswith("sink")
    assert ep.ifname in human and "UDP-ZC" in human and "findings:" in human


# Host only: a veth and its ethtool features are the same on every kernel here, and the VM's
# run (about 45 s a kernel, Python's imports under emulation) proved nothing the host's does not.
@pytest.mark.parametrize("where", [pytest.param("host", id="host")])
def test_veth_without_scatter_gather_says_no(where):
    with private_netns("sg") as ns:
        ip(ns, "link", "add", "name", "zdnosg", "type", "veth", "peer", "name", "zdpeer")
        ip(ns, "link", "set", "zdnosg", "up")
        ip(ns, "link", "set", "zdpeer", "up")
        ip(ns, "link", "set", "lo", "up")
        in_netns(ns, "from pyroute2.ethtool import Ethtool\n"
                     "e = Ethtool(); f = e.get_features('zdnosg')\n"
                     "f.features['tx-scatter-gather'].enable = False\n"
                     "e.set_features('zdnosg', f)")
        doc, human = run_doctor("--size", "4000", "--no-probes", netns=ns)
    nosg, peer = iface(doc, "zdnosg"), iface(doc, "zdpeer")

    assert nosg["features"]["sg"] is False and (nosg["udp"], nosg["tcp"]) == ("no", "no")
    (f,) = findings(doc, "interface", "zdnosg")
    assert f["status"] == "no" and f["reason"] == "no_sg"
    assert f["advice"] == "turn scatter-gather on: ethtool -K zdnosg sg on"
    assert "-> turn scatter-gather on" in human

    # The peer has SG: a veth depends on what its peer does; 4000 B is over its MTU of 1500.
    assert peer["features"]["sg"] and (peer["udp"], peer["tcp"]) == ("no", "depends")
    reasons = {f["reason"] for f in findings(doc, "interface", "zdpeer")}
    assert reasons == {"over_mtu", "local_delivery"}
    assert doc["network_namespace"] != os.readlink("/proc/self/ns/net")


def test_dummy_device_can(dummy):
    """The published benchmarks' sink: a dummy device frees every packet, zerocopy succeeds."""
    doc, human = run_doctor("--size", "4000", "--no-probes")
    # Its probes are not loaded (a minute of the VM's time): the tiers are still tried.
    assert (doc["probes_checked"], doc["probes"]) == (False, []) and doc["active_tier"]
    assert f"probes on the {doc['active_tier']} tier: not checked (--no-probes)" in human
    dev = iface(doc, dummy.ifname)
    assert dev["kind"] == "dummy" and (dev["udp"], dev["tcp"]) == ("yes", "no")
    (f,) = findings(doc, "interface", dummy.ifname)
    assert f["status"] == "ok" and "dummy" in f["detail"]


def test_packet_tap_is_found_and_named():
    with open_target("sink", "udp") as ep, \
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)) as tap:
        tap.bind((ep.ifname, 0))
        (sink,) = [i for i in netdev.interfaces() if i.name == ep.ifname]
        assert [(t.pid, t.comm) for t in sink.taps] == [(os.getpid(), open("/proc/self/comm").read().strip())]
        # The sink drops at enqueue, before the tap sees the packet: still zero-copy.
        assert netdev.assess(sink).udp == "yes"
        done = run_workload(WorkloadSpec(mode="msg_zerocopy", target="sink", size=1000, count=50), ep)
        assert done.kernel_zerocopied == 50
        # Without the drop, the tap copies every packet.
        subprocess.run(["tc", "qdisc", "replace", "dev", ep.ifname, "root", "pfifo", "limit", "1000"],
                       check=True)
        (sink,) = [i for i in netdev.interfaces() if i.name == ep.ifname]
        verdict = netdev.assess(sink)
    assert (verdict.udp, verdict.tcp) == ("no", "no")
    (problem,) = verdict.problems
    assert problem.reason == "packet_tap" and problem.advice.startswith(f"stop the packet capture on {ep.ifname} (pid {os.getpid()} ")


# Sends MSG_ZEROCOPY UDP datagrams of argv[1] bytes into a held queue until the kernel refuses
# one; prints how many it sent, the error, and the namespace's optmem_max.
_FILL = r"""
import errno, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 60, 1)  # SO_ZEROCOPY
try:
    s.setsockopt(socket.SOL_SOCKET, 32, 256 << 20)  # SO_SNDBUFFORCE: sndbuf must not be the limit
except PermissionError:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 << 20)
s.connect(("198.18.0.2", 9000))
buf, n = bytes(int(sys.argv[1])), 0
while n < 100000:
    try:
        s.send(buf, 0x4000000 | socket.MSG_DONTWAIT)  # MSG_ZEROCOPY
    except OSError as e:
        from zctrace.doctor.system import optmem_max  # the netns's (6.9+), else the host-wide value
        print(n, errno.errorcode[e.errno], optmem_max())
        break
    n += 1
"""


@contextmanager
def held_queue(size: int):
    """A netns whose veth queues what it sends in a tbf qdisc of 1 B/s with a bucket of one
    datagram of `size`: after the first, sends stay uncompleted until the qdisc is deleted."""
    with private_netns("hold") as ns:
        subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "sysctl", "-qw",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True)  # no IPv6 chatter
        ip(ns, "link", "add", "name", "zdhold", "type", "veth", "peer", "name", "zdsink")
        ip(ns, "link", "set", "zdhold", "mtu", "65535", "up")
        ip(ns, "link", "set", "zdsink", "mtu", "65535", "up")
        ip(ns, "addr", "add", "198.18.0.1/30", "dev", "zdhold")
        ip(ns, "neigh", "add", "198.18.0.2", "lladdr", "02:00:00:00:00:02", "nud", "permanent",
           "dev", "zdhold")
        tbf = ["tc", "-n", ns, "qdisc", "add", "dev", "zdhold", "root", "tbf", "rate", "8bit",
               "burst", str(size + 100), "limit", "1000000000"]
        r = subprocess.run(tbf, capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"no tbf qdisc here: {r.stderr.strip()}")
        try:
            yield ns
        finally:
            # Free the held packets first: they pin their sockets, the sockets the namespace,
            # so the namespace (and the pinned-page accounting) would otherwise never go.
            subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", "zdhold", "root"], check=True)


def fill(ns: str, size: int, prefix: tuple[str, ...] = (), python: str = sys.executable) -> tuple[int, int]:
    """(datagrams held in the queue when the kernel refused a send, optmem_max of the netns).
    One more may have been in flight at that moment: the one the bucket let through."""
    r = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", *prefix, python, "-c", _FILL,
                        str(size)], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    sent, err, optmem = r.stdout.split()
    assert err == "ENOBUFS"
    if optmem == "None":  # before 6.9, and the sender may not join the initial namespace: ours is it
        optmem = system.optmem_max()
    (stats,) = json.loads(subprocess.run(["tc", "-n", ns, "-s", "-j", "qdisc", "show", "dev",
                                          "zdhold"], capture_output=True, text=True, check=True).stdout)
    assert stats["qlen"] in (int(sent), int(sent) - 1)
    return stats["qlen"], int(optmem)


def test_a_value_of_the_initial_network_namespace_is_read_from_another():
    """Before 6.9 net.core.optmem_max is in the initial network namespace's /proc/sys only: doctor
    reads it there from a thread that joins it (on 6.1 doctor died of FileNotFoundError in any
    other namespace). Here the "initial" namespace is this test's, seen from a private one."""
    code = ("import os, sys; from zctrace.doctor import system; "
            "print(system.in_initial_netns(lambda: os.readlink('/proc/thread-self/ns/net'), sys.argv[1]), "
            "os.readlink('/proc/thread-self/ns/net'))")
    with private_netns("init") as ns:
        r = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c", code, f"/proc/{os.getpid()}/ns/net"],
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    joined, own = r.stdout.split()
    assert joined == os.readlink(f"/proc/{os.getpid()}/ns/net") != own


def test_optmem_estimate_matches_the_kernel():
    """The per-send optmem cost is measured (it is the notification skb's truesize, which
    differs between kernel builds: 832 B on the host's 6.18, more on Debian's 6.12)."""
    with held_queue(1000) as ns:
        held, optmem = fill(ns, 1000)
    f = system.optmem_finding()
    assert optmem // f.facts["bytes_per_send"] in (held, held + 1)
    assert f.facts["optmem_max"] == optmem
    assert f.status == ("ok" if f.facts["sends_in_flight"] >= system.WANT_INFLIGHT else "warn")


def test_memlock_estimate_matches_the_kernel_without_cap_ipc_lock():
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs Debian's /usr/bin/python3 for an unprivileged user")
    limit = ("prlimit", "--memlock=262144")
    no_cap = ("setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", "--")
    # A user of its own: pinned pages are counted per user, so nothing else may share it.
    uid = str(40000 + os.getpid() % 20000)
    fresh_user = ("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--")
    with held_queue(8000) as ns:
        finding = json.loads(in_netns(
            ns, "import json; from dataclasses import asdict; from zctrace.doctor.system import "
                "memlock_finding; print(json.dumps(asdict(memlock_finding(8000))))",
            prefix=limit + no_cap))
        held, _ = fill(ns, 8000, limit + fresh_user, python="/usr/bin/python3")
    assert finding["status"] == "warn" and finding["reason"] == "enobufs_memlock"
    facts = finding["facts"]
    assert facts["cap_ipc_lock"] is False and facts["soft"] == 262144 and facts["pages_per_send"] == 3
    assert facts["sends_in_flight"] == 262144 // (3 * 4096) in (held, held + 1)
    assert "CAP_IPC_LOCK" in finding["advice"]


def test_io_uring_and_socket_findings():
    by_check = {f.check: f for f in (system.io_uring_disabled_finding(), features.report_usage_finding(),
                                     features.zcrx_finding(), features.scm_zc_notification_finding())}
    if os.path.exists("/proc/sys/kernel/io_uring_disabled"):
        disabled = int(open("/proc/sys/kernel/io_uring_disabled").read())
        assert by_check["io_uring_disabled"].facts["value"] == disabled
    else:  # before 6.6 (Debian 12's 6.1)
        disabled = 0
        assert (by_check["io_uring_disabled"].status, by_check["io_uring_disabled"].value) == ("ok", "absent")
    if disabled == 0:
        usage = by_check["send_zc_report_usage"]
        assert usage.value == "supported" and usage.facts["notif_res"] & (1 << 31)
        assert by_check["zcrx"].value in ("present", "not built", "unsupported")
    # Mainline has no msg_control notifications: the cmsg is refused, never inferred from 78.
    scm = by_check["scm_zc_notification"]
    assert (scm.status, scm.value) == ("no", "unsupported") and "EINVAL" in scm.detail
    assert all(f.detail for f in by_check.values())


@pytest.mark.parametrize("size", ["0", "-5", "lots"])
def test_bad_size_is_one_line_and_exit_2(size):
    r = subprocess.run(ZCTRACE + ["doctor", "--size", size], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
