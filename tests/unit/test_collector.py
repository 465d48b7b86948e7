"""The exporter's collector on hand-written maps: its families, and its numbers against the
trace report's on the same snapshot (one verdict model: they agree by construction)."""

from __future__ import annotations

import pytest
from fakemaps import FakeMaps
from scenes import OTHER, SENDER, mixed

from zctrace import model, snapshot
from zctrace.exporter.collector import ExportOptions, ZctraceCollector
from zctrace.exporter.families import flow_rows
from zctrace.probes import Session, load_manifest

Series = dict[tuple[tuple[str, str], ...], float]


def collector(maps: FakeMaps, tier: str = "tracepoint") -> ZctraceCollector:
    loaded = [p for p in load_manifest() if p.name == "zc_kernel"] if tier != "tracepoint" else []
    return ZctraceCollector(Session(tier=tier, programs=loaded, bpf=maps), ExportOptions(top_comms=10),
                            map_fills=lambda bpf: [])


def scrape(c: ZctraceCollector) -> dict[str, Series]:
    """Family name -> {sorted labels: value} of one scrape."""
    out: dict[str, Series] = {}
    for family in c.collect():
        for s in family.samples:
            out.setdefault(family.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def total(series: Series, **match: str) -> float:
    return sum(v for labels, v in series.items() if match.items() <= dict(labels).items())


def test_a_new_series_shows_zero_once():
    c = collector(mixed())
    first, second = scrape(c), scrape(c)
    assert total(first["zctrace_zerocopy_requests"]) == 0
    assert total(second["zctrace_zerocopy_requests"], verdict="copied") == 7


def test_families_from_fake_maps():
    c = collector(mixed(kernel=True), "fentry")
    scrape(c)
    fams = scrape(c)
    req = fams["zctrace_zerocopy_requests"]
    assert {v: total(req, verdict=v, comm="sender") for v in model.VERDICTS} == {
        "zerocopied": 8, "copied": 3, "unknown": 5, "not_attempted": 4}
    assert total(req, verdict="unknown", api="io_uring", proto="tcp") == 5
    assert total(fams["zctrace_zerocopy_undecided_requests"], comm="sender") == 2
    assert total(fams["zctrace_zerocopy_pinned_bytes"]) == 5_000
    assert total(fams["zctrace_copy_fallbacks"], reason="local_delivery") == 2
    assert total(fams["zctrace_zerocopy_not_attempted"], reason="eopnotsupp", comm="other") == 2
    assert total(fams["zctrace_tcp_zerocopy_receive_bytes"], how="mapped") == 40_960
    assert total(fams["zctrace_lost_requests"], cause="socks_full") == 3
    assert total(fams["zctrace_lost_events"], cause="recursion_misses") == 0  # a series from the start
    assert total(fams["zctrace_kernel_events"], event="copy_ubufs") == 3
    assert total(fams["zctrace_late_copies"], caller="__netif_receive_skb_core") == 2
    assert fams["zctrace_scrape_errors"] == {(): 0}


def test_runs_the_kernel_skipped_are_lost_events():
    maps = mixed(kernel=True)
    maps.program(b"kprobe__io_tx_ubuf_complete", 7)
    maps.program(b"raw_tracepoint__io_uring_complete", 2)
    fams = scrape(collector(maps, "kprobe"))
    assert total(fams["zctrace_lost_events"], cause="recursion_misses") == 9
    assert total(fams["zctrace_lost_requests"], cause="recursion_misses") == 0  # which ones: not known


@pytest.mark.parametrize("tier", ["tracepoint", "fentry"])
def test_the_exporter_and_the_trace_report_agree(tier):
    """The same snapshot through model.build (trace --json) and through the collector: every
    verdict, reason, byte and gauge the same, per flow and in total."""
    maps = mixed(kernel=tier != "tracepoint")
    rep = model.build(snapshot.take(maps), tier)
    c = collector(maps, tier)
    scrape(c)
    fams = scrape(c)
    flows = [(p.comm, f.api, f.proto, f.counts) for p in rep.processes for f in p.flows]
    assert len(flows) == 3
    for comm, api, proto, counts in flows + [("", "", "", rep.totals)]:
        where = {k: v for k, v in (("comm", comm), ("api", api), ("proto", proto)) if v}
        for verdict, n in counts.verdicts().items():
            assert total(fams["zctrace_zerocopy_requests"], verdict=verdict, **where) == n, (where, verdict)
        gauges = {"zctrace_zerocopy_undecided_requests": counts.undecided,
                  "zctrace_zerocopy_pinned_bytes": counts.pinned_bytes, "zctrace_zerocopy_bytes": counts.bytes}
        for name, n in gauges.items():
            assert total(fams[name], **where) == n, (where, name)
        for reason, n in counts.copied_reasons.items():
            assert total(fams["zctrace_copy_fallbacks"], reason=reason, **where) == n, (where, reason)
        for reason, n in counts.not_attempted_reasons.items():
            assert total(fams["zctrace_zerocopy_not_attempted"], reason=reason, **where) == n, (where, reason)
        assert total(fams["zctrace_copy_fallbacks"], **where) == sum(counts.copied_reasons.values())
        assert total(fams["zctrace_zerocopy_not_attempted"], **where) == counts.not_attempted
    for comm, api in {(comm, api) for comm, api, _, _ in flows}:
        assert total(fams["zctrace_zerocopy_notifications"], comm=comm, api=api) == sum(
            f[3].notifications for f in flows if f[:2] == (comm, api))
    assert total(fams["zctrace_zerocopy_notifications"]) == rep.totals.notifications


def test_reasons_become_counters_of_their_row():
    """The exporter folds the model's flows: each flow's reasons are counters of its row."""
    rows = {(r.pid, r.api, r.proto): r.counters for r in flow_rows(model.build(snapshot.take(mixed()), "tracepoint"))}
    assert rows[(SENDER, "msg_zerocopy", "udp")]["copied:local_delivery"] == 2
    assert rows[(OTHER, "msg_zerocopy", "tcp")]["copied:other"] == 3
    assert rows[(SENDER, "msg_zerocopy", "udp")]["not_attempted:so_zerocopy_unset"] == 4
    assert not any(k.startswith("copied:") for k in rows[(SENDER, "io_uring", "tcp")])


def test_counters_grow_with_the_maps():
    maps = mixed()
    c = collector(maps)
    scrape(c)
    scrape(c)
    maps.stats(OTHER, "msg_zerocopy", "tcp", comm="other", cgroup=22, requests=9, bytes=36_000, copied=9,
               notifications=3, read_requests=9, completed_bytes=36_000, na_eopnotsupp=2)
    fams = scrape(c)
    assert total(fams["zctrace_zerocopy_requests"], verdict="copied", comm="other") == 9
    assert total(fams["zctrace_zerocopy_bytes"], comm="other") == 36_000


def test_a_map_that_cannot_be_read_costs_its_families_only():
    maps = mixed()
    del maps.tables[b"zc_stats"]
    c = collector(maps)
    fams = scrape(c)
    assert "zctrace_zerocopy_requests" not in fams
    assert fams["zctrace_scrape_errors"] == {(): 1}  # the snapshot
    assert fams["zctrace_build_info"]
