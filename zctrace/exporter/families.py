"""The metric families the collector serves, one function each, from the model's report (the
per-process ones through the folder: zctrace/exporter/fold.py) or from the snapshot (latency,
lost events, kernel events). Process labels are the owner's values of the exported labels."""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from .. import model, snapshot
from ..model import Counts
from .fold import Debut, Folded, Owner

# Latency buckets: log2 slot s of the probes holds [2^(s-1), 2^s) ns; export 1 us .. 17 s.
LATENCY_SLOTS = range(10, 35)


# Per-process families ---------------------------------------------------------------------------

def flow_rows(rep: model.Report) -> list[snapshot.StatsRow]:
    """The report's flows as rows the folder folds: each flow's cumulative counts
    (model.Counts.cumulative: verdicts, reasons, bytes, notifications), keyed by its process."""
    return [snapshot.StatsRow(p.pid, p.comm, f.api, f.proto, f.counts.cumulative(), p.cgroup)
            for p in rep.processes for f in p.flows]


def _process_values(owner: Owner, labels: list[str]) -> list[str]:
    return [getattr(owner, name) for name in labels]


def _each(folded: Folded) -> Iterable[tuple[Owner, str, str, dict[str, int]]]:
    for (owner, api, proto), c in sorted(folded.series.items()):
        yield owner, api, proto, c


def requests(folded: Folded, labels: list[str]) -> Metric:
    fam = CounterMetricFamily(
        "zctrace_zerocopy_requests",
        "Zerocopy send requests by the kernel's verdict (docs/verdicts.md): zerocopied, copied, unknown "
        "(completed without a verdict on this tier: io_uring without REPORT_USAGE), not_attempted (the "
        "kernel never tried: see zctrace_zerocopy_not_attempted_total). Requests awaiting a verdict are "
        "in zctrace_zerocopy_undecided_requests.",
        labels=["verdict", "api", "proto"] + labels)
    for owner, api, proto, c in _each(folded):
        for verdict, n in Counts.from_cumulative(c).verdicts().items():
            fam.add_metric([verdict, api, proto] + _process_values(owner, labels), n)
    return fam


def not_attempted(folded: Folded, labels: list[str]) -> Metric:
    fam = CounterMetricFamily("zctrace_zerocopy_not_attempted",
                              "Zerocopy sends the kernel silently (or with an error) did as plain sends, by reason.",
                              labels=["reason", "api", "proto"] + labels)
    for owner, api, proto, c in _each(folded):
        reasons = Counts.from_cumulative(c).not_attempted_reasons
        for reason in model.NOT_ATTEMPTED_COUNTERS.values():
            fam.add_metric([reason, api, proto] + _process_values(owner, labels), reasons.get(reason, 0))
    return fam


def sent_bytes(folded: Folded, labels: list[str]) -> Metric:
    fam = CounterMetricFamily("zctrace_zerocopy_bytes", "Bytes sent by zerocopy send requests.",
                              labels=["api", "proto"] + labels)
    for owner, api, proto, c in _each(folded):
        fam.add_metric([api, proto] + _process_values(owner, labels), Counts.from_cumulative(c).bytes)
    return fam


def notifications(folded: Folded, labels: list[str]) -> Metric:
    fam = CounterMetricFamily("zctrace_zerocopy_notifications",
                              "Completion notifications (MSG_ZEROCOPY error-queue ranges, io_uring "
                              "notification CQEs); one may cover many requests, and a failed io_uring "
                              "send is notified too (no request, no verdict).", labels=["api"] + labels)
    total: dict[tuple[str, ...], int] = {}
    for owner, api, _, c in _each(folded):
        key = (api, *_process_values(owner, labels))
        total[key] = total.get(key, 0) + Counts.from_cumulative(c).notifications
    for key, n in total.items():
        fam.add_metric(list(key), n)
    return fam


def copy_fallbacks(folded: Folded, labels: list[str]) -> Metric:
    fam = CounterMetricFamily("zctrace_copy_fallbacks",
                              "Zerocopy requests the kernel copied after all, by the reason the probes found "
                              "(zctrace/reasons.py; `unknown`: this tier saw no evidence).",
                              labels=["reason", "api", "proto"] + labels)
    for owner, api, proto, c in _each(folded):
        for reason, n in sorted(Counts.from_cumulative(c).copied_reasons.items()):
            fam.add_metric([reason, api, proto] + _process_values(owner, labels), n)
    return fam


def software_gso(folded: Folded, labels: list[str]) -> Metric:
    fam = CounterMetricFamily(
        "zctrace_software_gso_copied_bytes",
        "Payload bytes of zerocopy sends that skb_segment copied without scatter-gather (software_gso: "
        "WireGuard, a device without SG after GSO; fentry/kprobe tiers): their requests count as "
        "zerocopied, as the kernel's notifications say, but the pages were copied.",
        labels=["api", "proto"] + labels)
    for owner, api, proto, c in _each(folded):
        fam.add_metric([api, proto] + _process_values(owner, labels), Counts.from_cumulative(c).sw_gso_bytes)
    return fam


def undecided(labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily("zctrace_zerocopy_undecided_requests",
                             "Zerocopy requests without a verdict yet: completions in flight, or (tracepoint "
                             "tier) notifications the application has not read.",
                             labels=["api", "proto"] + labels)


def pinned(labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily("zctrace_zerocopy_pinned_bytes",
                             "Bytes of zerocopy requests not completed yet: user pages the kernel still holds "
                             "(io_uring: notification CQE not posted; MSG_ZEROCOPY: completion not run, seen "
                             "on the fentry/kprobe tiers only, else 0).",
                             labels=["api", "proto"] + labels)


def flow_gauge(fam: GaugeMetricFamily, rep: model.Report, folded: Folded,
                owner_of: Callable[[snapshot.StatsRow], Owner], labels: list[str],
                value: Callable[[Counts], int]) -> Metric:
    """A gauge of the report's flows summed per exported series (zeros included)."""
    now: dict[tuple[str, ...], int] = {}
    for row, flow in zip(flow_rows(rep), (f for p in rep.processes for f in p.flows)):
        key = (row.api, row.proto, *_process_values(folded.label_of[owner_of(row)], labels))
        now[key] = now.get(key, 0) + value(flow.counts)
    for owner, api, proto, _ in _each(folded):
        now.setdefault((api, proto, *_process_values(owner, labels)), 0)
    for key, n in sorted(now.items()):
        fam.add_metric(list(key), n)
    return fam


def advice_by_owner(rep: model.Report, owner_of: Callable[[snapshot.StatsRow], Owner]) -> dict[Owner, set[str]]:
    """The advice codes (docs/advice.md) of the report's processes, per owner."""
    out: dict[Owner, set[str]] = {}
    for p in rep.processes:
        owner = owner_of(snapshot.StatsRow(p.pid, p.comm, "", "", {}, p.cgroup))
        out.setdefault(owner, set()).update(a.code for a in p.advice)
    return out


def advice(by_owner: dict[Owner, set[str]], folded: Folded, labels: list[str]) -> Metric:
    """1 per advice code and exported owner: an owner the folder names under its own labels, the
    others as `other` (the folder's owners: the series stay bounded like the others); owners the
    folder forgot (their grace expired) are left out."""
    fam = GaugeMetricFamily("zctrace_advice", "Advice for a workload (docs/advice.md), 1 while its "
                            "processes' last report has it: below_crossover, crossover_not_measured, "
                            "always_copied, fixable_not_attempted, notifications_late. zctrace trace --json "
                            "has the evidence.", labels=["code"] + labels)
    keys = {(code, *_process_values(folded.label_of[owner], labels))
            for owner, codes in by_owner.items() if owner in folded.label_of for code in codes}
    for key in sorted(keys):
        fam.add_metric(list(key), 1)
    return fam


def receive_rows(rep: model.Report) -> list[snapshot.StatsRow]:
    """TCP_ZEROCOPY_RECEIVE results per process as rows the folder ranks (by bytes received)."""
    return [snapshot.StatsRow(r.pid, r.comm, "tcp_zerocopy_receive", "tcp", {
        "bytes": r.mapped + r.copied + r.skipped, "ok": r.calls - r.errors, "error": r.errors,
        "mapped": r.mapped, "copied": r.copied, "skipped": r.skipped}, r.cgroup) for r in rep.receive]


def zerocopy_receive(folded: Folded, labels: list[str]) -> list[Metric]:
    calls = CounterMetricFamily("zctrace_tcp_zerocopy_receive_calls",
                                "getsockopt(TCP_ZEROCOPY_RECEIVE) calls, by result (ok or error).",
                                labels=["result"] + labels)
    received = CounterMetricFamily(
        "zctrace_tcp_zerocopy_receive_bytes",
        "Bytes TCP_ZEROCOPY_RECEIVE handed over, by how: mapped (pages mapped into the application, "
        "zero-copy), copied (into the copy buffer), skipped (recv_skip_hint: left for a copying recv()).",
        labels=["how"] + labels)
    for owner, _, _, c in _each(folded):
        values = _process_values(owner, labels)
        for result in ("ok", "error"):
            calls.add_metric([result] + values, c.get(result, 0))
        for how in ("mapped", "copied", "skipped"):
            received.add_metric([how] + values, c.get(how, 0))
    return [calls, received]


def unreaped_cqes(rings: list[snapshot.RingRow], rep: model.Report, folded: Folded,
                  owner_of: Callable[[snapshot.StatsRow], Owner], labels: list[str]) -> list[Metric]:
    """CQEs the kernel posted that the application has not reaped yet, in the rings of the
    processes that sent io_uring zerocopy requests (from their /proc fdinfo at scrape time)."""
    pending = GaugeMetricFamily("zctrace_io_uring_unreaped_cqes",
                                "CQEs (completions and zerocopy notifications alike) posted to the CQ rings "
                                "of io_uring zerocopy senders and not consumed by the application yet.",
                                labels=labels)
    overflow = GaugeMetricFamily("zctrace_io_uring_overflowed_cqes",
                                 "CQEs of io_uring zerocopy senders waiting in the kernel's overflow list "
                                 "because their CQ ring was full.", labels=labels)
    row_of = {row.pid: row for row in flow_rows(rep) if row.api == "io_uring"}
    now: dict[tuple[str, ...], tuple[int, int]] = {}
    for ring in rings:
        row = row_of.get(ring.pid)
        if row is None:  # not in scope (--cgroup), or its row was lost
            continue
        key = tuple(_process_values(folded.label_of[owner_of(row)], labels))
        p, o = now.get(key, (0, 0))
        now[key] = (p + ring.cq_pending, o + ring.cq_overflow)
    for key, (p, o) in sorted(now.items()):
        pending.add_metric(list(key), p)
        overflow.add_metric(list(key), o)
    return [pending, overflow]


def notification_latency(snap: snapshot.Snapshot, debut: Debut) -> Metric:
    fam = HistogramMetricFamily(
        "zctrace_notification_latency_seconds",
        "Time from a zerocopy send to its completion notification (fentry/kprobe), or to the "
        "application reading it (tracepoint tier: MSG_ZEROCOPY read, io_uring CQE); one send in "
        "--latency-every is timed.", labels=["api"])
    for (hist, api), slots in sorted(snap.hists.items()):
        if hist != "latency":
            continue
        buckets = [(floatToGoString(2 ** slot / 1e9), sum(n for s, n in slots.items() if s <= slot))
                   for slot in LATENCY_SLOTS] + [("+Inf", sum(slots.values()))]
        total = snap.hist_sums.get((hist, api))
        fam.add_metric([api], [(le, debut.value(("latency", api, le), n)) for le, n in buckets],
                       None if total is None else debut.value(("latency_sum", api), total / 1e9))
    return fam


def lost_events(snap: snapshot.Snapshot) -> list[Metric]:
    causes = ("(stats_full: a new process, socks_full: a new socket, reasons_full: a copy reason, "
              "rings_full: a new io_uring instance, notifs_full: an io_uring notification's flags), "
              "or runs of the probe programs the kernel skipped (recursion_misses: another BPF program "
              "was running on the CPU; counted for kprobe and tracepoint programs since Linux 6.7; not the "
              "MSG_ZEROCOPY callback runs whose verdicts the error queue gave: kernel event errqueue_verdict, "
              "nor io_uring skb callback runs whose verdicts REPORT_USAGE gave: report_usage_verdict)")
    events = CounterMetricFamily("zctrace_lost_events", "Events the probes could not record because a BPF "
                                 "map was full " + causes + ".", labels=["cause"])
    requests = CounterMetricFamily("zctrace_lost_requests", "Zerocopy send requests left uncounted, or without "
                                   "their verdict or reason, because a BPF map was full.", labels=["cause"])
    nbytes = CounterMetricFamily("zctrace_lost_bytes", "Bytes of the send requests left uncounted.",
                                 labels=["cause"])
    skipped = sum(model.unrecovered_misses(snap).values())  # less those the error queue gave back
    for cause, n in sorted({**snap.errors, "recursion_misses": skipped}.items()):
        r, b = snap.lost.get(cause, (0, 0))
        events.add_metric([cause], n)
        requests.add_metric([cause], r)
        nbytes.add_metric([cause], b)
    return [events, requests, nbytes]


# Kernel-side families (fentry/kprobe tiers) ---------------------------------------------------

# The kernel events each probe program counts (zctrace_kernel_events exports those of the loaded ones).
KERNEL_EVENTS = {"zc_kernel": ("copy_ubufs", "sw_gso_copy"), "msgzc_callback": ("errqueue_verdict",),
                 "uring_notif": ("report_usage_verdict",),
                 "kernel_events": ("iter_stream", "fill_from_iter", "uarg_realloc")}


def kernel_events(snap: snapshot.Snapshot, shown: set[str]) -> list[Metric]:
    count = CounterMetricFamily("zctrace_kernel_events",
                                "Kernel zerocopy events: late copies (copy_ubufs), zerocopy skbs segmented in software "
                                "without scatter-gather, their payload copied while the kernel reports "
                                "zero-copy (sw_gso_copy), MSG_ZEROCOPY verdicts taken from "
                                "the error queue for callback runs the kernel skipped (errqueue_verdict, "
                                "counted in ids), io_uring verdicts taken from the kernel's REPORT_USAGE "
                                "flags for skb callback runs it skipped (report_usage_verdict, in "
                                "notifications); with --kernel-events also "
                                "pages attached (iter_stream, fill_from_iter) and notification ranges "
                                "(uarg_realloc).", labels=["event"])
    nbytes = CounterMetricFamily("zctrace_kernel_event_bytes", "Bytes of the kernel zerocopy events.",
                                 labels=["event"])
    for event, (n, b) in sorted(snap.kevents.items()):
        if event not in shown:
            continue
        count.add_metric([event], n)
        nbytes.add_metric([event], b)
    return [count, nbytes]


def late_copies(rep: model.Report, debut: Debut) -> list[Metric]:
    count = CounterMetricFamily("zctrace_late_copies",
                                "Late copies of zerocopy frags (skb_copy_ubufs, skb_checksum_help; "
                                "skb_segment without scatter-gather, which the kernel's verdict does not "
                                "count) by the kernel function that asked for them.", labels=["caller"])
    nbytes = CounterMetricFamily("zctrace_late_copy_bytes", "Bytes of the late copies, by caller.",
                                 labels=["caller"])
    by_caller: dict[str, tuple[int, int]] = {}
    for site in rep.copy_sites:
        n, b = by_caller.get(site.caller, (0, 0))
        by_caller[site.caller] = (n + site.count, b + site.bytes)
    for caller, (n, b) in sorted(by_caller.items()):
        count.add_metric([caller], debut.value(("late", caller), n))
        nbytes.add_metric([caller], debut.value(("late_bytes", caller), b))
    return [count, nbytes]
