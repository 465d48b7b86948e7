"""snapshot.take -> model.build from hand-written map contents (tests/unit/scenes.py): each
verdict, the reasons, pinned bytes and the side tables, without root or BPF."""

from __future__ import annotations

import pytest
from fakemaps import FakeMaps
from scenes import LOCAL, MYSTERY, OTHER, SENDER, mixed

from zctrace import model, snapshot


def build(maps: FakeMaps, tier: str = "tracepoint", **kw) -> model.Report:
    return model.build(snapshot.take(maps), tier, **kw)


def flow(rep: model.Report, pid: int, api: str, proto: str) -> model.Counts:
    (counts,) = [f.counts for p in rep.processes if p.pid == pid for f in p.flows if (f.api, f.proto) == (api, proto)]
    return counts


def test_the_snapshot_reads_every_map():
    snap = snapshot.take(mixed(kernel=True))
    assert [(r.pid, r.api, r.proto, r.counters["requests"]) for r in snap.rows] == sorted([
        (SENDER, "msg_zerocopy", "udp", 10), (SENDER, "io_uring", "tcp", 8),
        (OTHER, "msg_zerocopy", "tcp", 4), (OTHER, "io_uring", "udp", 0)])
    assert {(r.code, r.stack, r.requests) for r in snap.reasons if r.pid == OTHER} == {
        ("late_copy", MYSTERY, 3), ("unknown", (), 1)}
    assert snap.hists == {("latency", "msg_zerocopy"): {14: 3, 20: 1}, ("range", "msg_zerocopy"): {1: 4, 2: 1}}
    assert snap.lost["socks_full"] == (3, 3_000) and snap.errors["socks_full"] == 2
    assert snap.kevents["copy_ubufs"] == (3, 12_000)
    assert [(s.stack, s.count) for s in snap.copy_sites] == [(LOCAL, 2), (MYSTERY, 1)]
    assert [(r.pid, r.calls, r.mapped) for r in snap.receive] == [(OTHER, 5, 40_960)]


def test_each_verdict():
    rep = build(mixed())
    udp = flow(rep, SENDER, "msg_zerocopy", "udp")
    assert (udp.zc_requests, udp.zerocopied, udp.copied, udp.unknown, udp.undecided, udp.not_attempted) == (
        10, 6, 3, 0, 1, 4)
    ring = flow(rep, SENDER, "io_uring", "tcp")  # counted by the ring, not by zc_stats
    assert (ring.zc_requests, ring.zerocopied, ring.copied, ring.unknown, ring.undecided) == (8, 2, 0, 5, 1)
    t = rep.totals
    assert (t.zc_requests, t.bytes, t.zerocopied, t.copied, t.unknown, t.undecided, t.not_attempted,
            t.notifications) == (22, 58_000, 8, 7, 5, 2, 6, 14)
    assert t.verdicts() == {"zerocopied": 8, "copied": 7, "unknown": 5, "not_attempted": 6}


def test_unknown_is_a_completion_without_verdict_and_undecided_the_rest():
    """`unknown` counts what the probes marked unreported, never requests still in flight."""
    m = FakeMaps()
    m.stats(SENDER, "io_uring", "udp", requests=10, unreported=3, zerocopied=2)
    c = build(m).totals
    assert (c.unknown, c.undecided) == (3, 5)
    m.stats(SENDER, "io_uring", "udp", requests=10, unreported=3, zerocopied=7)
    c = build(m).totals
    assert (c.unknown, c.undecided, c.verdict) == (3, 0, "mixed")


@pytest.mark.parametrize("counters,verdict", [
    ({"requests": 3, "zerocopied": 3}, "zerocopied"), ({"requests": 3, "copied": 3}, "copied"),
    ({"requests": 3, "unreported": 3}, "unknown"), ({"requests": 3}, "undecided"),
    ({"na_eopnotsupp": 3}, "not_attempted"), ({"requests": 3, "zerocopied": 1, "copied": 1}, "mixed"),
    ({"requests": 3, "zerocopied": 2}, "zerocopied")])
def test_the_verdict_word_of_a_row(counters, verdict):
    m = FakeMaps()
    m.stats(SENDER, "msg_zerocopy", "udp", **counters)
    assert build(m).totals.verdict == verdict
    assert model.Counts().verdict == "-"


def test_requests_in_flight_do_not_make_a_run_mixed():
    """Every decided request zero-copied, 7 still in flight at the end: zerocopied, and says so."""
    m = FakeMaps()
    m.stats(SENDER, "io_uring", "udp", requests=107, zerocopied=100)
    t = build(m).totals
    assert (t.verdict, t.undecided) == ("zerocopied", 7)
    m.stats(SENDER, "io_uring", "udp", requests=7)
    assert build(m).totals.verdict == "undecided"


def test_cumulative_counts_read_back():
    """What the exporter folds (Counts.cumulative) reads back as the same counts, reasons included."""
    c = build(mixed()).totals
    back = model.Counts.from_cumulative(c.cumulative())
    assert back.verdicts() == c.verdicts() and back.copied_reasons == c.copied_reasons
    assert back.not_attempted_reasons == c.not_attempted_reasons
    assert (back.zc_requests, back.bytes, back.notifications) == (c.zc_requests, c.bytes, c.notifications)


def test_reasons_late_copies_classified_by_their_stack():
    rep = build(mixed())
    assert flow(rep, SENDER, "msg_zerocopy", "udp").copied_reasons == {"local_delivery": 2, "no_sg": 1}
    assert flow(rep, OTHER, "msg_zerocopy", "tcp").copied_reasons == {"other": 3, "unknown": 1}
    assert rep.totals.copied_reasons == {"local_delivery": 2, "no_sg": 1, "other": 3, "unknown": 1}
    assert model.reason_of(snapshot.ReasonRow(1, "io_uring", "udp", "late_copy", ("x", "dev_queue_xmit_nit"), 1)) \
        == "packet_tap"
    assert model.reason_of(snapshot.ReasonRow(1, "io_uring", "udp", "over_mtu", (), 1)) == "over_mtu"


def test_not_attempted_reasons_and_the_top_reason():
    rep = build(mixed())
    assert rep.totals.not_attempted_reasons == {"so_zerocopy_unset": 4, "eopnotsupp": 2}
    assert rep.totals.top_reason == "so_zerocopy_unset"
    assert flow(rep, OTHER, "msg_zerocopy", "tcp").top_reason == "other"
    assert flow(rep, SENDER, "io_uring", "tcp").top_reason == "-"


def test_a_row_without_requests_is_left_out():
    rep = build(mixed())
    assert [(f.api, f.proto) for p in rep.processes if p.pid == OTHER for f in p.flows] == [("msg_zerocopy", "tcp")]


@pytest.mark.parametrize("tier,pinned,unread", [("tracepoint", 4_000, 0), ("fentry", 5_000, 1), ("kprobe", 5_000, 1)])
def test_pinned_bytes_and_unread_by_tier(tier, pinned, unread):
    """io_uring: bytes without their notification CQE on every tier; MSG_ZEROCOPY: bytes not
    completed, seen on the kernel tiers only; unread notifications likewise."""
    t = build(mixed(kernel=tier != "tracepoint"), tier).totals
    assert (t.pinned_bytes, t.unread) == (pinned, unread)


def test_filters_by_comm_and_cgroup():
    assert [p.pid for p in build(mixed(), comm="other").processes] == [OTHER]
    rep = build(mixed(), cgroups={11})
    assert [p.pid for p in rep.processes] == [SENDER] and rep.receive == []
    assert rep.totals.copied_reasons == {"local_delivery": 2, "no_sg": 1}  # the other's reasons left out
    assert [s.pid for s in rep.sockets] == [SENDER]


def test_side_tables():
    rep = build(mixed(kernel=True), "fentry")
    assert [s.ino for s in rep.sockets] == [5002, 5001]  # most copied first
    assert rep.lost == {"socks_full": model.Lost(events=2, requests=3, bytes=3_000)}
    assert rep.kernel_events == {"copy_ubufs": model.KernelEvent(3, 12_000)}
    assert [(s.reason, s.count, s.bytes) for s in rep.copy_sites] == [("local_delivery", 2, 8_000),
                                                                      ("other", 1, 4_000)]
    assert rep.notification_latency["msg_zerocopy"].count == 4
    assert rep.notification_latency["msg_zerocopy"].quantile(0.5) == 2 ** 14 * 1e-9
    assert rep.notification_ranges.quantile(0.99) == 4


def test_a_map_missing_on_this_tier_is_empty():
    snap = snapshot.take(FakeMaps(kernel=False, rx=False))
    assert (snap.copy_sites, snap.receive, snap.rows) == ([], [], [])


def test_request_sizes_of_a_flow():
    """The probes' size counters (ZC_SIZE_k: [2^(k+5), 2^(k+6)) B) as the flow's histogram."""
    m = FakeMaps()
    m.stats(SENDER, "msg_zerocopy", "udp", requests=100, bytes=1_690_000, size_4=90, size_10=10)
    rep = build(m)
    sizes = rep.processes[0].flows[0].sizes
    assert sizes.buckets == [(1024.0, 90), (65536.0, 10)]  # 1000 B and 65000 B requests
    assert (sizes.quantile(0.5), sizes.quantile(0.95)) == (1024, 65536)
    assert rep.to_json()["processes"][0]["flows"][0]["sizes"]["count"] == 100
    m.stats(SENDER, "msg_zerocopy", "udp", requests=1)
    assert build(m).processes[0].flows[0].sizes is None  # no size counted: nothing said
