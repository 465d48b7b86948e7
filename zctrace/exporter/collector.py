"""The Prometheus collector: one snapshot of the probes' maps per scrape, its verdicts assembled
by model.build (the one assembly trace, top and bench use too), the flows folded into bounded,
monotonic series per owner (fold.py: comm and the workload's cgroup, container and pod), and
turned into metric families (no per-event instrumentation; the BPF maps are the counters).

Each family comes from one small function (families.py). A part that fails leaves the others standing and
counts in zctrace_scrape_errors_total; the self-metrics (probe health, build info, scrape
errors) are always served, so a scrape never raises.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .. import advice, cgroups, crossover, lifecycle, maps, model, snapshot, workloads
from ..probes import AttachStatus, Session, load_manifest
from .. import bpfinfo
from .families import (KERNEL_EVENTS, advice as advice_gauge, advice_by_owner, copy_fallbacks, flow_gauge, flow_rows, kernel_events, late_copies,
                       lost_events, not_attempted, notification_latency, notifications, pinned, receive_rows,
                       requests, sent_bytes, software_gso, undecided, unreaped_cqes, zerocopy_receive)
from .fold import Debut, Folder, Owner
from .ratelog import RateLimitedLog

log = logging.getLogger("zctrace.exporter")
T = TypeVar("T")

# The process labels a series can carry (--labels), in the order they are exported; the
# workload ones come from the process's cgroup (zctrace/workloads.py).
LABELS = ("comm", "pid", "cgroup", "container_id", "pod_uid")
WORKLOAD_LABELS = ("cgroup", "container_id", "pod_uid")
DEFAULT_LABELS = ("comm", "cgroup", "container_id", "pod_uid")


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
    top_comms: int = 10  # owners named (--top-cgroups; --top-comms is its older name)
    per_pid: bool = False
    cgroup: Path | None = None  # only processes in this cgroup v2 subtree
    stats_forced: bool = False  # this daemon holds a BPF_ENABLE_STATS fd
    labels: tuple[str, ...] = DEFAULT_LABELS  # of LABELS; per_pid adds pid
    grace: float | None = 600.0  # seconds the series of an owner whose processes all exited stay
    cgroup_root: Path | None = None  # the cgroup v2 hierarchy ids resolve in (None: the mounted one)


@dataclass(eq=False)
class ZctraceCollector(Collector):
    """Serves one Session's maps; thread-safe (scrapes are serialized)."""

    session: Session
    options: ExportOptions = field(default_factory=ExportOptions)
    scrape_errors: int = 0
    map_fills: Callable[[object], list[bpfinfo.MapFill]] = bpfinfo.module_maps  # the maps to show the fill of

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._process_labels = [name for name in LABELS
                                if name in self.options.labels or (name == "pid" and self.options.per_pid)]
        self._resolve = self._resolver()
        folder = lambda: Folder(self.options.top_comms, owner_of=self._owner, grace=self.options.grace)  # noqa: E731
        self._folder = folder()
        self._rx_folder = folder()  # receivers rank on their own
        self._debut = Debut()  # for the families outside the folder
        self._reaper = lifecycle.Reaper(self.session.bpf)  # exited processes leave the maps
        self._log = RateLimitedLog(log)
        self._probes = probes_of(self.session)
        self._maps = self.map_fills(self.session.bpf)
        loaded = {p.name for p in self.session.programs}
        self._kernel_events = {e for prog, events in KERNEL_EVENTS.items() if prog in loaded for e in events}
        try:
            version = metadata.version("zctrace")
        except metadata.PackageNotFoundError:
            version = "unknown"
        self._build = (version, self.session.tier, os.uname().release)
        self._paths = crossover.DevicePaths()  # sockets' devices, looked up while they exist (advice)
        self._saved = crossover.SavedCache()
        self._started = time.monotonic()
        self._advice: dict[Owner, set[str]] = {}  # owner -> advice codes of its processes' last report
        self._rings: dict = {}  # each ring's last complete reading (a busy ring's fdinfo often is not)

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

    # Owners: the process labels of a series ---------------------------------------------------

    def _resolver(self) -> Callable[[int], workloads.Workload] | None:
        if not set(WORKLOAD_LABELS) & set(self._process_labels):
            return None
        try:
            root = self.options.cgroup_root or cgroups.mount()
        except Exception as e:  # no cgroup v2 here: the workload labels stay empty (said once)
            log.warning(f"no workload labels: {e}")
            return None
        return workloads.Resolver(root)

    def _workload(self, cgroup_id: int) -> workloads.Workload:
        return self._resolve(cgroup_id) if self._resolve else workloads.UNKNOWN

    def _owner(self, row: snapshot.StatsRow) -> Owner:
        """The owner of a flow row: its values of the exported process labels."""
        w, labels = self._workload(row.cgroup), self._process_labels
        pick = lambda name, value: value if name in labels else ""  # noqa: E731
        return Owner(pick("comm", row.comm), pick("pid", str(row.pid)), pick("cgroup", w.cgroup),
                     pick("container_id", w.container_id), pick("pod_uid", w.pod_uid))

    # Families from the snapshot -------------------------------------------------------------

    def _report(self, raw: snapshot.Snapshot) -> model.Report:
        """The verdicts of `raw` (model.build: the one assembly), in the --cgroup scope."""
        scope = cgroups.subtree_ids(self.options.cgroup) if self.options.cgroup is not None else None
        return model.build(raw, self.session.tier, cgroups=scope, resolve=self._resolve)

    def sweep(self) -> float:
        """Between scrapes: fold what the maps hold, then retire the processes that exited. A
        scrape every 15 s alone would let a host that forks short-lived senders fill the maps
        (10,240 processes) between two scrapes. Returns how full the process rows were (0..1)."""
        with self._lock:
            raw = self._try("snapshot", lambda: snapshot.take(self.session.bpf), None)
            rep = self._try("verdicts", lambda: self._report(raw), None) if raw is not None else None
            if rep is None:
                return 0.0
            self._fold_and_retire(raw, rep)
            return len(raw.rows) / self.session.bpf[maps.STATS.key].max_entries

    def sweep_until(self, stop: threading.Event, every: float = lifecycle.SWEEP) -> None:
        """sweep() every `every` seconds until `stop` is set (the daemon's sweeper thread); at
        once again while the process rows are over a quarter full (thousands of processes a
        second come and go)."""
        fill = 0.0
        while not stop.wait(every if fill < 0.25 else 0.01):
            fill = self.sweep()

    def _fold_and_retire(self, raw: snapshot.Snapshot, rep: model.Report) -> bool:
        """Fold the report's flows into the folders; only if that worked, retire the processes of
        `raw` that exited (their rows, just folded, are their final counts). True if folded."""
        folded = (self._try("process_rows", lambda: self._folder.fold(flow_rows(rep)) or True, False)
                  and self._try("zerocopy_receive", lambda: self._rx_folder.fold(receive_rows(rep)) or True, False))
        if folded:
            self._try("advice", lambda: self._update_advice(raw, rep), None)  # before the exited leave
            self._try("retire", lambda: self._reaper.sweep(raw), set())
        return folded

    def _traced(self) -> list[Metric]:
        """The families read from the probes' maps, each on its own: one that fails (a process
        or ring that changed under the read) only loses itself. The entries of processes that
        exited leave the maps once folded: the folders hold what they counted."""
        raw = self._try("snapshot", lambda: snapshot.take(self.session.bpf), None)
        rep = self._try("verdicts", lambda: self._report(raw), None) if raw is not None else None
        if rep is None:
            return []
        labels = self._process_labels
        parts: dict[str, Callable[[], list[Metric]]] = {
            "notification_latency": lambda: [notification_latency(raw, self._debut)],
            "lost_events": lambda: lost_events(raw)}
        if self._kernel_events:
            parts["kernel_events"] = lambda: kernel_events(raw, self._kernel_events) + late_copies(rep, self._debut)
        if self._fold_and_retire(raw, rep):
            folded = self._folder.view()
            gauge = lambda fam, value: flow_gauge(fam, rep, folded, self._owner, labels, value)  # noqa: E731
            parts = {
                "requests": lambda: [requests(folded, labels), not_attempted(folded, labels),
                                     sent_bytes(folded, labels), notifications(folded, labels),
                                     copy_fallbacks(folded, labels)]
                                    + ([software_gso(folded, labels)] if self.session.tier != "tracepoint" else []),
                "undecided": lambda: [gauge(undecided(labels), lambda c: c.undecided)],
                "pinned": lambda: [gauge(pinned(labels), lambda c: c.pinned_bytes)],
                "io_uring_cqes": lambda: unreaped_cqes(  # its own /proc walk: failing, it loses only itself
                    snapshot.read_rings(snapshot.ring_pids(self.session.bpf), last=self._rings), rep, folded,
                    self._owner, labels),
                "zerocopy_receive": lambda: zerocopy_receive(self._rx_folder.view(), labels),
                "advice": lambda: [advice_gauge(self._advice_shown(folded), folded, labels)],
                **parts}
        out: list[Metric] = []
        for name, part in parts.items():
            out += self._try(name, part, [])
        return out

    def _update_advice(self, raw: snapshot.Snapshot, rep: model.Report) -> None:
        """Advice codes per owner (advice.py; rates over the time since the exporter started) of
        the live processes and of those that just exited (each sweep, before they are retired)."""
        self._paths.observe(raw.sockets)
        advice.Advisor(self._saved.get(), self._paths).advise(rep, time.monotonic() - self._started)
        self._advice.update(advice_by_owner(rep, self._owner))

    def _advice_shown(self, folded) -> dict[Owner, set[str]]:
        """Each owner's last advice, while the folder knows the owner (as its series stay)."""
        self._advice = {o: codes for o, codes in self._advice.items() if o in folded.label_of}
        return self._advice

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
