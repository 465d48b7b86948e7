"""Attribution without root or BPF: cgroup paths parsed for containers, pods and services
(zctrace/workloads.py), ids resolved in a directory tree laid out like a cgroup v2 hierarchy
(a cgroup's id is its directory's inode number), and the exporter's series labelled with them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakemaps import FakeMaps

from zctrace import model, snapshot, workloads
from zctrace.errors import ZctraceError
from zctrace.exporter.collector import ExportOptions, ZctraceCollector
from zctrace.exporter.fold import OTHER, Folder, Owner
from zctrace.probes import Session
from zctrace.snapshot import StatsRow

CID = "0123456789abcdef" * 4
CID2 = "fedcba9876543210" * 4
UID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
UID_ = UID.replace("-", "_")

# (path, container_id, runtime, pod_uid, service)
LAYOUTS = [
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope",
     CID, "containerd", UID, ""),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{CID}.scope",
     CID, "cri-o", UID, ""),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope", CID, "containerd", UID, ""),
    (f"/kubepods/besteffort/pod{UID}/{CID}", CID, "", UID, ""),
    (f"/kubepods/pod{UID}/{CID}", CID, "", UID, ""),
    (f"/system.slice/docker-{CID}.scope", CID, "docker", "", ""),
    (f"/docker/{CID}", CID, "docker", "", ""),
    (f"/machine.slice/libpod-{CID}.scope", CID, "podman", "", ""),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/container", CID, "podman", "",
     "user@1000.service"),
    ("/system.slice/nginx.service", "", "", "", "nginx.service"),
    ("/", "", "", "", ""),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice", "", "", UID, ""),
]


@pytest.mark.parametrize("path,container,runtime,pod,service", LAYOUTS, ids=[p for p, *_ in LAYOUTS])
def test_layouts(path, container, runtime, pod, service):
    w = workloads.parse(path)
    assert (w.cgroup, w.container_id, w.runtime, w.pod_uid, w.service) == (path, container, runtime, pod, service)


def test_lookalikes_are_not_containers():
    assert workloads.parse(f"/system.slice/{CID}").container_id == ""  # a bare id outside docker/ or a pod
    assert workloads.parse(f"/kubepods.slice/cri-containerd-{CID[:-1]}.scope").container_id == ""
    assert workloads.parse(f"/user.slice/pod{UID}").pod_uid == ""  # pod<uid> only under kubepods


def test_short_names():
    assert workloads.parse(LAYOUTS[0][0]).name == CID[:12]
    assert workloads.parse("/system.slice/nginx.service").name == "nginx.service"
    assert workloads.parse("/user.slice/session-3.scope").name == "session-3.scope"
    assert workloads.UNKNOWN.name == "-"


def make_tree(root: Path, *paths: str) -> dict[str, int]:
    """Directories for `paths` under `root`: path -> its id (inode number)."""
    out = {}
    for path in paths:
        (root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
        out[path] = os.stat(root / path.lstrip("/")).st_ino
    return out


def test_resolver_walks_once_per_interval_and_keeps_what_it_found(tmp_path: Path):
    now = [0.0]
    ids = make_tree(tmp_path, LAYOUTS[0][0])
    r = workloads.Resolver(tmp_path, clock=lambda: now[0], max_cached=100)
    assert r(ids[LAYOUTS[0][0]]).container_id == CID
    assert r.scans == 1
    late = make_tree(tmp_path, "/system.slice/nginx.service")["/system.slice/nginx.service"]
    assert r(late) == workloads.UNKNOWN and r.scans == 1  # within the interval: no second walk
    now[0] += workloads.RESCAN_SECONDS
    assert r(late).service == "nginx.service" and r.scans == 2
    (tmp_path / "system.slice/nginx.service").rmdir()
    assert r(late).service == "nginx.service"  # gone, still known: ids are never reused
    assert r(123456789) == workloads.UNKNOWN and r.unresolved == 0  # no walk: too soon
    now[0] += workloads.RESCAN_SECONDS
    assert r(123456789) == workloads.UNKNOWN and r.unresolved == 1


def test_resolver_is_bounded(tmp_path: Path):
    ids = make_tree(tmp_path, *(f"/c{i}" for i in range(50)))
    r = workloads.Resolver(tmp_path, max_cached=10)
    r(ids["/c0"])
    assert len(r._known) <= 10


def test_v2_root_refuses_what_is_not_a_cgroup_hierarchy(tmp_path: Path):
    with pytest.raises(ZctraceError, match="not a cgroup v2 hierarchy"):
        workloads.v2_root(str(tmp_path))
    with pytest.raises(ZctraceError, match="cannot read the cgroup v2 hierarchy"):
        workloads.v2_root(str(tmp_path / "missing"))


def scrape(c: ZctraceCollector) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in c.collect():
        out.setdefault(family.name, []).extend(family.samples)
    return out


def test_series_carry_container_pod_and_cgroup(tmp_path: Path):
    """Two pods running the same binary: two series, each with its container and pod, their sum
    the maps' total; the trace report names the same workloads."""
    pod_a = LAYOUTS[0][0]
    uid_b = "0a1b2c3d-0000-4111-8222-333344445555"
    pod_b = pod_a.replace(CID, CID2).replace(UID_, uid_b.replace("-", "_"))
    ids = make_tree(tmp_path, pod_a, pod_b)
    maps = FakeMaps()
    maps.stats(os.getpid(), "msg_zerocopy", "udp", comm="sender", cgroup=ids[pod_a], requests=5, copied=5, bytes=500)
    maps.stats(1, "msg_zerocopy", "udp", comm="sender", cgroup=ids[pod_b], requests=7, copied=7, bytes=700)
    c = ZctraceCollector(Session(tier="tracepoint", programs=[], bpf=maps),
                         ExportOptions(top_comms=10, cgroup_root=tmp_path), map_fills=lambda bpf: [])
    scrape(c)
    copied = {(s.labels["container_id"], s.labels["pod_uid"], s.labels["cgroup"], s.labels["comm"]): s.value
              for s in scrape(c)["zctrace_zerocopy_requests"] if s.labels["verdict"] == "copied"}
    assert copied == {(CID, UID, pod_a, "sender"): 5, (CID2, uid_b, pod_b, "sender"): 7}
    rep = model.build(snapshot.take(maps), "tracepoint", resolve=workloads.Resolver(tmp_path))
    doc = {p["pid"]: p for p in rep.to_json()["processes"]}
    assert (doc[os.getpid()]["container_id"], doc[os.getpid()]["pod_uid"], doc[os.getpid()]["cgroup"]) == (
        CID, UID, pod_a)
    assert doc[os.getpid()]["cgroup_id"] == ids[pod_a]


def test_labels_can_be_chosen(tmp_path: Path):
    ids = make_tree(tmp_path, LAYOUTS[0][0])
    maps = FakeMaps()
    maps.stats(os.getpid(), "msg_zerocopy", "udp", comm="sender", cgroup=ids[LAYOUTS[0][0]], requests=1, copied=1)
    c = ZctraceCollector(Session(tier="tracepoint", programs=[], bpf=maps),
                         ExportOptions(labels=("container_id",), cgroup_root=tmp_path), map_fills=lambda bpf: [])
    (sample, *_) = scrape(c)["zctrace_zerocopy_requests"]
    assert set(sample.labels) == {"verdict", "api", "proto", "container_id"}


def test_an_owner_gone_for_the_grace_period_leaves_and_frees_its_place():
    """An exited container keeps its final counts `grace` seconds, then its series go and a new
    one can be named; what it counted is never moved or lost while it is shown."""
    now = [0.0]
    f = Folder(top=1, grace=600, clock=lambda: now[0],
               owner_of=lambda row: Owner(row.comm, cgroup=f"/c{row.cgroup}"))
    a = StatsRow(10, "a", "msg_zerocopy", "udp", {"requests": 5, "bytes": 50}, 1)
    b = StatsRow(20, "b", "msg_zerocopy", "udp", {"requests": 1, "bytes": 1}, 2)
    f.update([a])
    f.update([a])  # then a's processes exit: their rows leave the maps
    now[0] = 599
    shown = f.update([b]).series
    assert {o.comm: c["requests"] for (o, _, _), c in shown.items()} == {"a": 5, OTHER: 0}
    now[0] = 600
    f.update([b])
    shown = f.update([b]).series  # b's request, sent while a was named, stays in `other`
    assert {o.comm: c["requests"] for (o, _, _), c in shown.items()} == {"b": 0, OTHER: 1}


def test_counts_of_a_series_dropped_before_a_scrape_showed_them_go_to_other():
    """A owner named for less than a scrape interval, then evicted (not among the biggest
    frozen): its increments were never shown (its series only ever showed its debut 0), so they
    go to `other`; summed increases over every series equal what was sent."""
    f = Folder(top=1)
    rows = lambda *specs: [StatsRow(pid, comm, "msg_zerocopy", "udp", {"requests": n, "bytes": b})  # noqa: E731
                           for pid, comm, n, b in specs]
    seen: dict = {}
    increase = 0

    def scrape(step):
        nonlocal increase
        f.fold(step)
        for key, c in f.view().series.items():
            increase += c["requests"] - seen.get(key, 0)
            seen[key] = c["requests"]

    scrape(rows((1, "b", 2, 250), (2, "a", 1, 100)))  # b named; a's first request counts in other
    scrape(rows((1, "b", 2, 250), (2, "a", 1, 100)))
    f.fold(rows((1, "b", 2, 250), (2, "a", 3, 300)))  # a named (b frozen) for one fold, no scrape...
    scrape(rows((1, "b", 2, 250), (2, "a", 3, 300), (3, "c", 4, 400)))  # ...then c, and a (200 B) evicted
    scrape(rows((1, "b", 2, 250), (2, "a", 3, 300), (3, "c", 4, 400)))
    assert increase == 2 + 3 + 4


def test_an_expired_owner_is_forgotten():
    now = [0.0]
    f = Folder(top=1, grace=10, clock=lambda: now[0])
    f.update([StatsRow(1, "a", "msg_zerocopy", "udp", {"requests": 1, "bytes": 1})])
    now[0] = 11
    f.update([StatsRow(2, "b", "msg_zerocopy", "udp", {"requests": 1, "bytes": 1})])
    assert {o.comm for o in f._volume} == {"b"} and all(k[0].comm != "a" for k in f._acc)
