"""Copies attributed to containers and pods on the real kernel: real cgroup v2 subtrees laid out
as each container runtime and Kubernetes driver lays them out, real MSG_ZEROCOPY and io_uring
senders moved into them, one real `zctrace export` and `zctrace trace --json`.

The subtrees live under a scratch cgroup of the test's own (the parsing does not care where a
layout starts), so a host's real kubepods.slice is never touched; the exporter is scoped to it
(--cgroup), so other senders on the host cannot change its series.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import in_cgroup, scratch_cgroup
from test_exporter import ZCTRACE, Exporter

TAG = secrets.token_hex(3)
CID = secrets.token_hex(32)
UID = "6f1c2a3b-4d5e-4f60-8a7b-" + secrets.token_hex(6)
UID_ = UID.replace("-", "_")

# layout name -> (path below the scratch cgroup, container id, pod UID)
LAYOUTS = {
    "containerd": (f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
                   f"cri-containerd-{CID}.scope", CID, UID),
    "cri-o": (f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{CID}.scope",
              CID, UID),
    "guaranteed": (f"kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope", CID, UID),
    "cgroupfs": (f"kubepods/besteffort/pod{UID}/{CID}", CID, UID),
    "docker": (f"system.slice/docker-{CID}.scope", CID, ""),
    "docker-cgroupfs": (f"docker/{CID}", CID, ""),
    "podman": (f"machine.slice/libpod-{CID}.scope", CID, ""),
    "service": ("system.slice/zcsender.service", "", ""),
}


def sender(mode: str, count: int) -> list[str]:
    return [sys.executable, "-m", "zctrace.workload", "--mode", mode, "--target", "sink", "--size", "1000",
            "--count", str(count), "--engine", "c"]


def run_in(cgroup: Path, argv: list[str]) -> dict:
    r = subprocess.run(in_cgroup(cgroup, argv), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def scratch():
    with scratch_cgroup(f"zctrace-attr-{TAG}") as root:
        for path, _, _ in LAYOUTS.values():
            (root / path).mkdir(parents=True)
        yield root


@pytest.fixture(scope="module")
def sent(scratch: Path, tmp_path_factory):
    """An exporter scoped to the scratch cgroup; a MSG_ZEROCOPY sender in every layout, an
    io_uring SEND_ZC sender beside it in the containerd one. Returns (kernel counts per layout,
    the exporter's families after two scrapes)."""
    tmp = tmp_path_factory.mktemp("attr")
    exporter = Exporter(tmp, "attr", ["--cgroup", scratch.name, "--top-cgroups", "20"])
    try:
        exporter.wait_ready()
        kernel = {}
        for name, (path, _, _) in LAYOUTS.items():
            runs = [run_in(scratch / path, sender("msg_zerocopy", 300))]
            if name == "containerd":
                runs.append(run_in(scratch / path, sender("uring_zc", 200)))
            kernel[name] = sum(r["kernel_zerocopied"] + r["kernel_copied"] for r in runs)
            assert kernel[name] == sum(r["requests"] for r in runs)
        exporter.metrics()  # a new series shows 0 at its first scrape
        yield kernel, exporter.metrics()
    finally:
        exporter.kill()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_exporter_series_carry_the_container_and_pod(sent, scratch: Path, layout: str):
    kernel, fams = sent
    path, container, pod = LAYOUTS[layout]
    cgroup = "/" + str((scratch / path).relative_to(scratch.parent))
    decided = [s for s in fams["zctrace_zerocopy_requests"].samples
               if s.labels["cgroup"] == cgroup and s.labels["verdict"] in ("zerocopied", "copied")]
    assert decided, f"no series for {cgroup}"
    assert {(s.labels["container_id"], s.labels["pod_uid"]) for s in decided} == {(container, pod)}
    assert sum(s.value for s in decided) == kernel[layout]
    if layout == "containerd":
        assert {s.labels["api"] for s in decided if s.value} == {"msg_zerocopy", "io_uring"}
        sent_bytes = [s for s in fams["zctrace_zerocopy_bytes"].samples if s.labels["cgroup"] == cgroup]
        assert sum(s.value for s in sent_bytes) == 1000 * kernel[layout]


def test_pods_with_the_same_binary_are_apart(sent):
    """Every layout's sender has the same comm: one series each, never summed together."""
    _, fams = sent
    cgroups = {s.labels["cgroup"] for s in fams["zctrace_zerocopy_requests"].samples if s.value}
    assert len(cgroups) == len(LAYOUTS)


def test_trace_json_names_the_container(scratch: Path, tmp_path: Path):
    path, container, pod = LAYOUTS["containerd"]
    out = tmp_path / "trace.json"
    r = subprocess.run(ZCTRACE + ["trace", "--json", str(out), "--"] + in_cgroup(scratch / path, sender(
        "msg_zerocopy", 200)), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    procs = [p for p in json.loads(out.read_text())["processes"] if p["container_id"]]
    assert [(p["container_id"], p["pod_uid"], p["runtime"], p["counts"]["zc_requests"]) for p in procs] == [
        (container, pod, "containerd", 200)]
    assert procs[0]["cgroup"].endswith(path)
    assert container[:12] in r.stdout  # the WORKLOAD column
