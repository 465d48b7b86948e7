"""The Prometheus collector: one snapshot of the probes' maps per scrape, turned into metric
families (no per-event instrumentation; the BPF maps are the counters).

Each family comes from one small function. A part that fails leaves the others standing and
counts in zctrace_scrape_errors_total; the self-metrics (probe health, build info, scrape
errors) are always served, so a scrape never raises.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .. import cgroups, lifecycle, snapshot
from ..model import NOT_ATTEMPTED_COUNTERS, Counts, copied_reasons, pinned_bytes
from ..probes import AttachStatus, Session, load_manifest
from . import bpfinfo
from .fold import Debut, Folded, Folder, Owner
from .ratelog import RateLimitedLog

log = logging.getLogger("zctrace.exporter")
T = TypeVar("T")

_REASON = "copied_reason:"  # prefix of the copy-reason counters merged into the process rows
# Latency buckets: log2 slot s of the probes holds [2^(s-1), 2^s) ns; export 1 us .. 17 s.
LATENCY_SLOTS = range(10, 35)


@dataclass(frozen=True)
class Probe:
    """One attach point of a probe program, with the bcc function behind it (if loaded)."""

    program: str
    target: str
    up: bool
    fd: int | None


def probes_of(session: Session) -> list[Probe]:
    """Every attach point the session's tier declares: attached, failed, or not loaded."""
    funcs = session.bpf.funcs if session.bpf is not None else {}

    def fd(status: AttachStatus) -> int | None:
        func = funcs.get(status.fn_name.encode())
        return func.fd if func else None

    found = [Probe(s.program, s.target, s.attached, fd(s) if s.attached else None)
             for s in session.statuses]
    for prog in load_manifest():
        if prog.name in session.skipped:
            kfuncs = prog.kfuncs if session.tier != "tracepoint" else ()
            found += [Probe(prog.name, t, False, None) for t in prog.tracepoints + kfuncs]
    return found


@dataclass
class ExportOptions:
    top_comms: int = 10
    per_pid: bool = False
    cgroup: Path | None = None  # only processes in this cgroup v2 subtree
    stats_forced: bool = False  # this daemon holds a BPF_ENABLE_STATS fd


def late_copy_caller(stack: tuple[str, ...]) -> str:
    """The kernel function that called skb_copy_ubufs: the first frame past it and the BPF
    trampoline frames ('unknown' when the stack was not recorded)."""
    for frame in stack:
        name = frame.split(".")[0]
        if name != "skb_copy_ubufs" and not name.startswith("bpf_") and name != "[unknown]":
            return name
    return "unknown"


@dataclass(eq=False)
class ZctraceCollector(Collector):
    """Serves one Session's maps; thread-safe (scrapes are serialized)."""

    session: Session
    options: ExportOptions = field(default_factory=ExportOptions)
    scrape_errors: int = 0
    map_fills: Callable[[object], list[bpfinfo.MapFill]] = bpfinfo.module_maps  # the maps to show the fill of

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._folder = Folder(self.options.top_comms, self.options.per_pid)
        self._rx_folder = Folder(self.options.top_comms, self.options.per_pid)  # receivers rank on their own
        self._debut = Debut()  # for the families outside the folder
        self._reaper = lifecycle.Reaper(self.session.bpf)  # exited processes leave the maps
        self._log = RateLimitedLog(log)
        self._probes = probes_of(self.session)
        self._maps = self.map_fills(self.session.bpf)
        self._process_labels = ["comm", "pid"] if self.options.per_pid else ["comm"]
        loaded = {p.name for p in self.session.programs}
        self._kernel_events = {e for prog, events in KERNEL_EVENTS.items() if prog in loaded for e in events}
        try:
            version = metadata.version("zctrace")
        except metadata.PackageNotFoundError:
            version = "unknown"
        self._build = (version, self.session.tier, os.uname().release)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            start = time.perf_counter()
            families = self._traced()
            for part in (self._bpf_programs, self._bpf_maps):
                families += self._try(part.__name__.strip("_"), part, [])
            families += self._health(time.perf_counter() - start)
        return iter(families)

    def _try(self, name: str, part: Callable[[], T], failed: T) -> T:
        """part(), or `failed` if it raises: a scrape must never fail, and one family that cannot
        be read must not take the others with it (counted, logged at most once a minute)."""
        try:
            return part()
        except Exception as e:
            self.scrape_errors += 1
            self._log.warning(name, f"scrape: {name} failed: {type(e).__name__}: {e}")
            return failed

    # Families from the snapshot -------------------------------------------------------------

    def _scoped(self, snap: snapshot.Snapshot) -> snapshot.Snapshot:
        if self.options.cgroup is not None:
            ids = cgroups.subtree_ids(self.options.cgroup)
            snap = replace(snap, rows=[r for r in snap.rows if r.cgroup in ids],
                           receive=[r for r in snap.receive if r.cgroup in ids])
        return snap

    def sweep(self) -> float:
        """Between scrapes: fold what the maps hold, then retire the processes that exited. A
        scrape every 15 s alone would let a host that forks short-lived senders fill the maps
        (10,240 processes) between two scrapes. Returns how full the process rows were (0..1)."""
        with self._lock:
            raw = self._try("snapshot", lambda: snapshot.take(self.session.bpf), None)
            if raw is None:
                return 0.0
            self._fold_and_retire(raw, self._scoped(raw))
            return len(raw.rows) / self.session.bpf[b"zc_stats"].max_entries

    def sweep_until(self, stop: threading.Event, every: float = lifecycle.SWEEP) -> None:
        """sweep() every `every` seconds until `stop` is set (the daemon's sweeper thread); at
        once again while the process rows are over a quarter full (thousands of processes a
        second come and go)."""
        fill = 0.0
        while not stop.wait(every if fill < 0.25 else 0.01):
            fill = self.sweep()

    def _fold_and_retire(self, raw: snapshot.Snapshot, snap: snapshot.Snapshot) -> bool:
        """Fold the process rows into the folders; only if that worked, retire the processes of
        `raw` that exited (their rows, just folded, are their final counts). True if folded."""
        folded = (self._try("process_rows", lambda: self._folder.fold(with_reasons(snap)) or True, False)
                  and self._try("zerocopy_receive", lambda: self._rx_folder.fold(receive_rows(snap)) or True, False))
        if folded:
            self._try("retire", lambda: self._reaper.sweep(raw), set())
        return folded

    def _traced(self) -> list[Metric]:
        """The families read from the probes' maps, each on its own: one that fails (a process
        or ring that changed under the read) only loses itself. The entries of processes that
        exited leave the maps once folded: the folders hold what they counted."""
        raw = self._try("snapshot", lambda: snapshot.take(self.session.bpf), None)
        if raw is None:
            return []
        snap = self._scoped(raw)
        labels, owner = self._process_labels, self._folder.owner
        parts: dict[str, Callable[[], list[Metric]]] = {
            "notification_latency": lambda: [notification_latency(snap, self._debut)],
            "lost_events": lambda: lost_events(snap)}
        if self._kernel_events:
            parts["kernel_events"] = lambda: kernel_events(snap, self._kernel_events) + late_copies(snap, self._debut)
        if self._fold_and_retire(raw, snap):
            folded = self._folder.view()
            parts = {
                "requests": lambda: [requests(folded, labels), not_attempted(folded, labels),
                                     sent_bytes(folded, labels), notifications(folded, labels),
                                     copy_fallbacks(folded, labels)],
                "undecided": lambda: [undecided(snap.rows, folded, owner, labels)],
                "pinned": lambda: [pinned(snap.rows, folded, owner, labels, self.session.tier != "tracepoint")],
                "io_uring_cqes": lambda: unreaped_cqes(
                    replace(snap, rings=snapshot.read_rings(snapshot.ring_pids(self.session.bpf))),
                    folded, owner, labels),
                "zerocopy_receive": lambda: zerocopy_receive(self._rx_folder.view(), labels),
                **parts}
        out: list[Metric] = []
        for name, part in parts.items():
            out += self._try(name, part, [])
        return out

    # Self-metrics ---------------------------------------------------------------------------

    def _bpf_programs(self) -> list[Metric]:
        on = self.options.stats_forced or bpfinfo.stats_sysctl()
        note = "" if on else (" Zero while kernel.bpf_stats_enabled=0 (sysctl -w "
                              "kernel.bpf_stats_enabled=1, or zctrace export --bpf-stats).")
        labels = ["probe", "target"]
        run_time = CounterMetricFamily("zctrace_bpf_program_run_seconds",
                                       "CPU time spent in each zctrace BPF program." + note, labels=labels)
        runs = CounterMetricFamily("zctrace_bpf_program_runs", "Runs of each zctrace BPF program." + note,
                                   labels=labels)
        misses = CounterMetricFamily("zctrace_bpf_program_recursion_misses",
                                     "Events lost: the kernel skipped the program (it was already "
                                     "running on that CPU).", labels=labels)
        for p in self._probes:
            if p.fd is None:
                continue
            st = bpfinfo.prog_stats(p.fd)
            run_time.add_metric([p.program, p.target], st.run_time_ns / 1e9)
            runs.add_metric([p.program, p.target], st.run_count)
            misses.add_metric([p.program, p.target], st.recursion_misses)
        enabled = GaugeMetricFamily("zctrace_bpf_stats_enabled",
                                    "1 if BPF program run statistics are being counted.", value=int(on))
        return [run_time, runs, misses, enabled]

    def _bpf_maps(self) -> list[Metric]:
        entries = GaugeMetricFamily("zctrace_bpf_map_entries",
                                    "Entries in use in each zctrace BPF map that refuses new entries "
                                    "when full (hash and stack trace maps).", labels=["map"])
        size = GaugeMetricFamily("zctrace_bpf_map_max_entries", "Capacity of each zctrace BPF map.",
                                 labels=["map"])
        for m in self._maps:
            entries.add_metric([m.name], m.entries())
            size.add_metric([m.name], m.max_entries)
        return [entries, size]

    def _health(self, seconds: float) -> list[Metric]:
        up = GaugeMetricFamily("zctrace_probe_up", "1 if the probe is attached at this attach point.",
                               labels=["probe", "target", "tier"])
        for p in self._probes:
            up.add_metric([p.program, p.target, self.session.tier], int(p.up))
        info = GaugeMetricFamily("zctrace_build_info", "zctrace version, probe tier and kernel release.",
                                 labels=["version", "tier", "kernel"])
        info.add_metric(list(self._build), 1)
        errors = CounterMetricFamily("zctrace_scrape_errors", "Scrapes where part of the metrics "
                                     "could not be read (see the daemon's log).", value=self.scrape_errors)
        duration = GaugeMetricFamily("zctrace_scrape_duration_seconds",
                                     "Time this scrape spent reading the BPF maps and programs.",
                                     value=seconds)
        retired = CounterMetricFamily("zctrace_retired_processes", "Processes that exited and whose "
                                      "entries left the BPF maps (what they counted stays in the series).",
                                      value=self._reaper.retired)
        return [up, info, errors, duration, retired]


# Per-process families (one function each) -----------------------------------------------------

def with_reasons(snap: snapshot.Snapshot) -> list[snapshot.StatsRow]:
    """The process rows, each with its copied requests per reason (model.copied_reasons) as
    extra counters (so the folding keeps them monotonic too). Reason rows whose process row was
    lost (zc_stats full, see zctrace_lost_events_total) are left out."""
    extra = {key: {_REASON + reason: n for reason, n in reasons.items()}
             for key, reasons in copied_reasons(snap.reasons).items()}
    return [replace(row, counters={**row.counters, **extra[key]}) if (key := (row.pid, row.api, row.proto)) in extra
            else row for row in snap.rows]


def _process_values(owner: Owner, labels: list[str]) -> list[str]:
    return [owner.comm, owner.pid] if "pid" in labels else [owner.comm]


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
        for verdict, n in Counts.from_counters(c).verdicts().items():
            fam.add_metric([verdict, api, proto] + _process_values(owner, labels), n)
    return fam


def not_attempted(folded: Folded, labels: list[str]) -> Metric:
    fam = CounterMetricFamily("zctrace_zerocopy_not_attempted",
                              "Zerocopy sends the kernel silently (or with an error) did as plain sends, by reason.",
                              labels=["reason", "api", "proto"] + labels)
    for owner, api, proto, c in _each(folded):
        for key, reason in NOT_ATTEMPTED_COUNTERS.items():
            fam.add_metric([reason, api, proto] + _process_values(owner, labels), c.get(key, 0))
    return fam


def sent_bytes(folded: Folded, labels: list[str]) -> Metric:
    fam = CounterMetricFamily("zctrace_zerocopy_bytes", "Bytes sent by zerocopy send requests.",
                              labels=["api", "proto"] + labels)
    for owner, api, proto, c in _each(folded):
        fam.add_metric([api, proto] + _process_values(owner, labels), c.get("bytes", 0))
    return fam


def notifications(folded: Folded, labels: list[str]) -> Metric:
    fam = CounterMetricFamily("zctrace_zerocopy_notifications",
                              "Completion notifications (MSG_ZEROCOPY error-queue ranges, io_uring "
                              "notification CQEs); one may cover many requests, and a failed io_uring "
                              "send is notified too (no request, no verdict).", labels=["api"] + labels)
    total: dict[tuple[str, ...], int] = {}
    for owner, api, _, c in _each(folded):
        key = (api, *_process_values(owner, labels))
        total[key] = total.get(key, 0) + c.get("notifications", 0)
    for key, n in total.items():
        fam.add_metric(list(key), n)
    return fam


def copy_fallbacks(folded: Folded, labels: list[str]) -> Metric:
    fam = CounterMetricFamily("zctrace_copy_fallbacks",
                              "Zerocopy requests the kernel copied after all, by the reason the probes found "
                              "(zctrace/reasons.py; `unknown`: this tier saw no evidence).",
                              labels=["reason", "api", "proto"] + labels)
    for owner, api, proto, c in _each(folded):
        for key, n in sorted(c.items()):
            if key.startswith(_REASON):
                fam.add_metric([key[len(_REASON):], api, proto] + _process_values(owner, labels), n)
    return fam


def undecided(rows: list[snapshot.StatsRow], folded: Folded,
              owner_of: Callable[[snapshot.StatsRow], Owner], labels: list[str]) -> Metric:
    fam = GaugeMetricFamily("zctrace_zerocopy_undecided_requests",
                            "Zerocopy requests without a verdict yet: completions in flight, or (tracepoint "
                            "tier) notifications the application has not read.",
                            labels=["api", "proto"] + labels)
    return _row_gauge(fam, rows, folded, owner_of, labels, lambda row: Counts.from_counters(row.counters).undecided)


def pinned(rows: list[snapshot.StatsRow], folded: Folded, owner_of: Callable[[snapshot.StatsRow], Owner],
           labels: list[str], kernel_verdicts: bool) -> Metric:
    fam = GaugeMetricFamily("zctrace_zerocopy_pinned_bytes",
                            "Bytes of zerocopy requests not completed yet: user pages the kernel still holds "
                            "(io_uring: notification CQE not posted; MSG_ZEROCOPY: completion not run, seen "
                            "on the fentry/kprobe tiers only, else 0).",
                            labels=["api", "proto"] + labels)
    return _row_gauge(fam, rows, folded, owner_of, labels,
                      lambda row: pinned_bytes(row.api, row.counters, kernel_verdicts))


def _row_gauge(fam: GaugeMetricFamily, rows: list[snapshot.StatsRow], folded: Folded,
               owner_of: Callable[[snapshot.StatsRow], Owner], labels: list[str],
               value: Callable[[snapshot.StatsRow], int]) -> Metric:
    """A gauge summed over the rows of each exported series (never below 0), zeros included."""
    now: dict[tuple[str, ...], int] = {}
    for row in rows:
        key = (row.api, row.proto, *_process_values(folded.label_of[owner_of(row)], labels))
        now[key] = now.get(key, 0) + max(0, value(row))
    for owner, api, proto, _ in _each(folded):
        now.setdefault((api, proto, *_process_values(owner, labels)), 0)
    for key, n in sorted(now.items()):
        fam.add_metric(list(key), n)
    return fam


def receive_rows(snap: snapshot.Snapshot) -> list[snapshot.StatsRow]:
    """TCP_ZEROCOPY_RECEIVE results per process as rows the folder ranks (by bytes received)."""
    return [snapshot.StatsRow(r.pid, r.comm, "tcp_zerocopy_receive", "tcp", {
        "bytes": r.mapped + r.copied + r.skipped, "ok": r.calls - r.errors, "error": r.errors,
        "mapped": r.mapped, "copied": r.copied, "skipped": r.skipped}, r.cgroup) for r in snap.receive]


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


def unreaped_cqes(snap: snapshot.Snapshot, folded: Folded, owner_of: Callable[[snapshot.StatsRow], Owner],
                  labels: list[str]) -> list[Metric]:
    """CQEs the kernel posted that the application has not reaped yet, in the rings of the
    processes that sent io_uring zerocopy requests (from their /proc fdinfo at scrape time)."""
    pending = GaugeMetricFamily("zctrace_io_uring_unreaped_cqes",
                                "CQEs (completions and zerocopy notifications alike) posted to the CQ rings "
                                "of io_uring zerocopy senders and not consumed by the application yet.",
                                labels=labels)
    overflow = GaugeMetricFamily("zctrace_io_uring_overflowed_cqes",
                                 "CQEs of io_uring zerocopy senders waiting in the kernel's overflow list "
                                 "because their CQ ring was full.", labels=labels)
    row_of = {row.pid: row for row in snap.rows if row.api == "io_uring"}
    now: dict[tuple[str, ...], tuple[int, int]] = {}
    for ring in snap.rings:
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
        "application reading it (tracepoint tier: MSG_ZEROCOPY read, io_uring CQE). Buckets only: "
        "the probes keep log2 buckets, no sum; the +Inf bucket is the count.", labels=["api"])
    for (hist, api), slots in sorted(snap.hists.items()):
        if hist != "latency":
            continue
        buckets = [(floatToGoString(2 ** slot / 1e9), sum(n for s, n in slots.items() if s <= slot))
                   for slot in LATENCY_SLOTS] + [("+Inf", sum(slots.values()))]
        fam.add_metric([api], [(le, debut.value(("latency", api, le), n)) for le, n in buckets], None)
    return fam


def lost_events(snap: snapshot.Snapshot) -> list[Metric]:
    causes = ("(stats_full: a new process, socks_full: a new socket, reasons_full: a copy reason, "
              "rings_full: a new io_uring instance, notifs_full: an io_uring notification's flags)")
    events = CounterMetricFamily("zctrace_lost_events", "Events the probes could not record because a BPF "
                                 "map was full " + causes + ".", labels=["cause"])
    requests = CounterMetricFamily("zctrace_lost_requests", "Zerocopy send requests left uncounted, or without "
                                   "their verdict or reason, because a BPF map was full.", labels=["cause"])
    nbytes = CounterMetricFamily("zctrace_lost_bytes", "Bytes of the send requests left uncounted.",
                                 labels=["cause"])
    for cause, n in sorted(snap.errors.items()):
        r, b = snap.lost.get(cause, (0, 0))
        events.add_metric([cause], n)
        requests.add_metric([cause], r)
        nbytes.add_metric([cause], b)
    return [events, requests, nbytes]


# Kernel-side families (fentry/kprobe tiers) ---------------------------------------------------

# The kernel events each probe program counts (zctrace_kernel_events exports those of the loaded ones).
KERNEL_EVENTS = {"zc_kernel": ("copy_ubufs",), "kernel_events": ("iter_stream", "fill_from_iter", "uarg_realloc")}


def kernel_events(snap: snapshot.Snapshot, shown: set[str]) -> list[Metric]:
    count = CounterMetricFamily("zctrace_kernel_events",
                                "Kernel zerocopy events: late copies (copy_ubufs); with --kernel-events also "
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


def late_copies(snap: snapshot.Snapshot, debut: Debut) -> list[Metric]:
    count = CounterMetricFamily("zctrace_late_copies",
                                "Late copies of zerocopy frags (skb_copy_ubufs) by the kernel function "
                                "that asked for them.", labels=["caller"])
    nbytes = CounterMetricFamily("zctrace_late_copy_bytes", "Bytes of the late copies, by caller.",
                                 labels=["caller"])
    by_caller: dict[str, tuple[int, int]] = {}
    for site in snap.copy_sites:
        caller = late_copy_caller(site.stack)
        n, b = by_caller.get(caller, (0, 0))
        by_caller[caller] = (n + site.count, b + site.bytes)
    for caller, (n, b) in sorted(by_caller.items()):
        count.add_metric([caller], debut.value(("late", caller), n))
        nbytes.add_metric([caller], debut.value(("late_bytes", caller), b))
    return [count, nbytes]
