"""`trace --interval`'s deltas (zctrace/stream.py) on Report.to_json() documents built from
hand-written maps, and the lines a Stream writes, on a hand-driven clock."""

from __future__ import annotations

import copy
import io
import json

from fakemaps import FakeMaps
from scenes import OTHER, SENDER, mixed

from zctrace import model, snapshot, stream


def doc(maps: FakeMaps) -> dict:
    return model.build(snapshot.take(maps), "tracepoint").to_json()


def earlier() -> FakeMaps:
    """What mixed() held before: only the sender's MSG_ZEROCOPY flow, with fewer requests, three
    of them undecided (mixed() has one)."""
    m = FakeMaps()
    m.stats(SENDER, "msg_zerocopy", "udp", comm="sender", cgroup=11, requests=4, bytes=4_000,
            copied=1, notifications=1, read_requests=1, completed_bytes=1_000)
    m.reason(SENDER, "msg_zerocopy", "udp", "no_sg", 1)
    return m


def by_pid(d: dict) -> dict[int, dict]:
    return {p["pid"]: p for p in d["processes"]}


def test_numbers_are_subtracted_per_process_and_flow_and_a_new_process_counts_from_zero():
    now, before = doc(mixed()), doc(earlier())
    d = stream.delta(now, before)
    sender, other = by_pid(d)[SENDER], by_pid(d)[OTHER]
    assert (sender["comm"], sender["cgroup_id"], sender["cgroup"]) == ("sender", 11, "")  # identifiers carried
    flows = {(f["api"], f["proto"]): f["counts"] for f in sender["flows"]}
    assert flows["msg_zerocopy", "udp"]["zc_requests"] == 10 - 4
    assert flows["msg_zerocopy", "udp"]["zerocopied"] == 6 - 0
    assert flows["msg_zerocopy", "udp"]["undecided"] == 1 - 3  # a gauge: decided in the interval
    assert flows["io_uring", "tcp"] == by_flow(by_pid(now)[SENDER])["io_uring", "tcp"]  # new flow: from 0
    assert other == by_pid(now)[OTHER]  # new process: all of it
    assert d["totals"]["zc_requests"] == now["totals"]["zc_requests"] - 4
    assert d["tier"] == "tracepoint"  # strings carried


def by_flow(proc: dict) -> dict[tuple[str, str], dict]:
    return {(f["api"], f["proto"]): f["counts"] for f in proc["flows"]}


def test_strings_added_to_a_process_are_carried_unchanged():
    """Fields another change adds to ProcessReport (cgroup path, container id, pod uid) need no
    change here: strings are carried as they are in the current report."""
    now, before = doc(mixed()), doc(earlier())
    for d in (now, before):
        for p in d["processes"]:
            p.update(cgroup_path="/kubepods.slice/pod-x", container_id="abc123", pod_uid="u-1")
    d = stream.delta(now, before)
    assert {(p["cgroup_path"], p["container_id"], p["pod_uid"]) for p in d["processes"]} == {
        ("/kubepods.slice/pod-x", "abc123", "u-1")}


def test_what_did_not_change_is_left_out_and_the_top_reason_is_the_intervals():
    now = doc(mixed())
    later = copy.deepcopy(now)
    sender = by_pid(later)[SENDER]
    msg = next(f["counts"] for f in sender["flows"] if f["api"] == "msg_zerocopy")
    for counts in (msg, sender["counts"], later["totals"]):
        counts["zc_requests"] += 5
        counts["copied"] += 5
        counts["copied_reasons"]["no_sg"] += 5
    d = stream.delta(later, now)
    (proc,) = d["processes"]  # OTHER did nothing in the interval
    assert proc["pid"] == SENDER and [(f["api"], f["proto"]) for f in proc["flows"]] == [("msg_zerocopy", "udp")]
    assert proc["counts"]["copied_reasons"] == {"no_sg": 5}  # local_delivery did not grow
    assert proc["counts"]["not_attempted_reasons"] == {}
    assert now["totals"]["top_reason"] == "so_zerocopy_unset"
    assert d["totals"]["top_reason"] == proc["counts"]["top_reason"] == "no_sg"
    assert stream.delta(now, now)["processes"] == []


def test_deltas_sum_to_the_final_report_gauges_included():
    """Summed over the intervals, every number gives the last report's (gauges too: earlier()'s
    undecided requests are decided later, a negative delta)."""
    docs = [doc(FakeMaps()), doc(earlier()), doc(mixed())]
    deltas = [stream.delta(docs[0], None)] + [stream.delta(b, a) for a, b in zip(docs, docs[1:])]
    final = docs[-1]["totals"]
    assert deltas[-1]["totals"]["undecided"] < 0
    for name in ("zc_requests", "bytes", "zerocopied", "copied", "undecided", "not_attempted", "pinned_bytes"):
        assert sum(d["totals"][name] for d in deltas) == final[name], name
    for pid, proc in by_pid(docs[-1]).items():
        assert sum(by_pid(d).get(pid, {"counts": {"zc_requests": 0}})["counts"]["zc_requests"]
                   for d in deltas) == proc["counts"]["zc_requests"]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_stream_writes_an_interval_per_boundary_then_the_last_one_and_the_report():
    clock, out = Clock(), io.StringIO()
    s = stream.Stream(1.0, out, None, clock=clock, wall=lambda: 1000 + clock.t)
    clock.t = 0.9
    assert not s.due()
    clock.t = 1.1
    assert s.due() and not s.due()
    s.emit(doc(earlier()))
    clock.t = 3.4  # a late sweep: one interval, up to now, not one per boundary missed
    assert s.due() and not s.due()
    s.emit(doc(mixed()))
    clock.t = 3.6
    assert not s.due()
    final = doc(mixed())
    s.finish(final)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["type"] for line in lines] == ["interval"] * 3 + ["report"]
    assert [(line["seq"], line["start"], line["end"]) for line in lines[:3]] == [
        (1, 1000.0, 1001.1), (2, 1001.1, 1003.4), (3, 1003.4, 1003.6)]
    assert [line["delta"]["totals"]["zc_requests"] for line in lines[:3]] == [4, 22 - 4, 0]
    assert lines[1]["cumulative"]["totals"]["zc_requests"] == 22
    assert {k: v for k, v in lines[3].items() if k != "type"} == final


def test_without_json_an_interval_is_one_human_line():
    note = io.StringIO()
    s = stream.Stream(1.0, None, note, clock=Clock(), wall=lambda: 0.0)
    s.finish(doc(mixed()))
    (line,) = note.getvalue().splitlines()
    assert line.startswith("zctrace: ") and ": 22 requests, 56.6 KiB: zerocopied 8, copied 7, unknown 5, " \
        "not_attempted 6; undecided +2; top reason so_zerocopy_unset" in line


def test_a_flows_sizes_in_an_interval_are_the_intervals():
    """A flow's size histogram: the interval's requests per bucket, and its quantiles from them."""
    m = FakeMaps()
    m.stats(SENDER, "msg_zerocopy", "udp", comm="sender", requests=10, bytes=10_000, size_4=10)
    before = model.build(snapshot.take(m), "tracepoint").to_json()
    m.stats(SENDER, "msg_zerocopy", "udp", comm="sender", requests=40, bytes=1_000_000, size_4=10, size_10=30)
    d = stream.delta(model.build(snapshot.take(m), "tracepoint").to_json(), before)
    (flow,) = d["processes"][0]["flows"]
    assert flow["sizes"]["count"] == 30 and flow["sizes"]["p50"] == 2 ** 16
    assert [(b["le"], b["count"]) for b in flow["sizes"]["buckets"] if b["count"]] == [(2 ** 16, 30)]
