"""Rendering a model.Report built from hand-written maps: the trace table and notes, the JSON
document, and top's screen."""

from __future__ import annotations

import json

import pytest
from fakemaps import FakeMaps
from scenes import OTHER, SENDER, mixed

from zctrace import cost, model, report, snapshot, top
from zctrace.probes import Session


def build(maps: FakeMaps, tier: str = "tracepoint") -> model.Report:
    return model.build(snapshot.take(maps), tier, probes=[{"program": "p", "target": "t", "attached": True}])


def test_the_table_has_a_row_per_flow_and_the_totals():
    lines = report.render(build(mixed())).splitlines()
    assert lines[0].split() == ["PID", "COMM", "WORKLOAD", "API", "PROTO", "REQUESTS", "BYTES", "ZEROCOPIED", "COPIED",
                                "UNKNOWN", "UNDECIDED", "NOT_ATTEMPTED", "VERDICT", "TOP", "REASON"]
    rows = {tuple(line.split()[:2] + line.split()[3:5]): line.split()[2:3] + line.split()[5:] for line in lines[1:4]}
    assert rows[(str(SENDER), "sender", "msg_zerocopy", "udp")] == ["-",
        "10", "9.8", "KiB", "6", "3", "0", "1", "4", "(so_zerocopy_unset)", "mixed", "so_zerocopy_unset"]
    assert rows[(str(SENDER), "sender", "io_uring", "tcp")] == ["-",
        "8", "31.2", "KiB", "2", "0", "5", "1", "0", "mixed", "-"]
    assert rows[(str(OTHER), "other", "msg_zerocopy", "tcp")] == ["-",
        "4", "15.6", "KiB", "0", "4", "0", "0", "2", "(eopnotsupp)", "mixed", "other"]
    assert lines[4].split() == ["TOTAL", "22", "56.6", "KiB", "8", "7", "5", "2", "6",
                                "(eopnotsupp,", "so_zerocopy_unset)", "mixed", "so_zerocopy_unset"]


def test_the_notes():
    text = report.render(build(mixed(kernel=True), "fentry"), verbose=True)
    why = text[text.index("why:"):].splitlines()[1:8]
    assert [line.split()[:2] for line in why[:2]] == [["so_zerocopy_unset", "4"], ["other", "3"]]
    assert "the receiver is on this host" in text  # local_delivery's advice
    assert "unknown: io_uring without IORING_SEND_ZC_REPORT_USAGE" in text
    assert "undecided: completions still in flight" in text
    assert "pinned: 4.9 KiB of zerocopy sends not completed yet" in text
    assert "error queue: 1 notified requests never read by the application" in text
    assert "sockets (most copied first):" in text
    assert "notification latency (msg_zerocopy, send to completion): p50 <= 16 us, p99 <= 1.0 ms (4 samples)" in text
    assert "requests per MSG_ZEROCOPY notification: p50 <= 2, p99 <= 4" in text
    assert "receive side (TCP_ZEROCOPY_RECEIVE):" in text
    assert "late copies by kernel call site" in text and "local_delivery" in text
    assert "lost (BPF maps full): socks_full 2 times, 3 requests, 2.9 KiB" in text


def test_the_tracepoint_tier_says_what_undecided_means_there():
    text = report.render(build(mixed()))
    assert "undecided: notifications the application has not read, or completions still in flight" in text
    assert "late copies by kernel call site" not in text  # not verbose, and no sites on this tier


def test_nothing_seen():
    lines = report.render(build(FakeMaps())).splitlines()
    assert lines[-2:] == ["no zerocopy sends seen", cost.NOT_MEASURED]


def test_json_document():
    doc = json.loads(json.dumps(build(mixed(kernel=True), "fentry").to_json()))
    assert doc["tier"] == "fentry"
    t = doc["totals"]
    assert {k: t[k] for k in ("zc_requests", "zerocopied", "copied", "unknown", "undecided", "not_attempted",
                              "pinned_bytes", "top_reason")} == {
        "zc_requests": 22, "zerocopied": 8, "copied": 7, "unknown": 5, "undecided": 2, "not_attempted": 6,
        "pinned_bytes": 5_000, "top_reason": "so_zerocopy_unset"}
    assert t["copied_reasons"] == {"local_delivery": 2, "no_sg": 1, "other": 3, "unknown": 1}
    proc = next(p for p in doc["processes"] if p["pid"] == OTHER)
    assert proc["counts"]["top_reason"] == "other" and proc["flows"][0]["counts"]["copied"] == 4
    assert doc["sockets"][0] == {"pid": OTHER, "proto": "tcp", "ino": 5002, "cgroup": 0, "netns": 0, "ifindex": 0,
                                 "requests": 4, "bytes": 16_000, "zerocopied": 0, "copied": 4}
    assert doc["lost"] == {"socks_full": {"events": 2, "requests": 3, "bytes": 3_000}}
    assert doc["kernel_events"] == {"copy_ubufs": {"count": 3, "bytes": 12_000}}
    assert doc["copy_sites"][1] == {"reason": "other", "stack": ["skb_copy_ubufs", "mystery_xmit.cold",
                                                                  "dev_hard_start_xmit"], "count": 1, "bytes": 4_000,
                                    "caller": "mystery_xmit"}
    assert doc["receive"] == [{"pid": OTHER, "comm": "other", "calls": 5, "mapped": 40_960, "copied": 100,
                               "skipped": 0, "errors": 1, "cgroup": 22}]
    assert doc["notification_latency"]["msg_zerocopy"]["count"] == 4
    assert doc["notification_ranges"]["p99"] == 4
    assert doc["probes"] == [{"program": "p", "target": "t", "attached": True}]
    assert doc["rings"] == []


def test_write_json(tmp_path, capsys):
    doc = build(mixed()).to_json()
    report.write_json(doc, str(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(doc))
    report.write_json({"a": 1}, "-")
    assert json.loads(capsys.readouterr().out) == {"a": 1}


@pytest.mark.parametrize("n,text", [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
                                    (1024 ** 2 - 1, "1024.0 KiB"), (1024 ** 2, "1.0 MiB"), (1024 ** 3, "1.0 GiB"),
                                    (5 * 1024 ** 4, "5120.0 GiB")])
def test_human_bytes(n, text):
    assert report.human_bytes(n) == text


def test_top_screen():
    frame = top.Frame(build(mixed()), {SENDER: 12.4}, at=0.0)
    lines = top.render(frame, 1.0)
    assert "2 processes" in lines[0]
    assert lines[1].split()[:3] == ["total", "requests", "22"]
    assert "zerocopied 29% copied 25% unknown 18% not_attempted 21% undecided 7%" in lines[1]
    rows = {line.split()[0]: line.split() for line in lines[4:6]}
    assert rows[str(OTHER)][:8] == [str(OTHER), "other", "-", "0", "4", "15.6", "KiB", "4"]  # most copied first
    assert rows[str(SENDER)][3] == "12"
    assert lines[4].split()[0] == str(OTHER)
    socks = lines[lines.index("sockets with the most copied requests:") + 2:]
    assert [s.split()[:4] for s in socks] == [[str(OTHER), "tcp", "5002", "-"], [str(SENDER), "udp", "5001", "#1"]]


def test_top_sampler_counts_since_start_and_rates():
    maps = mixed()
    sampler = top.Sampler(Session("tracepoint", [], bpf=maps), comm=None)
    first = sampler.take()
    maps.stats(OTHER, "msg_zerocopy", "tcp", comm="other", cgroup=22, requests=9, bytes=36_000, copied=9)
    second = sampler.take()
    assert (first.report.totals.zc_requests, second.report.totals.zc_requests) == (22, 27)
    assert second.rates[OTHER] > 0 and second.rates[SENDER] == 0


def test_the_cost_line_and_json():
    """What the probes cost, per request and against the traced command's CPU."""
    c = cost.Cost("--cost", requests=1000, programs=[cost.ProgramCost("raw_tracepoint:io_uring_complete", 2000, 180_000),
                                                  cost.ProgramCost("syscalls:sys_enter_sendmsg", 10, 20_000)],
                  cpu_seconds=0.02)
    doc = c.to_json()
    assert (doc["ns_per_request"], doc["runs_per_request"], doc["cpu_share"]) == (200, 2.01, 0.01)
    rep = build(mixed())
    rep.cost = doc
    text = report.render(rep)
    assert "tracer cost: 200 ns of BPF programs per request (2.0 runs of 100 ns, 1000 requests), 1.00% of " \
           "the traced command's 0.02 s of CPU" in text
    assert json.loads(json.dumps(rep.to_json()))["cost"]["programs"][0]["runs"] == 2000


def test_runs_the_kernel_skipped_are_lost_with_the_programs_that_missed():
    """recursion_misses of the loaded programs (BPF_OBJ_GET_INFO_BY_FD): the lost cause
    `recursion_misses`, in the text and in --json's "lost", with each program that missed."""
    maps = mixed(kernel=True)
    maps.program(b"kprobe__io_tx_ubuf_complete", 7)
    maps.program(b"tracepoint__syscalls__sys_enter_sendmsg", 2)
    maps.program(b"raw_tracepoint__io_uring_complete", 0)
    rep = build(maps, "kprobe")
    programs = {"kprobe:io_tx_ubuf_complete": 7, "syscalls:sys_enter_sendmsg": 2}
    assert rep.lost["recursion_misses"] == model.SkippedRuns(9, 0, 0, programs)
    text = report.render(rep)
    assert ("lost (runs the kernel skipped: another BPF program was running on the CPU): recursion_misses 9 runs "
            "(kprobe:io_tx_ubuf_complete 7, syscalls:sys_enter_sendmsg 2): a verdict or reason may be missing") in text
    assert "lost (BPF maps full): socks_full 2 times" in text
    assert "before 6.7" not in text
    doc = json.loads(json.dumps(rep.to_json()))
    assert doc["lost"] == {"socks_full": {"events": 2, "requests": 3, "bytes": 3_000},
                           "recursion_misses": {"events": 9, "requests": 0, "bytes": 0, "programs": programs}}
    assert doc["recursion_misses_counted"] is True


def test_runs_skipped_before_the_session_forgot_them_are_not_lost():
    """The kernel's recursion_misses count since a program was loaded and nothing resets them:
    a session that forgets them (Session.clear, forget_skipped_runs: tests' tier sessions, bench
    cells) leaves a baseline that snapshot.take subtracts, so only later skips are lost."""
    maps = mixed(kernel=True)
    maps.program(b"kprobe__io_tx_ubuf_complete", 7)
    maps.program(b"kprobe__skb_copy_ubufs", 2)
    maps.recursion_misses_base = {b"kprobe__io_tx_ubuf_complete": 7, b"kprobe__skb_copy_ubufs": 1}
    assert build(maps, "kprobe").lost["recursion_misses"].programs == {"kprobe:skb_copy_ubufs": 1}
    maps.recursion_misses_base = {b"kprobe__io_tx_ubuf_complete": 7, b"kprobe__skb_copy_ubufs": 2}
    assert "recursion_misses" not in build(maps, "kprobe").lost


def test_callback_runs_the_error_queue_gave_back_are_not_lost():
    """A skipped __msg_zerocopy_callback run whose ids the application then read: the verdicts
    came from the error queue (kernel event errqueue_verdict, in ids), so those runs are not
    lost; runs beyond them, and other programs' runs, still are (text, --json, exporter)."""
    maps = mixed(kernel=True)
    maps.program(b"kprobe____msg_zerocopy_callback", 5)
    maps.program(b"kprobe__skb_copy_ubufs", 2)
    maps.kevent("errqueue_verdict", 3, 3_000)
    rep = build(maps, "kprobe")
    assert rep.lost["recursion_misses"] == model.SkippedRuns(
        4, 0, 0, {"kprobe:__msg_zerocopy_callback": 2, "kprobe:skb_copy_ubufs": 2})
    assert ("verdicts from the error queue: 3 MSG_ZEROCOPY requests whose completion callback the kernel "
            "skipped") in report.render(rep)
    maps.kevent("errqueue_verdict", 5, 5_000)
    assert build(maps, "kprobe").lost["recursion_misses"].programs == {"kprobe:skb_copy_ubufs": 2}
    maps.program(b"kprobe__skb_copy_ubufs", 0)
    rep = build(maps, "kprobe")
    assert "recursion_misses" not in rep.lost and "lost (runs" not in report.render(rep)
    from zctrace.exporter.families import lost_events
    (events, _, _) = lost_events(snapshot.take(maps))
    assert {s.labels["cause"]: s.value for s in events.samples}["recursion_misses"] == 0


def test_skb_callback_runs_report_usage_gave_back_are_not_lost():
    """Skipped io_uring skb callback runs (6.1's io_tx_ubuf_callback, 6.12's io_tx_ubuf_complete)
    whose notifications' verdicts the kernel's REPORT_USAGE flags gave (kernel event
    report_usage_verdict, one a notification) are not lost; runs beyond them still are, and the
    MSG_ZEROCOPY callback's are not offset by them (text, exporter)."""
    maps = mixed(kernel=True)
    maps.program(b"kprobe__io_tx_ubuf_callback", 5)
    maps.program(b"kprobe____msg_zerocopy_callback", 2)
    maps.kevent("report_usage_verdict", 4, 0)
    rep = build(maps, "kprobe")
    assert rep.lost["recursion_misses"].programs == {"kprobe:__msg_zerocopy_callback": 2,
                                                     "kprobe:io_tx_ubuf_callback": 1}
    assert ("verdicts from the kernel's REPORT_USAGE flags: 4 io_uring notifications whose skb callback runs "
            "the kernel skipped (not lost)") in report.render(rep)
    maps.program(b"kprobe__io_tx_ubuf_callback", 4)
    maps.program(b"kprobe____msg_zerocopy_callback", 0)
    assert "recursion_misses" not in build(maps, "kprobe").lost
    from zctrace.exporter.families import lost_events
    (events, _, _) = lost_events(snapshot.take(maps))
    assert {s.labels["cause"]: s.value for s in events.samples}["recursion_misses"] == 0


def test_copies_the_kernel_calls_zero_copy_have_their_line():
    """Kernel event sw_gso_copy (skb_segment without SG): the report says the payload was copied
    although the kernel's verdict is zero-copy; without it, no such line."""
    maps = mixed(kernel=True)
    assert "copied although" not in report.render(build(maps, "fentry"))
    maps.kevent("sw_gso_copy", 139, 2_608_704)
    rep = build(maps, "fentry")
    assert rep.kernel_events["sw_gso_copy"] == model.KernelEvent(139, 2_608_704)
    assert ("copied although the kernel says zero-copy: 139 zerocopy packets (2.5 MiB) segmented in software "
            "without scatter-gather (software_gso") in report.render(rep)
    assert "  pid " not in report.render(rep).split("copied although")[1].split("\n", 2)[1]


def test_copies_the_kernel_calls_zero_copy_are_counted_for_their_sender():
    """The probes count a software-GSO copy in its sender's row (MSG_ZEROCOPY) or ring (io_uring):
    the flow carries it (report line, JSON, exporter series with the owner's labels), its
    requests keep the kernel's verdict."""
    from zctrace.exporter.families import software_gso
    from zctrace.exporter.fold import Folder
    maps = mixed(kernel=True)
    maps.kevent("sw_gso_copy", 139, 2_608_704)
    maps.stats(SENDER, "msg_zerocopy", "udp", comm="sender", cgroup=11, requests=10, bytes=10_000,
               zerocopied=6, copied=3, notifications=5, read_requests=8, completed_bytes=9_000,
               na_so_zerocopy_unset=4, sw_gso_copies=9, sw_gso_bytes=8_000)
    maps.ring(SENDER, "tcp", comm="sender", cgroup=11, requests=8, bytes=32_000, zerocopied=2, unreported=5,
              notifications=7, completed_bytes=28_000, sw_gso_copies=130, sw_gso_bytes=2_600_704)
    rep = build(maps, "fentry")
    flows = {(f.api, f.proto): f.counts for p in rep.processes for f in p.flows}
    assert (flows["msg_zerocopy", "udp"].sw_gso_copies, flows["msg_zerocopy", "udp"].sw_gso_bytes) == (9, 8_000)
    assert flows["msg_zerocopy", "udp"].zerocopied == 6  # the kernel's verdict stays
    assert (flows["io_uring", "tcp"].sw_gso_copies, flows["io_uring", "tcp"].sw_gso_bytes) == (130, 2_600_704)
    assert (rep.totals.sw_gso_copies, rep.totals.sw_gso_bytes) == (139, 2_608_704)
    doc = rep.to_json()
    assert doc["totals"]["sw_gso_bytes"] == 2_608_704
    text = report.render(rep)
    assert f"  pid {SENDER} sender msg_zerocopy/udp: 9 packets (7.8 KiB, 80 % of its bytes)" in text
    assert f"  pid {SENDER} sender io_uring/tcp: 130 packets (2.5 MiB" in text
    from zctrace.exporter.families import flow_rows
    folder = Folder(top=10)
    folder.update(flow_rows(rep))  # a new series shows 0 once (rate() sees its first increase)
    fam = software_gso(folder.update(flow_rows(rep)), [])
    got = {(s.labels["api"], s.labels["proto"]): s.value for s in fam.samples if s.name.endswith("_total")}
    assert {k: v for k, v in got.items() if v} == {("msg_zerocopy", "udp"): 8_000, ("io_uring", "tcp"): 2_600_704}


def test_no_skipped_run_is_no_lost_cause():
    maps = mixed(kernel=True)
    maps.program(b"kprobe__io_tx_ubuf_complete", 0)
    rep = build(maps, "kprobe")
    assert "recursion_misses" not in rep.lost
    assert "skipped" not in report.render(rep)


def test_a_kernel_before_6_7_cannot_count_skipped_runs(monkeypatch):
    assert [snapshot.counts_skipped_runs(r) for r in ("6.1.0-57-amd64", "6.6.30", "6.7.0", "6.12.118+deb12-amd64",
                                                      "7.0.1")] == [False, False, True, True, True]
    monkeypatch.setattr(snapshot, "counts_skipped_runs", lambda release=None: False)
    maps = mixed(kernel=True)
    maps.program(b"kfunc__io_tx_ubuf_complete", 3)  # fentry's own recursion: counted there too
    text = report.render(build(maps, "kprobe"))
    assert text.count("skipped runs: this kernel (before 6.7) does not count the runs of kprobe and tracepoint "
                      "programs it skips") == 1
    assert "recursion_misses 3 runs (kfunc:io_tx_ubuf_complete 3)" in text


def test_programs_are_named_by_their_event():
    from zctrace.bpfinfo import program_event
    assert [program_event(n) for n in (b"kprobe__io_tx_ubuf_complete", b"kfunc__io_notif_tw_complete",
                                       b"raw_tracepoint__io_uring_complete", b"tracepoint__syscalls__sys_enter_sendto",
                                       b"zc_chain_walk_raw")] == [
        "kprobe:io_tx_ubuf_complete", "kfunc:io_notif_tw_complete", "raw_tracepoint:io_uring_complete",
        "syscalls:sys_enter_sendto", "zc_chain_walk_raw"]
