"""The verdict model: per-process and total zerocopy outcomes from a snapshot.

The one definition of the verdicts and of the copy reasons, for the trace report, top, bench
and the exporter alike (docs/verdicts.md). Counts are per send request (one kernel notification
can cover a range of requests); each request is in one of:

- `zerocopied`, `copied`: the kernel's verdict; a copied request carries the reason the probes
  found (zctrace/reasons.py);
- `unknown`: completed, and this tier cannot see the verdict (io_uring without REPORT_USAGE on
  the tracepoint tier);
- `not_attempted`: the kernel never tried zerocopy (no notification id), with its reason;
- `undecided`: no verdict yet: completions still in flight, or (tracepoint tier) notifications
  the application has not read. The only one that can still change, so the exporter serves it
  as a gauge and the others (VERDICTS) as counters.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field

from .reasons import classify, late_copy_caller
from .snapshot import ReasonRow, ReceiveRow, RingRow, Snapshot, SocketRow, StatsRow
from .workloads import UNKNOWN, Workload

VERDICTS = ("zerocopied", "copied", "unknown", "not_attempted")  # final: never change once given
UNDECIDED = "undecided"
NOT_ATTEMPTED_COUNTERS = {"na_so_zerocopy_unset": "so_zerocopy_unset", "na_enobufs_optmem": "enobufs_optmem",
                          "na_enobufs_memlock": "enobufs_memlock", "na_eopnotsupp": "eopnotsupp"}
_SUMMED = ("zc_requests", "bytes", "zerocopied", "copied", "unknown", "undecided", "not_attempted",
           "notifications", "unread", "pinned_bytes", "sw_gso_copies", "sw_gso_bytes")
_CUMULATIVE = ("zc_requests", "bytes", "zerocopied", "copied", "unknown", "not_attempted", "notifications",
               "sw_gso_copies", "sw_gso_bytes")
FlowKey = tuple[int, str, str]  # (pid, api, proto)


def sees_completions(tier: str) -> bool:
    """Whether a probe tier sees the kernel's own completions (fentry, kprobe), and so every
    verdict and late copy; the tracepoint tier sees only what the application is told."""
    return tier in ("fentry", "kprobe")


def _merge(into: dict[str, int], other: dict[str, int]) -> None:
    for key, n in other.items():
        into[key] = into.get(key, 0) + n


def reason_of(row: ReasonRow) -> str:
    """The reason name of a reason row: a late copy is classified by its kernel stack."""
    return classify(row.stack) if row.code == "late_copy" else row.code


def copied_reasons(reasons: Iterable[ReasonRow]) -> dict[FlowKey, dict[str, int]]:
    """Copied requests per flow and reason name."""
    out: dict[FlowKey, dict[str, int]] = {}
    for r in reasons:
        _merge(out.setdefault((r.pid, r.api, r.proto), {}), {reason_of(r): r.requests})
    return out


def pinned_bytes(api: str, c: dict[str, int], kernel_tier: bool) -> int:
    """Bytes of requests whose user pages the kernel still holds: io_uring sends whose
    notification CQE is not posted yet (every tier), MSG_ZEROCOPY sends whose completion has not
    run (fentry/kprobe tiers; 0 on the tracepoint tier, which cannot see completions)."""
    if api == "msg_zerocopy" and not kernel_tier:
        return 0
    return max(0, c["bytes"] - c["completed_bytes"])


@dataclass
class Counts:
    zc_requests: int = 0
    bytes: int = 0
    zerocopied: int = 0
    copied: int = 0
    unknown: int = 0
    undecided: int = 0
    not_attempted: int = 0
    not_attempted_reasons: dict[str, int] = field(default_factory=dict)
    copied_reasons: dict[str, int] = field(default_factory=dict)
    notifications: int = 0
    unread: int = 0  # fentry/kprobe: MSG_ZEROCOPY requests notified but not read by the application
    pinned_bytes: int = 0  # bytes of requests not completed yet (pages pinned): see pinned_bytes()
    # fentry/kprobe: this flow's zerocopy skbs skb_segment copied without scatter-gather, and their
    # payload bytes (software_gso: copies the kernel's verdict, zero-copy, does not count)
    sw_gso_copies: int = 0
    sw_gso_bytes: int = 0

    @classmethod
    def from_counters(cls, c: dict[str, int], kernel_verdicts: bool = False, pinned: int = 0) -> Counts:
        """Counts of one row of probe counters (header.COUNTERS by name)."""
        reasons = {reason: c[key] for key, reason in NOT_ATTEMPTED_COUNTERS.items() if c.get(key)}
        decided = c["zerocopied"] + c["copied"]
        return cls(zc_requests=c["requests"], bytes=c["bytes"], zerocopied=c["zerocopied"],
                   copied=c["copied"], unknown=c["unreported"],
                   undecided=max(0, c["requests"] - decided - c["unreported"]),
                   not_attempted=sum(reasons.values()), not_attempted_reasons=reasons,
                   notifications=c["notifications"],
                   unread=max(0, decided - c["read_requests"]) if kernel_verdicts else 0,
                   pinned_bytes=pinned, sw_gso_copies=c.get("sw_gso_copies", 0),
                   sw_gso_bytes=c.get("sw_gso_bytes", 0))

    def add(self, other: Counts) -> None:
        for name in _SUMMED:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        _merge(self.not_attempted_reasons, other.not_attempted_reasons)
        _merge(self.copied_reasons, other.copied_reasons)

    @property
    def verdict(self) -> str:
        """One word for a row: the final verdict every decided request shares (requests still
        in flight do not make it `mixed`: `undecided` says how many), `undecided` when none is
        decided yet, else `mixed`."""
        outcomes = [k for k in VERDICTS if getattr(self, k)]
        if not outcomes:
            return UNDECIDED if self.undecided else "-"
        return outcomes[0] if len(outcomes) == 1 else "mixed"

    def verdicts(self) -> dict[str, int]:
        """Requests per final verdict (VERDICTS)."""
        return {v: getattr(self, v) for v in VERDICTS}

    def cumulative(self) -> dict[str, int]:
        """The counts that only ever grow, flat (reasons as `copied:<reason>` and
        `not_attempted:<reason>`): what the exporter folds into monotonic series. Undecided
        requests and pinned bytes are gauges and stay out. from_cumulative() reads it back."""
        flat = {name: getattr(self, name) for name in _CUMULATIVE}
        flat.update({f"copied:{r}": n for r, n in self.copied_reasons.items()})
        flat.update({f"not_attempted:{r}": n for r, n in self.not_attempted_reasons.items()})
        return flat

    @classmethod
    def from_cumulative(cls, flat: dict[str, int]) -> Counts:
        """The Counts of a cumulative() dict (or of a sum of them)."""
        reasons = {kind: {k.split(":", 1)[1]: n for k, n in flat.items() if k.startswith(kind + ":")}
                   for kind in ("copied", "not_attempted")}
        return cls(**{name: flat.get(name, 0) for name in _CUMULATIVE},
                   copied_reasons=reasons["copied"], not_attempted_reasons=reasons["not_attempted"])

    @property
    def top_reason(self) -> str:
        """The most frequent reason a request was copied or never tried zerocopy."""
        both = {**self.copied_reasons}
        _merge(both, self.not_attempted_reasons)
        return max(both, key=both.get) if both else "-"


@dataclass
class Flow:
    """One process's sends through one API and protocol."""

    api: str
    proto: str
    counts: Counts
    sizes: Histogram | None = None  # request sizes in bytes (log2 buckets), where the probes keep them


@dataclass
class ProcessReport:
    pid: int
    comm: str
    cgroup: int  # the cgroup v2 id the probes recorded (workload: what it resolved to)
    counts: Counts
    flows: list[Flow]
    workload: Workload = UNKNOWN
    advice: list = field(default_factory=list)  # advice.Advice, filled by advice.Advisor (not by build)


@dataclass
class Histogram:
    """A log2 histogram: buckets[i] = (exclusive upper bound, count in that bucket)."""

    buckets: list[tuple[float, int]]

    @classmethod
    def from_slots(cls, slots: dict[int, int], scale: float = 1.0) -> Histogram:
        """From bcc's bpf_log2l() slots: slot s holds values in [2^(s-1), 2^s)."""
        return cls([((2 ** slot) * scale, n) for slot, n in sorted(slots.items())])

    @classmethod
    def from_sizes(cls, counters: dict[str, int]) -> Histogram | None:
        """A row's request sizes in bytes (probes/zctrace.h, ZC_SIZE_0..15: under 64 B, then
        [2^(k+5), 2^(k+6)), the last 1 MiB and more, given the bound 2 MiB); None without them."""
        slots = {k: counters.get(f"size_{k}", 0) for k in range(16)}
        if not any(slots.values()):
            return None
        return cls([(float(2 ** (k + 6)), n) for k, n in slots.items() if n])

    @property
    def count(self) -> int:
        return sum(n for _, n in self.buckets)

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile q (0 if empty)."""
        target, seen = q * self.count, 0
        for le, n in self.buckets:
            seen += n
            if seen >= target and n:
                return le
        return 0.0


@dataclass(frozen=True)
class Lost:
    """Events the probes could not record for one cause (a BPF map full), and the send requests
    and bytes they left uncounted."""

    events: int
    requests: int
    bytes: int


@dataclass(frozen=True)
class SkippedRuns(Lost):
    """Lost cause `recursion_misses`: runs of the probe programs the kernel skipped (another BPF
    program, or the same one, was running on that CPU), by program. Which requests lost their
    verdict or reason is not known: `requests` and `bytes` stay 0."""

    programs: dict[str, int] = field(default_factory=dict)


# io_uring's skb callback, by kernel (probes/manifest.toml's kfunc_variants of io_tx_ubuf_complete).
URING_SKB_CALLBACKS = ("io_tx_ubuf_complete", "io_tx_ubuf_callback", "io_uring_tx_zerocopy_callback")


def unrecovered_misses(snapshot: Snapshot) -> dict[str, int]:
    """Runs the kernel skipped, by program, less the MSG_ZEROCOPY completion callback's runs
    whose verdicts came from the error queue after all (kernel event errqueue_verdict: the ids
    the application read beyond the verdicts the callback gave). Each skipped callback run held
    one id or more, so these ids stand for at most as many runs: exact for UDP (one id a run);
    for TCP, where one run can cover several sends, a run still unread can hide behind another's
    ids (docs/verdicts.md). Likewise io_uring's skb callback runs, less the REPORT_USAGE
    notifications whose verdicts the kernel's own flags gave (kernel event report_usage_verdict:
    one a notification, exact where each notification had one skb, as UDP's)."""
    recovered = {"msgzc": snapshot.kevents.get("errqueue_verdict", (0, 0))[0],
                 "uring": snapshot.kevents.get("report_usage_verdict", (0, 0))[0]}
    out = {}
    for program, n in sorted(snapshot.recursion_misses.items()):
        kind = ("msgzc" if program.endswith("msg_zerocopy_callback") else
                "uring" if program.endswith(URING_SKB_CALLBACKS) else None)
        if kind:
            n, recovered[kind] = max(0, n - recovered[kind]), max(0, recovered[kind] - n)
        if n:
            out[program] = n
    return out


def lost_causes(snapshot: Snapshot) -> dict[str, Lost]:
    """What the probes could not record, by cause, the causes that happened."""
    lost: dict[str, Lost] = {k: Lost(v, *snapshot.lost.get(k, (0, 0))) for k, v in snapshot.errors.items() if v}
    skipped = unrecovered_misses(snapshot)
    if skipped:
        lost["recursion_misses"] = SkippedRuns(sum(skipped.values()), 0, 0, skipped)
    return lost


@dataclass(frozen=True)
class KernelEvent:
    """Kernel zerocopy events of one kind (fentry/kprobe tiers) and their bytes."""

    count: int
    bytes: int


@dataclass(frozen=True)
class LateCopySite:
    """Late copies from one kernel call stack (its innermost 8 frames), with their reason and
    the kernel function that asked for the copy."""

    reason: str
    stack: list[str]
    count: int
    bytes: int
    caller: str = "unknown"


@dataclass
class Report:
    tier: str
    totals: Counts
    processes: list[ProcessReport]
    sockets: list[SocketRow] = field(default_factory=list)  # most copied first
    notification_latency: dict[str, Histogram] = field(default_factory=dict)  # api -> seconds
    notification_ranges: Histogram | None = None  # MSG_ZEROCOPY requests per notification
    receive: list[ReceiveRow] = field(default_factory=list)  # TCP_ZEROCOPY_RECEIVE per process
    probes: list[dict] = field(default_factory=list)  # session.probe_statuses(), passed through
    lost: dict[str, Lost] = field(default_factory=dict)  # by cause, the causes that happened
    recursion_misses_counted: bool = True  # False: the kernel (< 6.7) cannot count skipped kprobe/tracepoint runs
    kernel_events: dict[str, KernelEvent] = field(default_factory=dict)  # by event, those seen
    copy_sites: list[LateCopySite] = field(default_factory=list)
    rings: list[RingRow] = field(default_factory=list)  # io_uring CQEs not consumed, per ring
    cost: dict | None = None  # the probes' own cost (cost.Cost.to_json()), passed through; None: not measured
    advice: list = field(default_factory=list)  # the totals' advice.Advice, filled by advice.Advisor

    @property
    def sees_completions(self) -> bool:
        return sees_completions(self.tier)

    def to_json(self) -> dict:
        doc = asdict(self)
        for proc, obj in zip(doc["processes"], self.processes):
            proc["counts"]["top_reason"] = obj.counts.top_reason
            proc["counts"]["verdict"] = obj.counts.verdict
            del proc["workload"]
            proc["cgroup_id"] = proc.pop("cgroup")
            proc.update(obj.workload.to_json())
            for flow, f in zip(proc["flows"], obj.flows):
                flow["sizes"] = _hist_json(f.sizes) if f.sizes else None
        doc["totals"]["top_reason"] = self.totals.top_reason
        doc["totals"]["verdict"] = self.totals.verdict
        doc["totals"]["advice"] = doc.pop("advice")
        doc["notification_latency"] = {api: _hist_json(h) for api, h in self.notification_latency.items()}
        doc["notification_ranges"] = _hist_json(self.notification_ranges) if self.notification_ranges else None
        return doc


def _hist_json(h: Histogram) -> dict:
    return {"buckets": [{"le": le, "count": n} for le, n in h.buckets], "count": h.count,
            "p50": h.quantile(0.5), "p99": h.quantile(0.99)}


def _counted(row: StatsRow) -> bool:
    c = row.counters
    return bool(c["requests"] or any(c[k] for k in NOT_ATTEMPTED_COUNTERS))


@dataclass(frozen=True)
class Scope:
    """Which processes a report covers: a comm, cgroup ids (a subtree), pids; None: any."""

    comm: str | None = None
    cgroups: Collection[int] | None = None
    pids: Collection[int] | None = None

    def admits(self, pid: int, comm: str, cgroup: int) -> bool:
        return ((self.comm is None or comm == self.comm) and (self.cgroups is None or cgroup in self.cgroups)
                and (self.pids is None or pid in self.pids))


def build(snapshot: Snapshot, tier: str, probes: list[dict] | None = None, comm: str | None = None,
          cgroups: Collection[int] | None = None, top_sockets: int = 20, pids: Collection[int] | None = None,
          resolve: Callable[[int], Workload] | None = None) -> Report:
    """The one assembly of verdicts: a snapshot into per-process flows, their counts, copy
    reasons, pinned bytes and workloads, and the totals, for trace, top, bench and the exporter
    alike. `comm`, `cgroups` (ids) and `pids` scope it; `resolve` names each process's workload
    from its cgroup id (workloads.Resolver)."""
    scope = Scope(comm, cgroups, pids)
    kernel_verdicts = sees_completions(tier)
    by_pid: dict[int, ProcessReport] = {}
    flows: dict[FlowKey, Counts] = {}
    for row in snapshot.rows:
        if not _counted(row) or not scope.admits(row.pid, row.comm, row.cgroup):
            continue
        counts = Counts.from_counters(row.counters, kernel_verdicts and row.api == "msg_zerocopy",
                                      pinned_bytes(row.api, row.counters, kernel_verdicts))
        proc = by_pid.get(row.pid)
        if proc is None:
            proc = by_pid[row.pid] = ProcessReport(row.pid, row.comm, row.cgroup, Counts(), [],
                                                   resolve(row.cgroup) if resolve else UNKNOWN)
        proc.flows.append(Flow(row.api, row.proto, counts, Histogram.from_sizes(row.counters)))
        flows[(row.pid, row.api, row.proto)] = counts
    for key, reasons in copied_reasons(snapshot.reasons).items():
        if key in flows:
            _merge(flows[key].copied_reasons, reasons)
    totals = Counts()
    for proc in by_pid.values():
        for flow in proc.flows:
            proc.counts.add(flow.counts)
        totals.add(proc.counts)
    sockets = sorted((s for s in snapshot.sockets if s.pid in by_pid),
                     key=lambda s: (-s.copied, -s.requests))[:top_sockets]
    latency = {api: Histogram.from_slots(slots, 1e-9)
               for (hist, api), slots in snapshot.hists.items() if hist == "latency"}
    ranges = snapshot.hists.get(("range", "msg_zerocopy"))
    return Report(
        tier=tier, totals=totals,
        processes=sorted(by_pid.values(), key=lambda p: (-p.counts.zc_requests, p.pid)),
        sockets=sockets, notification_latency=latency,
        receive=[r for r in snapshot.receive if scope.admits(r.pid, r.comm, r.cgroup)],
        notification_ranges=Histogram.from_slots(ranges) if ranges else None,
        probes=probes or [],
        lost=lost_causes(snapshot), recursion_misses_counted=snapshot.recursion_misses_counted,
        kernel_events={k: KernelEvent(c, b) for k, (c, b) in snapshot.kevents.items() if c},
        copy_sites=[LateCopySite(classify(s.stack), list(s.stack[:8]), s.count, s.bytes, late_copy_caller(s.stack))
                    for s in snapshot.copy_sites],
        rings=[r for r in snapshot.rings if r.pid in by_pid])
