"""Advice (zctrace/advice.py) from hand-written maps and saved crossovers in a tmp state dir:
every code, the "not measured", "other kernel", "other path" and "path not known" cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakemaps import FakeMaps
from scenes import SENDER

from zctrace import advice, crossover, model, snapshot
from zctrace.bench.tables import Median, crossover_record
from zctrace.crossover import DevicePaths, NetPath, Saved
from zctrace.exporter import families
from zctrace.exporter.fold import Folder, Owner
from zctrace.hostfacts import HostFacts

KERNEL = "6.18.0-test"
NETNS, IFINDEX = 4026531840, 7
SINK = NetPath("veth", "veth", 65535, "zc1s0h", "pfifo limit 0")
LOOPBACK = NetPath("loopback", "loopback", 65536, "lo")
# CPU us per request: copy, msg_zc/32, uring, zc/8 -- zerocopy ahead from 8000 B on.
LADDER = {1000: (1.4, 2.0, 1.6, 2.1), 4000: (2.0, 2.4, 2.2, 2.5), 8000: (3.0, 2.5, 3.1, 2.6),
          65000: (20.0, 9.0, 21.0, 9.5)}


def save(state: Path, target: str, path: NetPath, kernel: str = KERNEL, copied: bool = False,
         ladder: dict = LADDER) -> dict:
    """A measurement as the crossover suite saves it (tables.crossover_record on medians)."""
    zc = "copied" if copied else "zerocopied"
    by_size = {s: {"copy": Median(c / 1e6, 1e5, "-", 3), "msg_zc/32": Median(m / 1e6, 1e5, zc, 3),
                   "uring": Median(u / 1e6, 1e5, "-", 3), "zc/8": Median(z / 1e6, 1e5, zc, 3)}
               for s, (c, m, u, z) in ladder.items()}
    rec = crossover_record(target, "udp", by_size, path, {"kernel": kernel, "date": "2026-12-06T10:00:00+0000",
                                                          "engine": "c", "version": "0.1.0"}, {})
    crossover.save(rec, state)
    return rec


def sender(size: int, api: str = "msg_zerocopy", copied_reason: str | None = None, netns: int = NETNS,
           **counters: int) -> FakeMaps:
    """One process sending 1000 requests of `size` B, zero-copied (or copied for `copied_reason`)."""
    m = FakeMaps()
    n = 1000
    verdict = {"copied": n} if copied_reason else {"zerocopied": n}
    if api == "io_uring":
        m.ring(SENDER, "udp", comm="sender", requests=n, bytes=n * size, notifications=n, completed_bytes=n * size,
               **verdict, **counters)
    else:
        m.stats(SENDER, api, "udp", comm="sender", requests=n, bytes=n * size, notifications=n // 32,
                read_requests=n, completed_bytes=n * size, **verdict, **counters)
        m.sock(SENDER, "udp", 9001, requests=n, zerocopied=0 if copied_reason else n,
               copied=n if copied_reason else 0, nbytes=n * size, netns=netns, ifindex=IFINDEX)
    if copied_reason:
        m.reason(SENDER, api, "udp", copied_reason, n)
    return m


def advise(maps: FakeMaps, state: Path, path: NetPath | None = SINK, seconds: float | None = None,
           facts: HostFacts | None = None, sizes: model.Histogram | None = None,
           tier: str = "tracepoint") -> model.Report:
    rep = model.build(snapshot.take(maps), tier)
    if sizes is not None:
        rep.processes[0].flows[0].sizes = sizes
    paths = DevicePaths(lookup=lambda ifindex: path if ifindex == IFINDEX else None, netns=NETNS)
    facts = facts or HostFacts(kernel=KERNEL, optmem_max=131072, memlock=lambda pid: (8 << 20, 8 << 20),
                               ipc_lock=lambda pid: False)
    return advice.Advisor(Saved.load(state), paths, facts).advise(rep, seconds)


def codes(rep: model.Report) -> list[str]:
    return [a.code for a in rep.processes[0].advice]


def only(rep: model.Report, code: str) -> advice.Advice:
    (a,) = [a for a in rep.processes[0].advice if a.code == code]
    return a


def test_below_the_crossover_on_the_measured_path(tmp_path):
    save(tmp_path, "sink", SINK)
    a = only(advise(sender(1000), tmp_path), "below_crossover")
    ev = a.evidence
    assert ev["crossover"]["size"] == 8000 and ev["crossover"]["baseline"] == "copy"
    assert ev["sizes"] == "mean" and ev["mean"] == 1000
    assert ev["measured"]["size"] == 1000
    assert (ev["measured"]["zerocopy_cpu_us_per_request"], ev["measured"]["baseline_cpu_us_per_request"]) == (2.0, 1.4)
    assert ev["path"]["kind"] == "veth" and ev["measurement"]["target"] == "sink"
    assert "8000 B" in a.text and "copy would cost less CPU" in a.text


def test_above_the_crossover_gets_no_size_advice(tmp_path):
    save(tmp_path, "sink", SINK)
    assert codes(advise(sender(65000), tmp_path)) == []


def test_never_ahead_means_every_size_is_below(tmp_path):
    behind = {s: (c, c * 1.3, u, u * 1.3) for s, (c, _, u, _) in LADDER.items()}
    save(tmp_path, "sink", SINK, ladder=behind)
    a = only(advise(sender(65000), tmp_path), "below_crossover")
    assert a.evidence["crossover"] == {"size": None, "never_up_to": 65000, "baseline": "copy",
                                       "by": "sender CPU per request"}


def test_the_size_histogram_when_the_probes_keep_one(tmp_path):
    """Flow.sizes: percentiles, and the share of bytes below the crossover decides."""
    save(tmp_path, "sink", SINK)
    small = model.Histogram.from_slots({10: 900, 17: 2})  # 900 x [512, 1024) B, 2 x [64, 128) KiB
    a = only(advise(sender(1000), tmp_path, sizes=small), "below_crossover")
    assert a.evidence["sizes"] == "histogram" and a.evidence["p50"] == 1024
    assert 0.5 < a.evidence["bytes_below_share"] < 1
    big = model.Histogram.from_slots({10: 100, 17: 100})  # most bytes in the 64 KiB requests
    assert codes(advise(sender(1000), tmp_path, sizes=big)) == []


def test_a_bucket_that_straddles_the_crossover_is_not_below_it(tmp_path):
    """65000 B requests fall in [32 KiB, 64 KiB): with the crossover at 65000 B they may be at
    it, so no size advice (the histogram cannot tell 33 KB from 65 KB)."""
    late = {**LADDER, 8000: (3.0, 3.5, 3.1, 3.6)}  # zerocopy ahead only at 65000 B: the crossover
    assert save(tmp_path, "sink", SINK, ladder=late)["crossovers"]["msg_zerocopy"]["vs"]["copy"]["crossover"] == 65000
    at = model.Histogram.from_slots({16: 500})
    assert "below_crossover" not in codes(advise(sender(65000), tmp_path, sizes=at))


def test_nothing_measured_names_the_command(tmp_path):
    a = only(advise(sender(1000), tmp_path), "crossover_not_measured")
    assert a.evidence["command"] == "zctrace bench --suite crossover --target sink --proto udp"
    assert "zctrace bench --suite crossover --target sink" in a.text and "Not known" in a.text
    assert "below_crossover" not in codes(advise(sender(1000), tmp_path))


def test_a_measurement_from_another_kernel_is_not_used(tmp_path):
    save(tmp_path, "sink", SINK, kernel="6.1.0-old")
    a = only(advise(sender(1000), tmp_path), "crossover_not_measured")
    (ignored,) = a.evidence["ignored"]
    assert "kernel 6.1.0-old" in ignored["why"] and KERNEL in ignored["why"]
    assert "6.1.0-old" in a.text


def test_a_measurement_on_another_path_is_not_used(tmp_path):
    save(tmp_path, "ADDR", NetPath("device", "virtio_net", 1500, "eth0"))
    a = only(advise(sender(1000), tmp_path), "crossover_not_measured")
    assert "MTU 1500" in a.evidence["ignored"][0]["why"]
    assert a.evidence["path"]["mtu"] == 65535


def test_a_socket_in_another_netns_has_no_known_path(tmp_path):
    save(tmp_path, "sink", SINK)
    a = only(advise(sender(1000, netns=NETNS + 1), tmp_path), "crossover_not_measured")
    assert "another network namespace" in a.evidence["why"] and a.evidence["path"] is None


def test_io_uring_path_is_not_known_and_nothing_is_applied(tmp_path):
    save(tmp_path, "sink", SINK)
    a = only(advise(sender(1000, api="io_uring"), tmp_path), "crossover_not_measured")
    assert "path not known" in a.evidence["why"] and "not applied" in a.text
    assert a.evidence["measured_elsewhere"][0]["crossover"] == 8000


def test_always_copied_with_the_cost_measured_on_loopback(tmp_path):
    save(tmp_path, "loopback", LOOPBACK, copied=True)
    rep = advise(sender(1000, copied_reason="local_delivery"), tmp_path, path=LOOPBACK)
    a = only(rep, "always_copied")
    assert a.evidence["reason"] == "local_delivery" and a.evidence["cost"]["size"] == 1000
    assert a.evidence["cost"]["extra_cpu_us_per_request"] == pytest.approx(0.6)
    assert "+0.60 us" in a.text
    assert codes(rep) == ["always_copied"]  # no size advice for a path that copies


def test_always_copied_not_measured_names_the_loopback_command(tmp_path):
    save(tmp_path, "sink", SINK)  # not a path that copies
    a = only(advise(sender(1000, copied_reason="local_delivery"), tmp_path, path=LOOPBACK), "always_copied")
    assert a.evidence["cost"] is None
    assert a.evidence["command"] == "zctrace bench --suite crossover --target loopback --proto udp"


@pytest.mark.parametrize("api", ["msg_zerocopy", "io_uring"])
def test_software_gso_copies_are_always_copied_although_the_kernel_says_zero_copy(tmp_path, api):
    """Requests the kernel called zero-copy whose bytes software segmentation copied (WireGuard):
    always_copied with reason software_gso, read from the flow's sw_gso counters; a flow where a
    few skbs were so copied gets the size advice as before."""
    save(tmp_path, "sink", SINK)
    rep = advise(sender(65000, api=api, sw_gso_copies=2600, sw_gso_bytes=63_000_000), tmp_path, tier="fentry")
    a = only(rep, "always_copied")
    assert (a.evidence["reason"], a.evidence["copied_bytes"], a.evidence["bytes"]) == ("software_gso", 63_000_000,
                                                                                      65_000_000)
    assert a.evidence["cost"] is None and "97 %" in a.text and "software_gso" in a.text
    assert codes(rep) == ["always_copied"]
    few = advise(sender(65000, api=api, sw_gso_copies=3, sw_gso_bytes=190_000), tmp_path, tier="fentry")
    assert "always_copied" not in codes(few)


def test_a_copy_reason_of_the_sender_is_not_always_copied(tmp_path):
    assert "always_copied" not in codes(advise(sender(1000, copied_reason="tx_timestamp"), tmp_path))


@pytest.mark.parametrize("reason,expect", [
    ("na_enobufs_optmem", "net.core.optmem_max=1048576"),
    ("na_enobufs_memlock", "LimitMEMLOCK"),
    ("na_so_zerocopy_unset", "SO_ZEROCOPY"),
])
def test_fixable_not_attempted(tmp_path, reason, expect):
    a = only(advise(sender(1000, **{reason: 50}), tmp_path), "fixable_not_attempted")
    assert expect in a.text and a.evidence["requests"] == 50
    if reason == "na_enobufs_optmem":
        assert a.evidence["optmem_max"] == 131072
    if reason == "na_enobufs_memlock":
        assert a.evidence["rlimit_memlock"] == {"soft": 8 << 20, "hard": 8 << 20}


def test_eopnotsupp_is_not_fixable_by_a_setting(tmp_path):
    assert "fixable_not_attempted" not in codes(advise(sender(1000, na_eopnotsupp=5), tmp_path))


def test_notifications_late_exhaust_optmem(tmp_path):
    m = sender(1000)
    m.hist("latency", "msg_zerocopy", {27: 100})  # ~67 ms
    small = HostFacts(kernel=KERNEL, optmem_max=20480, memlock=lambda pid: None, ipc_lock=lambda pid: False)
    a = only(advise(m, tmp_path, seconds=0.1, facts=small, tier="fentry"), "notifications_late")  # 10,000 req/s
    ev = a.evidence
    assert ev["limit"] == "optmem_max" and ev["in_flight_per_socket"] == pytest.approx(10_000 * 2 ** 27 / 1e9, rel=1e-3)
    assert ev["optmem_needed_estimate"] > 20480 and "arithmetic" in ev
    assert "notifications_late" not in codes(advise(m, tmp_path, seconds=1000.0, facts=small, tier="fentry"))
    assert "notifications_late" not in codes(advise(m, tmp_path, seconds=None, facts=small, tier="fentry"))  # no rate
    # The tracepoint tier times MSG_ZEROCOPY sends to the application's read, not to the release: no claim.
    assert "notifications_late" not in codes(advise(m, tmp_path, seconds=0.1, facts=small))


def test_notifications_late_exhaust_memlock_unless_cap_ipc_lock(tmp_path):
    m = sender(65000, api="io_uring")
    m.hist("latency", "io_uring", {27: 100})
    tight = HostFacts(kernel=KERNEL, optmem_max=None, memlock=lambda pid: (1 << 20, 1 << 20), ipc_lock=lambda pid: False)
    a = only(advise(m, tmp_path, seconds=1.0, facts=tight), "notifications_late")
    assert a.evidence["limit"] == "rlimit_memlock" and a.evidence["pinned_estimate"] >= 1 << 19
    locked = HostFacts(kernel=KERNEL, optmem_max=None, memlock=lambda pid: (1 << 20, 1 << 20), ipc_lock=lambda pid: True)
    assert "notifications_late" not in codes(advise(m, tmp_path, seconds=1.0, facts=locked))


def test_advice_in_the_json_at_the_totals_and_per_process(tmp_path):
    save(tmp_path, "sink", SINK)
    doc = json.loads(json.dumps(advise(sender(1000, na_so_zerocopy_unset=3), tmp_path).to_json()))
    (proc,) = doc["processes"]
    assert {a["code"] for a in proc["advice"]} == {"below_crossover", "fixable_not_attempted"}
    assert all(set(a) == {"code", "text", "evidence"} for a in proc["advice"])
    assert [a["code"] for a in doc["totals"]["advice"]] == ["below_crossover", "fixable_not_attempted"]
    assert doc["totals"]["advice"][0]["evidence"]["pids"] == [SENDER]


def test_an_unreadable_saved_file_is_said(tmp_path):
    (tmp_path / "crossover-sink-udp.json").write_text("{not json")
    a = only(advise(sender(1000), tmp_path), "crossover_not_measured")
    assert a.evidence["unreadable"][0]["file"].endswith("crossover-sink-udp.json")


def test_exporter_gauge_one_per_code_and_owner(tmp_path):
    rep = advise(sender(1000, na_so_zerocopy_unset=3), tmp_path)
    owner_of = lambda row: Owner(row.comm)  # noqa: E731
    by_owner = families.advice_by_owner(rep, owner_of)
    assert by_owner == {Owner("sender"): {"crossover_not_measured", "fixable_not_attempted"}}
    folded = Folder(top=5, owner_of=owner_of).update(families.flow_rows(rep))
    fam = families.advice(by_owner, folded, ["comm"])
    assert sorted((s.labels["code"], s.labels["comm"], s.value) for s in fam.samples) == [
        ("crossover_not_measured", "sender", 1), ("fixable_not_attempted", "sender", 1)]
    folded = Folder(top=0, owner_of=owner_of).update(families.flow_rows(rep))  # nobody named: `other`
    assert {s.labels["comm"] for s in families.advice(by_owner, folded, ["comm"]).samples} == {"other"}
    assert families.advice({Owner("gone"): {"always_copied"}}, folded, ["comm"]).samples == []  # folder forgot it


def test_trace_text_and_top_show_the_advice(tmp_path):
    from zctrace import report, top
    save(tmp_path, "sink", SINK)
    rep = advise(sender(1000), tmp_path)
    text = report.render(rep)
    assert f"advice (docs/advice.md):\n  pid {SENDER} sender [below_crossover] " in text
    lines = top.render(top.Frame(rep, {}, 0.0), 1.0)
    head = next(line for line in lines if line.startswith("PID"))
    row = next(line for line in lines if line.startswith(str(SENDER)))
    assert head.rstrip().endswith("ADVICE") and row.rstrip().endswith("below_crossover")
