"""`zctrace export` against a real Prometheus: real probes, real workloads, real scrapes.

Two exporters run for the module: A (HTTPS + basic auth, --bpf-stats, root) and B (plain HTTP,
--top-comms 1, run as the systemd unit runs it: an unprivileged user with the unit's capabilities). Debian's `prometheus` scrapes both every
second and evaluates the project's rules, while `python3 -m zctrace.workload` runs as separate
processes, each under its own command name (a symlink to the interpreter), so the counters can be
checked per process against the workloads' own kernel verdicts even while other tests run.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from conftest import in_cgroup, scratch_cgroup
from test_receive import receive_from_a_zerocopy_sender
from zctrace import snapshot
from zctrace.btf import Btf
from zctrace.exporter.collector import ExportOptions, ZctraceCollector
from zctrace.reasons import late_copy_caller
from zctrace.exporter.fold import OTHER, OTHER_OWNER, Folded, Folder, Owner
from zctrace.exporter.server import MetricsServer
from zctrace.probes import Session
from zctrace.snapshot import StatsRow
from zctrace.workload.targets import open_target
from zctrace.workload.uring import Ring

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "dashboards" / "zctrace-rules.yml"
DASHBOARD = REPO / "dashboards" / "zctrace.json"
UNIT = REPO / "exporters" / "zctrace-exporter.service"
SCRAPE_EXAMPLE = REPO / "exporters" / "prometheus.yml"
ZCTRACE = [sys.executable, "-m", "zctrace.cli"]
TAG = secrets.token_hex(3)
USER, PASSWORD = "prom", secrets.token_hex(8)
FAMILIES = {  # name -> (type, labels) of what a tracepoint-tier exporter serves
    "zctrace_zerocopy_requests": ("counter", {"verdict", "api", "proto", "comm", "cgroup", "container_id", "pod_uid"}),
    "zctrace_zerocopy_not_attempted": ("counter", {"reason", "api", "proto", "comm", "cgroup", "container_id", "pod_uid"}),
    "zctrace_zerocopy_bytes": ("counter", {"api", "proto", "comm", "cgroup", "container_id", "pod_uid"}),
    "zctrace_zerocopy_notifications": ("counter", {"api", "comm", "cgroup", "container_id", "pod_uid"}),
    "zctrace_copy_fallbacks": ("counter", {"reason", "api", "proto", "comm", "cgroup", "container_id", "pod_uid"}),
    "zctrace_zerocopy_undecided_requests": ("gauge", {"api", "proto", "comm", "cgroup", "container_id", "pod_uid"}),
    "zctrace_zerocopy_pinned_bytes": ("gauge", {"api", "proto", "comm", "cgroup", "container_id", "pod_uid"}),
    "zctrace_advice": ("gauge", {"code", "comm", "cgroup", "container_id", "pod_uid"}),
    "zctrace_io_uring_unreaped_cqes": ("gauge", {"comm", "cgroup", "container_id", "pod_uid"}),
    "zctrace_io_uring_overflowed_cqes": ("gauge", {"comm", "cgroup", "container_id", "pod_uid"}),
    "zctrace_tcp_zerocopy_receive_calls": ("counter", {"result", "comm", "cgroup", "container_id", "pod_uid"}),
    "zctrace_tcp_zerocopy_receive_bytes": ("counter", {"how", "comm", "cgroup", "container_id", "pod_uid"}),
    "zctrace_notification_latency_seconds": ("histogram", {"api", "le"}),
    "zctrace_lost_events": ("counter", {"cause"}),
    "zctrace_lost_requests": ("counter", {"cause"}),
    "zctrace_lost_bytes": ("counter", {"cause"}),
    "zctrace_retired_processes": ("counter", set()),
    "zctrace_bpf_program_run_seconds": ("counter", {"probe", "target"}),
    "zctrace_bpf_program_runs": ("counter", {"probe", "target"}),
    "zctrace_bpf_program_recursion_misses": ("counter", {"probe", "target"}),
    "zctrace_bpf_stats_enabled": ("gauge", set()),
    "zctrace_bpf_map_entries": ("gauge", {"map"}),
    "zctrace_bpf_map_max_entries": ("gauge", {"map"}),
    "zctrace_probe_up": ("gauge", {"probe", "target", "tier"}),
    "zctrace_build_info": ("gauge", {"version", "tier", "kernel"}),
    "zctrace_http_client_errors": ("counter", {"kind"}),
    "zctrace_scrape_errors": ("counter", set()),
    "zctrace_scrape_duration_seconds": ("gauge", set()),
}
# Families only the fentry/kprobe tiers have data for (skb_copy_ubufs and friends).
KERNEL_SIDE = ("zctrace_late_copies", "zctrace_late_copy_bytes", "zctrace_kernel_events",
               "zctrace_kernel_event_bytes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, auth: tuple[str, str] | None = None, ctx: ssl.SSLContext | None = None,
             timeout: float = 10) -> tuple[int, str, str]:
    """(status, content type, body) of a GET."""
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


class Exporter:
    """A `zctrace export` process."""

    def __init__(self, tmp: Path, name: str, args: list[str], prefix: list[str] | None = None,
                 scheme: str = "http", auth: tuple[str, str] | None = None,
                 ctx: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}/metrics"
        self.auth, self.ctx = auth, ctx
        self.log = tmp / f"{name}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen((prefix or []) + ZCTRACE + ["export", "--listen", f"127.0.0.1:{self.port}"]
                                         + args, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if http_get(self.url, self.auth, self.ctx, timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"exporter not ready: {self.log.read_text()}")

    def metrics(self) -> dict:
        status, _, body = http_get(self.url, self.auth, self.ctx)
        assert status == 200
        return families(body)

    def prog_ids(self) -> set[int]:
        ids = set()
        for fd in os.listdir(f"/proc/{self.proc.pid}/fdinfo"):
            try:
                text = Path(f"/proc/{self.proc.pid}/fdinfo/{fd}").read_text()
            except OSError:
                continue
            m = re.search(r"^prog_id:\s+(\d+)", text, re.M)
            if m:
                ids.add(int(m.group(1)))
        return ids

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Prometheus:
    """Debian's prometheus on a free loopback port with a temporary data directory."""

    def __init__(self, tmp: Path, config: dict) -> None:
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        (tmp / "prometheus.yml").write_text(json.dumps(config))  # YAML is a superset of JSON
        self.log = tmp / "prometheus.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if http_get(f"http://127.0.0.1:{self.port}/-/ready", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready: {self.log.read_text()}")

    def get(self, path: str, **params: str) -> dict:
        status, _, body = http_get(f"{self.api}/{path}?{urllib.parse.urlencode(params)}")
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", (params, body)
        return doc["data"]

    def query(self, expr: str) -> list[dict]:
        return self.get("query", query=expr)["result"]

    def wait_for_scrapes_after(self, t: float, timeout: float = 30) -> None:
        """Until every target was scraped (successfully) at least once after time `t`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # timestamp() of a bare selector is the scrape's start; of `up == 1` it would be
            # the query's own time (an operator's result has no sample time).
            up = {s["metric"]["job"]: s["value"][1] for s in self.query("up")}
            last = {s["metric"]["job"]: float(s["value"][1]) for s in self.query("timestamp(up)")}
            if len(last) >= 2 and all(up.get(job) == "1" and at > t for job, at in last.items()):
                return
            time.sleep(0.2)
        raise AssertionError(f"no scrape of every target after {t} within {timeout} s")

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def unit_setting(name: str) -> str | None:
    """The value of `name=` in the shipped systemd unit's [Service] (one line, or None)."""
    lines = [l.split("=", 1)[1] for l in UNIT.read_text().splitlines() if l.startswith(f"{name}=")]
    assert len(lines) <= 1, (name, lines)
    return lines[0] if lines else None


def unit_capabilities() -> list[str]:
    """CapabilityBoundingSet of the shipped systemd unit, as setpriv names them."""
    return [c.removeprefix("CAP_").lower() for c in unit_setting("CapabilityBoundingSet").split()]


def unit_prefix(cache: Path) -> list[str]:
    """setpriv (and env) running a command as the unit runs ExecStart: its user (DynamicUser=:
    an unprivileged uid owning no file, here nobody), its bounding set and ambient capabilities,
    its cache directory (`cache`, owned by that user) as XDG_CACHE_HOME."""
    caps = ",".join(["-all"] + [f"+{c}" for c in unit_capabilities()])
    ambient = unit_setting("AmbientCapabilities")
    assert ambient is None or ambient == unit_setting("CapabilityBoundingSet")
    user = "nobody" if unit_setting("DynamicUser") == "yes" else (unit_setting("User") or "root")
    prefix = ["setpriv", f"--bounding-set={caps}"]
    if user != "root":
        cache.mkdir(exist_ok=True)
        shutil.chown(cache, user)
        # Ambient (and inheritable) capabilities only from the bounding set this test runs
        # under (this host's root has no CAP_SYS_RESOURCE to give).
        from zctrace.exporter.privileges import NAMES
        bounding = int(re.search(r"^CapBnd:\s*(\w+)", Path("/proc/self/status").read_text(), re.M)[1], 16)
        held = ",".join(["-all"] + [f"+{c}" for c in unit_capabilities()
                                    if bounding >> {v: k for k, v in NAMES.items()}[f"cap_{c}"] & 1])
        prefix += [f"--reuid={user}", f"--regid={user if user != 'nobody' else 'nogroup'}", "--init-groups",
                   f"--inh-caps={held}", f"--ambient-caps={held}"]
    return prefix + ["--", "env", f"XDG_CACHE_HOME={cache}"]


def comm_python(tmp: Path, comm: str) -> str:
    """A symlink to this interpreter named `comm`: processes started through it have that comm."""
    path = tmp / "bin" / comm
    path.parent.mkdir(exist_ok=True)
    path.symlink_to(os.path.realpath(sys.executable))
    return str(path)


# The module's exporters, Prometheus and workloads ---------------------------------------------

@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("exporter")


@pytest.fixture(scope="module")
def tls(tmp: Path) -> dict:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    users = tmp / "users"
    users.write_text(f"# zctrace exporter users\n{USER}:{PASSWORD}\n")
    users.chmod(0o600)
    password = tmp / "password"
    password.write_text(PASSWORD)
    ctx = ssl.create_default_context(cafile=str(cert))
    return {"cert": cert, "key": key, "users": users, "password": password, "ctx": ctx}


@pytest.fixture(scope="module")
def cgroup() -> Path:
    """The cgroup of the module's workloads (they run in its child `work`): the top-1 exporter
    counts only this subtree, so the host's other zerocopy senders cannot change its top."""
    with scratch_cgroup(f"zctrace-test-{TAG}") as path:
        (path / "work").mkdir()
        yield path


@pytest.fixture(scope="module")
def exporters(tmp: Path, tls: dict, cgroup: Path):
    a = Exporter(tmp, "a", ["--top-comms", "50", "--bpf-stats", "--tls-cert", str(tls["cert"]),
                            "--tls-key", str(tls["key"]), "--basic-auth-file", str(tls["users"])],
                 scheme="https", auth=(USER, PASSWORD), ctx=tls["ctx"])
    b = Exporter(tmp, "b", ["--top-comms", "1", "--cgroup", cgroup.name], prefix=unit_prefix(tmp / "cache-b"))
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.kill()
        b.kill()


@pytest.fixture(scope="module")
def prom(tmp: Path, tls: dict, exporters):
    a, b = exporters
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "zctrace", "scheme": "https", "static_configs": [{"targets": [f"127.0.0.1:{a.port}"]}],
             "tls_config": {"ca_file": str(tls["cert"])},
             "basic_auth": {"username": USER, "password_file": str(tls["password"])}},
            {"job_name": "zctrace_top1", "static_configs": [{"targets": [f"127.0.0.1:{b.port}"]}]},
        ],
    }
    p = Prometheus(tmp, config)
    try:
        yield p
    finally:
        p.stop()


def start_workload(python: str, *args: str, cgroup: Path | None = None) -> subprocess.Popen:
    argv = [python, "-m", "zctrace.workload", *args]
    return subprocess.Popen(in_cgroup(cgroup, argv) if cgroup else argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)  # a bound: python starts slowly in the TCG VM
    assert proc.returncode == 0, err
    return json.loads(out)


def run_workload(python: str, *args: str, cgroup: Path | None = None) -> dict:
    return finish(start_workload(python, *args, cgroup=cgroup))


@pytest.fixture(scope="module")
def workloads(tmp: Path, prom: Prometheus, cgroup: Path) -> dict[str, list[dict]]:
    """MSG_ZEROCOPY runs per comm, ordered so that the top process by bytes changes: D (480 kB),
    E (600 kB), B (800 kB), A (1.2 MB), E again (2.2 MB); C (not attempted, 0 bytes) never is.
    They run in the cgroup's `work`; F (2.4 MB, the biggest) runs outside it.
    (io_uring is checked on a filtered session below: the probes key rings by address, and a
    ring address reused after another process's ring, also another developer's, is attributed
    to that process.)"""
    comm = {x: f"zc{x}{TAG}" for x in "ABCDEF"}
    py = {x: comm_python(tmp, c) for x, c in comm.items()}
    done: dict[str, list[dict]] = {comm[x]: [] for x in comm}
    for x, args in (("F", ["--target", "sink", "--count", "600"]),
                    ("D", ["--target", "sink", "--count", "120"]),
                    ("E", ["--target", "loopback", "--count", "150"]),
                    ("C", ["--target", "sink", "--no-so-zerocopy", "--count", "150"]),
                    ("B", ["--target", "loopback", "--count", "200"]),
                    ("A", ["--target", "sink", "--count", "300"]),
                    ("E", ["--target", "sink", "--count", "400"])):
        done[comm[x]].append(run_workload(py[x], "--mode", "msg_zerocopy", "--size", "4000", *args,
                                          cgroup=None if x == "F" else cgroup / "work"))
        prom.wait_for_scrapes_after(time.time())  # each step is seen by a scrape of its own
    return done


def expected(runs: list[dict]) -> dict[str, int]:
    """{verdict: requests} the exporter must show for one comm's MSG_ZEROCOPY runs."""
    want = {"zerocopied": 0, "copied": 0, "not_attempted": 0}
    for r in runs:
        if not r["spec"]["so_zerocopy"]:
            want["not_attempted"] += r["requests"]
        else:
            assert r["kernel_unknown"] == 0  # every notification arrived
            want["zerocopied"] += r["kernel_zerocopied"]
            want["copied"] += r["kernel_copied"]
    return {k: v for k, v in want.items() if v}


def wait_for(check, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# Through Prometheus ------------------------------------------------------------------------------

def test_counters_match_the_workloads_own_kernel_verdicts(prom: Prometheus, workloads):
    for comm, runs in workloads.items():
        want = expected(runs)

        def check() -> None:
            got = {s["metric"]["verdict"]: int(float(s["value"][1])) for s in prom.query(
                f'zctrace_zerocopy_requests_total{{job="zctrace",comm="{comm}"}} > 0')}
            assert got == want, (comm, runs)
            nbytes = prom.value(f'sum(zctrace_zerocopy_bytes_total{{job="zctrace",comm="{comm}"}})')
            assert nbytes == sum(r["bytes"] for r in runs if r["spec"]["so_zerocopy"]), (comm, runs)

        wait_for(check)


def test_copy_reasons_and_not_attempted_reasons(prom: Prometheus, workloads):
    b, c = f"zcB{TAG}", f"zcC{TAG}"
    assert prom.value(f'zctrace_zerocopy_not_attempted_total{{job="zctrace",comm="{c}",'
                      f'reason="so_zerocopy_unset"}}') == 150
    # Every copied request has a reason; the loopback copies are local deliveries (rx_evidence on
    # the tracepoint tier, which misses the first notification range: `unknown`; the
    # skb_copy_ubufs stack on fentry/kprobe).
    reasons = {s["metric"]["reason"]: float(s["value"][1]) for s in prom.query(
        f'sum by (reason) (zctrace_copy_fallbacks_total{{job="zctrace",comm="{b}"}})')}
    assert sum(reasons.values()) == 200
    assert max(reasons, key=reasons.get) == "local_delivery"


def test_notification_latency_histogram_has_samples(prom: Prometheus, workloads):
    count = prom.value('zctrace_notification_latency_seconds_bucket{job="zctrace",api="msg_zerocopy",le="+Inf"}')
    assert count and count > 0
    p99 = prom.value('histogram_quantile(0.99, sum by (le) (zctrace_notification_latency_seconds_bucket'
                     '{job="zctrace",api="msg_zerocopy"}))')
    assert p99 is not None and 0 < p99 <= 17.2
    # _count is the +Inf bucket; _sum the timed latencies' sum (the probes' zc_hist_sums), so the
    # mean falls within the buckets' range.
    assert prom.value('zctrace_notification_latency_seconds_count{job="zctrace",api="msg_zerocopy"}') == count
    mean = prom.value('zctrace_notification_latency_seconds_sum{job="zctrace",api="msg_zerocopy"}'
                      ' / zctrace_notification_latency_seconds_count{job="zctrace",api="msg_zerocopy"}')
    assert mean is not None and 1e-7 < mean <= 17.2


def test_comm_cap_folds_into_other_and_no_counter_ever_goes_down(prom: Prometheus, workloads):
    top1 = 'zctrace_zerocopy_requests_total{job="zctrace_top1"}'
    # Never more than the top process, one frozen process and `other`, at any scrape of the run.
    assert prom.value(f"max_over_time(count(count by (comm) ({top1}))[5m:1s])") <= 3
    # Every counter series of both exporters is monotonic over the whole run (E was top, went
    # out and came back; B and A were top for a while).
    counters = [n for n in prom.get("label/__name__/values") if re.fullmatch(r"zctrace_\w+_total", n)]
    assert "zctrace_zerocopy_bytes_total" in counters
    for job in ("zctrace", "zctrace_top1"):
        for name in counters:
            resets = prom.query(f'resets({name}{{job="{job}"}}[5m]) > 0')
            assert resets == [], (name, resets)
    # E is the top again, A (1.2 MB) is frozen, B (0.8 MB) and D (0.48 MB) were evicted (frozen
    # owners kept: N = 1, the biggest), C was never top (its requests are in `other`). The
    # exporter counts only the workloads' cgroup: F, bigger than all, is nowhere, and no other
    # sender on the host changes this.
    e, a = f"zcE{TAG}", f"zcA{TAG}"
    in_scope = {c: runs for c, runs in workloads.items() if c != f"zcF{TAG}"}
    evicted = sum(r["requests"] for x in "BD" for r in workloads[f"zc{x}{TAG}"])

    def converged() -> None:  # the last step reaches Prometheus a scrape or two later
        by_comm = {x["metric"]["comm"]: x["value"][1] for x in prom.query(f"sum by (comm) ({top1})")}
        assert by_comm.keys() == {e, a, OTHER}, by_comm
        mine = sum(r["requests"] for runs in in_scope.values() for r in runs)
        assert prom.value(f"sum({top1})") == mine - evicted, by_comm
        assert prom.value(f'sum({top1[:-1]},comm="{e}"}})') == 150 + 400, by_comm
        assert prom.value(f'sum({top1[:-1]},comm="{a}"}})') == 300, by_comm
        assert prom.value(f'sum({top1[:-1]},comm="{OTHER}"}})') == 150, by_comm  # C's
    wait_for(converged)


def test_probe_up_is_1_for_every_attached_probe(prom: Prometheus, exporters):
    a, _ = exporters
    for job in ("zctrace", "zctrace_top1"):
        up = prom.query(f'zctrace_probe_up{{job="{job}"}}')
        assert up and all(s["value"][1] == "1" for s in up), up
    log = a.log.read_text()
    assert "not attached" not in log and "not loaded" not in log


def test_bpf_program_stats_are_counted_with_bpf_stats(prom: Prometheus, workloads):
    assert prom.value('zctrace_bpf_stats_enabled{job="zctrace"}') == 1
    runs = prom.value('sum(zctrace_bpf_program_runs_total{job="zctrace",probe="msgzc_send"})')
    assert runs and runs >= 2 * 4  # enter+exit of the 4 msg_zerocopy runs' send calls at least
    assert prom.value('sum(zctrace_bpf_program_run_seconds_total{job="zctrace"})') > 0


def dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets") or []]


DASHBOARD_VARIABLES = ("job", "instance", "namespace", "pod", "container", "api", "proto")


def grafana_to_promql(expr: str, **values: str) -> str:
    """A dashboard query as Grafana sends it: every variable All (".*") unless given; rates over
    30 s, tables over the last hour. A variable left over (a typo) fails here."""
    expr = expr.replace("$__rate_interval", "30s").replace("$__range", "1h")
    expr = re.sub(r"\$(\w+)", lambda m: values.get(m.group(1), ".*") if m.group(1) in DASHBOARD_VARIABLES
                  else m.group(0), expr)
    assert not re.search(r"\$(?!1\b)", expr), expr  # only label_replace's $1 is left
    return expr


@contextlib.contextmanager
def cqes_held(prom: Prometheus):
    """The io_uring CQ gauges exist while a zerocopy sender holds a ring: this process, with a
    SEND_ZC's completion and notification left unreaped, until Prometheus has them."""
    with open_target("sink", "udp") as ep, socket.socket(ep.family, socket.SOCK_DGRAM) as s, Ring(8) as ring:
        s.connect(ep.addr)
        ring.prep_send_zc(s.fileno(), b"r" * 1000, 1)
        ring.submit()

        def seen() -> None:
            assert (prom.value('sum(zctrace_io_uring_unreaped_cqes{job="zctrace"})') or 0) >= 2
        wait_for(seen)
        yield


def test_every_dashboard_query_evaluates_and_returns_data(prom: Prometheus, workloads):
    tier = prom.query('zctrace_build_info{job="zctrace"}')[0]["metric"]["tier"]
    empty = []
    # The receive panels need a TCP_ZEROCOPY_RECEIVE user: this process.
    receive_from_a_zerocopy_sender()

    def received() -> None:
        assert (prom.value('sum(zctrace_tcp_zerocopy_receive_bytes_total{job="zctrace"})') or 0) > 0
    wait_for(received)
    with cqes_held(prom):
        for title, expr in dashboard_queries():
            result = prom.query(grafana_to_promql(expr))  # raises on a PromQL error
            if not result:
                empty.append(title)
    # Late copies (skb_copy_ubufs) are seen only by the fentry/kprobe tiers. The queries that join
    # kube-state-metrics (absent here) get no exemption: without it they must show the raw series.
    allowed = {"Late-copied bytes by kernel caller"} if tier == "tracepoint" else set()
    assert set(empty) <= allowed, empty
    assert any("kube_pod_container_info" in expr for _, expr in dashboard_queries())


def test_dashboard_json_is_generated_and_up_to_date():
    pytest.importorskip("grafana_foundation_sdk", reason="pip install grafana-foundation-sdk")
    r = subprocess.run([sys.executable, str(REPO / "dashboards" / "generate.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    titles = {t for t, _ in dashboard_queries()}
    for panel in ("Zerocopy ratio", "Copied requests by reason", "Top processes by zerocopy bytes",
                  "Notification latency", "Probes", "Most-copied workloads"):
        assert panel in titles
    doc = json.loads(DASHBOARD.read_text())
    assert {v["name"] for v in doc["templating"]["list"]} == {"datasource", *DASHBOARD_VARIABLES}
    heat = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] == "heatmap"]
    assert heat and "zctrace_notification_latency_seconds_bucket" in heat[0]["targets"][0]["expr"]


def test_dashboard_most_copied_workloads_names_containers_from_kube_state_metrics(tmp_path: Path):
    """The join with kube-state-metrics, on synthetic series under `promtool test rules`: a
    container it knows gets its namespace, pod and container; a host process, a container it does
    not know, its not-yet-started containers (container_id "") and a second replica change
    nothing; picking a namespace leaves out what does not join."""
    panel = [expr for title, expr in dashboard_queries() if title == "Most-copied workloads"]
    copied, reason = panel[0], panel[2]
    ids = {"a": "84532b306f259587c364bd7301e0813963d5b84fd27c9338f0862dab8f0499d7",
           "c": "5be1ecc7935f1dd85635d4feedaf660594030253cc97c9e9ca3819ffeac36b65"}
    uid = "8d3b5a7e-2f41-4c9a-9b1e-5c6d7e8f9a0b"
    a = (f'instance="node-a:9435",cgroup="/kubepods.slice/kubepods-pod{uid.replace("-", "_")}.slice/'
         f'cri-containerd-{ids["a"]}.scope",container_id="{ids["a"]}",pod_uid="{uid}"')
    b = 'instance="node-a:9435",cgroup="/system.slice/streamer.service"'
    c = f'instance="node-a:9435",cgroup="/system.slice/docker-{ids["c"]}.scope",container_id="{ids["c"]}"'
    names = 'namespace="shop",pod="envoy-7d9f",container="envoy"'
    ksm = f'kube_pod_container_info{{job="kube-state-metrics",{names},uid="{uid}",image="envoy:1.30"'
    series = {
        f'zctrace_zerocopy_requests_total{{job="zctrace",verdict="copied",api="msg_zerocopy",proto="tcp",{a}}}': "0+60x60",
        f'zctrace_zerocopy_requests_total{{job="zctrace",verdict="copied",api="msg_zerocopy",proto="udp",{b}}}': "0+120x60",
        f'zctrace_zerocopy_requests_total{{job="zctrace",verdict="copied",api="io_uring",proto="udp",{c}}}': "0+180x60",
        f'zctrace_copy_fallbacks_total{{job="zctrace",reason="local_delivery",api="msg_zerocopy",proto="tcp",{a}}}': "0+45x60",
        f'zctrace_copy_fallbacks_total{{job="zctrace",reason="packet_tap",api="msg_zerocopy",proto="tcp",{a}}}': "0+15x60",
        f'{ksm},instance="ksm-0",container_id="containerd://{ids["a"]}"}}': "1x60",
        f'{ksm},instance="ksm-1",container_id="containerd://{ids["a"]}"}}': "1x60",  # a second replica
        'kube_pod_container_info{job="kube-state-metrics",namespace="shop",pod="web-0",container="web",'
        'uid="0c4f6a2b-7d3e-4b5a-8c9d-1e2f3a4b5c6d",container_id=""}': "1x60",  # not started yet
    }
    joined = "{" + a + "," + names + "}"
    cases = [
        (copied, {}, [(joined, 1), ("{" + b + "}", 2), ("{" + c + "}", 3)]),
        (copied, {"namespace": "shop"}, [(joined, 1)]),
        (copied, {"namespace": "shop", "pod": "web-0"}, []),
        (reason, {}, [("{" + a + "," + names + ',reason="local_delivery"}', 0.75)]),
    ]
    test = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "promql_expr_test": [{"expr": grafana_to_promql(expr, **values), "eval_time": "60m",
                              "exp_samples": [{"labels": l, "value": v} for l, v in want]}
                             for expr, values, want in cases]}]}
    path = tmp_path / "join.yml"
    path.write_text(json.dumps(test))  # YAML is a superset of JSON
    r = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_accepts_the_rules_and_the_scrape_example():
    r = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["promtool", "check", "config", "--syntax-only", str(SCRAPE_EXAMPLE)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_rules_evaluate_and_recording_rules_return_data(prom: Prometheus, workloads):
    def rules() -> list[dict]:
        found = [r for g in prom.get("rules")["groups"] for r in g["rules"]]
        assert found and all(r["lastEvaluation"] > "2000" for r in found)
        return found

    found = wait_for(rules)
    assert {r["health"] for r in found} == {"ok"}, [(r["name"], r.get("lastError")) for r in found]
    for r in (r for r in found if r["type"] == "recording"):
        def has_data() -> None:
            assert prom.query(r["name"]), f"no data: {r['name']}"
        wait_for(has_data)
    # Alerts evaluate without error (health ok above). Copy reasons Prometheus has never seen are
    # increasing here (local_delivery), yet the new-reason alert stays quiet: these exporters have
    # not reported for a week (dashboards/tests/*.yml test the alerts firing on synthetic series).
    assert prom.query('sum by (job, instance, reason) (increase(zctrace_copy_fallbacks_total{reason="local_delivery"}[10m])) > 0')
    alerts = {a["labels"]["alertname"] for a in prom.get("alerts")["alerts"]}
    assert "ZctraceNewCopyReason" not in alerts
    # No rule may refer to a metric that does not exist (a typo would make it silently dead).
    names = set(re.findall(r"\b(zctrace_\w+|zctrace:[\w:]+)", RULES.read_text()))
    with cqes_held(prom):
        for name in names:
            assert prom.query(f'count({{__name__="{name}"}})'), name


# Plain HTTP ----------------------------------------------------------------------------------

def test_metrics_names_types_and_labels(exporters, workloads):
    _, b = exporters
    fams = b.metrics()
    for name, (kind, labels) in FAMILIES.items():
        assert name in fams, name
        assert fams[name].type == kind, name
        for sample in fams[name].samples:
            expected = labels - {"le"} if kind == "histogram" and not sample.name.endswith("_bucket") else labels
            assert set(sample.labels) == expected, (name, sample)
    assert not any("pid" in s.labels for f in fams.values() for s in f.samples)
    assert fams["zctrace_scrape_errors"].samples[0].value == 0
    assert {s.labels["verdict"] for s in fams["zctrace_zerocopy_requests"].samples} == {
        "zerocopied", "copied", "unknown", "not_attempted"}
    tier = fams["zctrace_build_info"].samples[0].labels["tier"]
    assert all(name not in fams for name in KERNEL_SIDE) == (tier == "tracepoint")
    # The loopback senders exited: their owners keep their advice while their series stay.
    assert "always_copied" in {s.labels["code"] for s in fams["zctrace_advice"].samples}


def test_comm_cap_keeps_the_top_one_a_frozen_one_and_other(exporters, workloads):
    _, b = exporters
    fams = b.metrics()
    for name in ("zctrace_zerocopy_requests", "zctrace_zerocopy_bytes", "zctrace_zerocopy_undecided_requests"):
        comms = {s.labels["comm"] for s in fams[name].samples}
        assert OTHER in comms and 2 <= len(comms) <= 3, (name, comms)


def capability_sets(pid: int) -> list[dict[str, set[str]]]:
    """{CapEff, CapPrm, CapAmb: capability names} of every thread of `pid`."""
    from zctrace.exporter.privileges import NAMES
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = dict(l.split(":\t") for l in (task / "status").read_text().splitlines() if ":\t" in l)
        out.append({k: {NAMES[b] for b in range(64) if int(fields[k], 16) >> b & 1}
                    for k in ("CapEff", "CapPrm", "CapAmb")})
    return out


def bpf_map_reads_need_a_capability() -> bool:
    """Kernels before 6.5 refuse every bpf() command without CAP_BPF while
    kernel.unprivileged_bpf_disabled is set; later ones only program loads and map creation."""
    release = tuple(int(x) for x in re.findall(r"\d+", os.uname().release)[:2])
    return release < (6, 5) and Path("/proc/sys/kernel/unprivileged_bpf_disabled").read_text().strip() != "0"


def test_capabilities_are_dropped_after_attaching_and_counts_still_arrive(exporters, workloads):
    """A runs as root with every capability, B as the unit runs it (unprivileged, the unit's
    set): once serving, every thread of both holds at most what scraping needs, and the
    workloads' counts arrive in a scrape made after the drop."""
    scrape_caps = {"cap_sys_ptrace", "cap_dac_read_search"}
    for exporter in exporters:
        tier = exporter.metrics()["zctrace_build_info"].samples[0].labels["tier"]
        allowed = scrape_caps | ({"cap_syslog"} if tier != "tracepoint" else set())
        if bpf_map_reads_need_a_capability():
            allowed |= {"cap_bpf"}
        sets = capability_sets(exporter.proc.pid)
        assert len(sets) > 1  # the HTTP and sweeper threads too
        for caps in sets:
            assert caps["CapEff"] == caps["CapPrm"] <= allowed, (exporter.log, caps)
            assert caps["CapAmb"] <= allowed
            assert not caps["CapEff"] & {"cap_perfmon", "cap_sys_admin", "cap_sys_resource"}
        assert {"cap_sys_ptrace", "cap_dac_read_search"} <= sets[0]["CapEff"]
        (line,) = [l for l in exporter.log.read_text().splitlines() if "capabilities after attaching" in l]
        assert f"kept {','.join(sorted(sets[0]['CapEff']))};" in line, line
    a, b = exporters
    comm = f"zcA{TAG}"
    got = {s.labels["verdict"]: s.value for s in a.metrics()["zctrace_zerocopy_requests"].samples
           if s.labels["comm"] == comm and s.value}
    assert got == expected(workloads[comm])
    # B keeps one comm (the top one by bytes): its counts are the workloads' in its cgroup.
    top = {s.labels["comm"] for s in b.metrics()["zctrace_zerocopy_bytes"].samples if s.value} - {OTHER}
    assert top and top <= set(workloads)


def test_https_and_basic_auth(exporters, tls):
    a, _ = exporters
    assert http_get(a.url, None, tls["ctx"])[0] == 401
    assert http_get(a.url, (USER, "wrong"), tls["ctx"])[0] == 401
    assert http_get(a.url, ("nobody", PASSWORD), tls["ctx"])[0] == 401
    status, ctype, body = http_get(a.url, (USER, PASSWORD), tls["ctx"])
    assert status == 200 and ctype.startswith("text/plain") and "zctrace_probe_up" in body
    assert http_get(a.url.replace("/metrics", "/nope"), (USER, PASSWORD), tls["ctx"])[0] == 404
    with pytest.raises(OSError):
        http_get(a.url.replace("https:", "http:"), (USER, PASSWORD), timeout=3)


def test_bad_options_exit_2_before_loading_probes(tmp: Path):
    for args, text in ((["--tls-cert", "x.pem"], "--tls-key"), (["--listen", "nowhere"], "HOST:PORT"),
                       (["--basic-auth-file", str(tmp / "missing")], "basic auth file"),
                       (["--top-comms", "0"], "at least 1"), (["--cgroup", "no/such"], "no cgroup 'no/such'")):
        r = subprocess.run(ZCTRACE + ["export", *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and text in r.stderr, (args, r.stderr)


# In-process: exact folding, and a probe that does not attach --------------------------------------

def rows(*specs: tuple[int, str, int, int]) -> list[StatsRow]:
    """(pid, comm, requests, bytes) -> process rows."""
    return [StatsRow(pid, comm, "msg_zerocopy", "udp", {"requests": n, "bytes": b}) for pid, comm, n, b in specs]


def update_twice(f: Folder, step: list[StatsRow], seen: dict) -> Folded:
    """Two scrapes of the same maps: the first shows new series as 0, the second their value.
    Sums over owners never decrease, are the raw totals at the second, at most 2N+1 owners,
    no series ever goes down."""
    total = {k: sum(r.counters[k] for r in step) for k in ("requests", "bytes")}
    for scrape in (1, 2):
        out = f.update(step)
        sums = {k: sum(c[k] for c in out.series.values()) for k in total}
        assert sums == total if scrape == 2 else all(sums[k] <= total[k] for k in total)
        assert all(sums[k] >= seen.get("sum", {}).get(k, 0) for k in total)
        seen["sum"] = sums
        assert len({o for o, _, _ in out.series}) <= 2 * f.top + 1
        for key, c in out.series.items():
            assert all(c[k] >= seen.get(key, {}).get(k, 0) for k in c), key
            seen[key] = dict(c)
    return out


def test_fold_moves_between_top_and_other_without_going_down():
    f, seen = Folder(top=1), {}
    steps = [
        rows((1, "a", 10, 100)),                                        # a is top
        rows((1, "a", 10, 100), (2, "b", 20, 200)),                     # b overtakes: a frozen
        rows((1, "a", 40, 400), (2, "b", 20, 200)),                     # a is back: b frozen
        rows((1, "a", 40, 400), (2, "b", 25, 250), (3, "a", 5, 50)),    # b sends outside the top
    ]
    for step in steps:
        out = update_twice(f, step, seen)
    assert {o.comm: c["requests"] for (o, _, _), c in out.series.items()} == {"a": 45, "b": 20, OTHER: 5}
    assert out.label_of == {Owner("a"): Owner("a"), Owner("b"): OTHER_OWNER}


def test_fold_shows_a_new_series_as_0_first():
    f = Folder(top=1)
    first = f.update(rows((1, "a", 10, 100)))
    assert [c["requests"] for c in first.series.values()] == [0]
    assert [c["requests"] for c in f.update(rows((1, "a", 10, 100))).series.values()] == [10]


def test_folds_between_scrapes_count_exited_rows_and_keep_the_debut():
    """The sweeper folds between scrapes: rows that are gone by the next scrape (retired) still
    count, and a series first seen at a fold still shows 0 at its first scrape."""
    f = Folder(top=1)
    f.fold(rows((1, "a", 1, 10)))
    f.fold(rows((1, "a", 3, 30), (2, "a", 1, 10)))  # then pid 1 and 2 exit and leave the maps
    first = f.view()
    assert [c["requests"] for c in first.series.values()] == [0]
    assert [c["requests"] for c in f.update(rows((3, "a", 2, 20))).series.values()] == [6]
    assert first.label_of == {Owner("a"): Owner("a")}


def test_fold_keeps_the_biggest_frozen_owners():
    f, seen = Folder(top=1), {}
    update_twice(f, rows((1, "a", 1, 10)), seen)
    update_twice(f, rows((1, "a", 1, 10), (2, "b", 1, 20)), seen)
    out = f.update(rows((1, "a", 1, 10), (2, "b", 1, 20), (3, "c", 1, 30)))
    out = f.update(rows((1, "a", 1, 10), (2, "b", 1, 20), (3, "c", 1, 30)))
    # c is top, b (20 bytes) stays frozen, a (10 bytes) is no longer exported.
    assert {o.comm: c["bytes"] for (o, _, _), c in out.series.items()} == {"c": 30, "b": 20, OTHER: 0}


def test_fold_per_pid_and_a_reused_row():
    f, seen = Folder(top=2, per_pid=True), {}
    update_twice(f, rows((1, "a", 5, 50), (2, "a", 1, 10), (3, "c", 1, 1)), seen)
    f.update(rows((1, "x", 2, 20), (2, "a", 1, 10), (3, "c", 1, 1)))  # pid 1 is another process now
    out = f.update(rows((1, "x", 2, 20), (2, "a", 1, 10), (3, "c", 1, 1)))
    got = {(o.comm, o.pid): c["requests"] for (o, _, _), c in out.series.items()}
    # The exited a/1 sent the most: it stays named, with its final count; a/2 drops out (frozen).
    assert got == {("a", "1"): 5, ("x", "1"): 2, ("a", "2"): 1, (OTHER, ""): 1}


def test_late_copy_caller_skips_the_copy_and_bpf_frames():
    stack = ("bpf_prog_1234_kfunc", "bpf_trampoline_6442", "skb_copy_ubufs",
             "__netif_receive_skb_core.constprop.0", "netif_receive_skb")
    assert late_copy_caller(stack) == "__netif_receive_skb_core"
    assert late_copy_caller(()) == "unknown"


def test_a_pull_before_encryption_is_software_crypto():
    """__pskb_pull_tail's program under skb_checksum_help (WireGuard checksums before it encrypts;
    the stack of a 6.12 VM run, and the same under skb_checksum_help's former program):
    software_crypto, and its caller is the site shown."""
    from zctrace.reasons import classify
    tail = ("skb_checksum_help", "encrypt_packet", "wg_packet_encrypt_worker", "process_one_work", "worker_thread")
    for stack in (("bpf_prog_99_kfunc", "bpf_trampoline_7", "__pskb_pull_tail") + tail,
                  ("bpf_prog_99_kfunc", "bpf_trampoline_7") + tail):
        assert classify(stack) == "software_crypto"
        assert late_copy_caller(stack) == "encrypt_packet"
    assert classify(("esp_output_tail", "esp_output")) == "software_crypto"


def test_a_linearize_for_a_device_without_sg_is_no_sg():
    """A zerocopy skb a tc mirred redirect brought to a device without scatter-gather:
    validate_xmit_skb linearizes it (__pskb_pull_tail; the 6.1 VM's stack of test_paths.py's
    tc-mirred-nosg cells, 2026-12-08). Before __pskb_pull_tail had a program this was `unknown`."""
    from zctrace.reasons import classify
    stack = ("bpf_prog_5f_kfunc____pskb_pull_tail", "bpf_trampoline_6442", "__pskb_pull_tail", "validate_xmit_skb",
             "__dev_queue_xmit", "tcf_mirred_act", "tcf_action_exec", "__tcf_classify", "tcf_classify")
    assert classify(stack) == "no_sg"
    assert late_copy_caller(stack) == "validate_xmit_skb"


def test_a_checksum_before_ipsec_is_software_crypto():
    """TCP over ESP without offload: xfrm_output checksums in software before the transform
    encrypts, linearizing the zerocopy frags (the stack of the 6.12 and 6.1 VM runs of
    test_paths.py's esp-transport and esp-tunnel TCP cells)."""
    from zctrace.reasons import classify
    stack = ("bpf_prog_d42d_kfunc____pskb_pull_tail", "bpf_trampoline_6442547778", "__pskb_pull_tail", "skb_checksum_help",
             "xfrm_output", "__ip_queue_xmit", "__tcp_transmit_skb", "tcp_write_xmit", "__tcp_push_pending_frames")
    assert classify(stack) == "software_crypto"
    assert late_copy_caller(stack) == "xfrm_output"


def test_software_segmentation_is_software_gso_asked_for_by_wg_xmit():
    """skb_segment without SG under WireGuard's wg_xmit: the stacks of the 6.12 VM's fentry and
    kprobe runs of test_wireguard_copies_what_the_kernel_calls_zero_copy (2026-12-07). The
    caller is the layer that asked for segmentation, past GSO's plumbing."""
    from zctrace.reasons import classify
    gso = ("skb_segment", "tcp_gso_segment", "inet_gso_segment", "skb_mac_gso_segment", "__skb_gso_segment",
           "wg_xmit")
    for stack in (("bpf_prog_20a0_kfunc__skb_segment", "bpf_trampoline_6442546429") + gso,  # fentry
                  gso + ("dev_hard_start_xmit", "__dev_queue_xmit")):  # kprobe
        assert classify(stack) == "software_gso"
        assert late_copy_caller(stack) == "wg_xmit"


def scrape_families(collector: ZctraceCollector) -> dict:
    registry = CollectorRegistry()
    registry.register(collector)
    return {m.name: m for m in registry.collect()}


def test_exact_fold_on_a_real_session(tmp: Path):
    """A session filtered to this test's children, the top 2 named: folded totals equal the raw
    map totals (at the second scrape of each step) while processes move in and out of the top."""
    with Session.open("tracepoint", Btf.load(), pids=[os.getpid()]) as session:
        collector = ZctraceCollector(session, ExportOptions(top_comms=2))
        py = {x: comm_python(tmp, f"zf{x}{TAG}") for x in "xyz"}
        seen: dict = {}
        last: dict = {}  # every row's latest counters: exited processes leave the maps after two scrapes
        for x, count in (("x", 50), ("y", 100), ("z", 200), ("x", 10), ("x", 300)):
            run_workload(py[x], "--mode", "msg_zerocopy", "--target", "loopback", "--count", str(count))
            last.update({(r.pid, r.api, r.proto): r for r in snapshot.take(session.bpf).rows})
            raw = list(last.values())
            for scrape in (1, 2):
                fams = scrape_families(collector)
                nbytes = sum(s.value for s in fams["zctrace_zerocopy_bytes"].samples)
                copied = {s.labels["comm"]: s.value for s in fams["zctrace_zerocopy_requests"].samples
                          if s.labels["verdict"] == "copied"}
                assert len(copied) <= 5
                for comm, n in copied.items():
                    assert n >= seen.get(comm, 0), comm
                seen = copied
            assert nbytes == sum(r.counters["bytes"] for r in raw)
            assert sum(copied.values()) == sum(r.counters["copied"] for r in raw)
    # x's 10 requests while y and z were the top two went to `other`; x came back with 300.
    assert copied == {f"zfx{TAG}": 350, f"zfy{TAG}": 100, f"zfz{TAG}": 200, OTHER: 10}


def test_io_uring_verdicts_through_the_exporter(tmp: Path):
    """SEND_ZC with REPORT_USAGE to the sink (zerocopied) and without it over loopback (unknown
    on the tracepoint tier), served over HTTP from a session filtered to this test's children.
    The two run at the same time so that their rings cannot share an address."""
    with Session.open("tracepoint", Btf.load(), pids=[os.getpid()]) as session:
        registry = CollectorRegistry()
        registry.register(ZctraceCollector(session, ExportOptions()))
        server = MetricsServer(registry, "127.0.0.1", 0)
        server.start()
        try:
            sink, lo = f"zus{TAG}", f"zul{TAG}"
            size = ("--mode", "uring_zc", "--size", "4000", "--count", "150")
            procs = {sink: start_workload(comm_python(tmp, sink), *size, "--target", "sink"),
                     lo: start_workload(comm_python(tmp, lo), *size, "--target", "loopback",
                                        "--no-report-usage")}
            runs = {comm: finish(p) for comm, p in procs.items()}
            for _ in range(2):  # a new series shows 0 at its first scrape
                body = http_get(f"http://127.0.0.1:{server.address[1]}/metrics")[2]
        finally:
            server.stop()
    got = {(s.labels["comm"], s.labels["verdict"]): s.value
           for s in families(body)["zctrace_zerocopy_requests"].samples if s.labels["api"] == "io_uring" and s.value}
    assert got == {(sink, "zerocopied"): runs[sink]["kernel_zerocopied"], (lo, "unknown"): runs[lo]["kernel_unknown"]}
    assert runs[sink]["kernel_zerocopied"] == runs[lo]["kernel_unknown"] == 150


def test_unreaped_io_uring_cqes_gauges(tmp: Path):
    """A ring with room for 8 CQEs, 3 x 4 SEND_ZC requests to the sink and nothing reaped: 24
    CQEs (completions and notifications), 8 in the CQ ring and 16 in the kernel's overflow list,
    shown for this process; 0 and 0 once it reaps them all."""
    comm = Path("/proc/self/comm").read_text().strip()

    def gauges(collector: ZctraceCollector) -> dict[str, float]:
        return {m.name: sum(s.value for s in m.samples if s.labels["comm"] == comm)
                for m in collector.collect() if m.name.startswith("zctrace_io_uring_")}

    with Session.open("tracepoint", Btf.load(), pids=[os.getpid()]) as session:
        collector = ZctraceCollector(session, ExportOptions())
        with open_target("sink", "udp") as ep, socket.socket(ep.family, socket.SOCK_DGRAM) as s, Ring(4) as ring:
            assert ring.cq_entries == 8
            s.connect(ep.addr)
            for _ in range(3):
                for i in range(4):
                    ring.prep_send_zc(s.fileno(), b"r" * 1000, i)
                assert ring.submit() == 4
            want = {"zctrace_io_uring_unreaped_cqes": 8, "zctrace_io_uring_overflowed_cqes": 16}
            deadline = time.monotonic() + 10
            while gauges(collector) != want and time.monotonic() < deadline:
                time.sleep(0.05)
            assert gauges(collector) == want
            reaped = 0
            while got := ring.reap():
                reaped += len(got)
            assert reaped == 24
            assert gauges(collector) == {"zctrace_io_uring_unreaped_cqes": 0, "zctrace_io_uring_overflowed_cqes": 0}


def test_a_probe_that_fails_to_attach_shows_probe_up_0_and_the_rest_keeps_counting(tmp: Path):
    """The kprobe tier on a host that refuses kprobes: its tracepoints attach, its kprobes do not."""
    with Session.open("kprobe", Btf.load(), pids=[os.getpid()]) as session:
        failed = {s.target for s in session.statuses if not s.attached}
        if not failed:
            pytest.skip("every kprobe attaches here: no partial failure to observe")
        registry = CollectorRegistry()
        registry.register(ZctraceCollector(session, ExportOptions()))
        server = MetricsServer(registry, "127.0.0.1", 0)
        server.start()
        try:
            py = comm_python(tmp, f"zk{TAG}")
            run_workload(py, "--mode", "msg_zerocopy", "--target", "sink", "--count", "100")
            for _ in range(2):  # a new series shows 0 at its first scrape
                status, _, body = http_get(f"http://127.0.0.1:{server.address[1]}/metrics")
        finally:
            server.stop()
    fams = families(body)
    up = {s.labels["target"]: s.value for s in fams["zctrace_probe_up"].samples}
    assert {t for t, v in up.items() if v == 0} == failed
    assert {t for t, v in up.items() if v == 1} == {s.target for s in session.statuses if s.attached}
    assert all(s.labels["tier"] == "kprobe" for s in fams["zctrace_probe_up"].samples)
    mine = [s for s in fams["zctrace_zerocopy_bytes"].samples if s.labels["comm"] == f"zk{TAG}"]
    assert [s.value for s in mine] == [400000]  # the send tracepoints still count
    assert fams["zctrace_scrape_errors"].samples[0].value == 0


@pytest.mark.vm
@pytest.mark.parametrize("tier", ["fentry", "kprobe"])
def test_kernel_side_families_on_the_fentry_and_kprobe_tiers(tmp: Path, tier: str, tier_sessions):
    """Late copies by caller, kernel events and copy reasons from the kernel's own callbacks (the
    run's compiled session of the tier: conftest's TierSessions)."""
    with tier_sessions.attached(tier) as session:
        collector = ZctraceCollector(session, ExportOptions())
        comm = f"zv{tier[0]}{TAG}"
        run = run_workload(comm_python(tmp, comm), "--mode", "msg_zerocopy", "--target", "loopback",
                           "--size", "4000", "--count", "100")
        for _ in range(2):  # a new series shows 0 at its first scrape
            fams = scrape_families(collector)
    assert {(s.labels["tier"], s.value) for s in fams["zctrace_probe_up"].samples} == {(tier, 1)}
    copied = [s.value for s in fams["zctrace_zerocopy_requests"].samples
              if s.labels["comm"] == comm and s.labels["verdict"] == "copied"]
    assert copied == [run["kernel_copied"]] == [100]
    reasons = {s.labels["reason"]: s.value for s in fams["zctrace_copy_fallbacks"].samples
               if s.labels["comm"] == comm}
    assert reasons == {"local_delivery": 100}
    late = {s.labels["caller"]: s.value for s in fams["zctrace_late_copies"].samples}
    events = {s.labels["event"]: s.value for s in fams["zctrace_kernel_events"].samples}
    assert late and "unknown" not in late and all(re.fullmatch(r"[A-Za-z_]\w*", c) for c in late), late
    assert sum(late.values()) == events["copy_ubufs"] >= 100


# Last: stopping --------------------------------------------------------------------------------

def test_sigterm_detaches_everything_and_exits_0(exporters):
    bpftool = shutil.which("bpftool")
    for exporter in exporters:
        ids = exporter.prog_ids()
        assert ids
        exporter.proc.send_signal(signal.SIGTERM)
        assert exporter.proc.wait(timeout=30) == 0, exporter.log.read_text()
        assert "stopped, probes detached" in exporter.log.read_text()
        if bpftool:
            loaded = {p["id"] for p in json.loads(subprocess.run([bpftool, "-j", "prog", "show"],
                                                                 capture_output=True, text=True).stdout)}
            assert not ids & loaded
