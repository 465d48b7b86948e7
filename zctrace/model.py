"""The verdict model: per-process and total zerocopy outcomes from a snapshot.

Counts are per send request. One kernel notification can cover a range of requests;
`unknown` is what has no verdict (yet): notifications not read (tracepoint tier), io_uring
without REPORT_USAGE (tracepoint tier), or completions still in flight.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .snapshot import Snapshot, StatsRow

NOT_ATTEMPTED_REASONS = {"na_so_zerocopy_unset": "so_zerocopy_unset",
                         "na_enobufs": "enobufs", "na_eopnotsupp": "eopnotsupp"}


@dataclass
class Counts:
    zc_requests: int = 0
    bytes: int = 0
    zerocopied: int = 0
    copied: int = 0
    unknown: int = 0
    not_attempted: int = 0
    not_attempted_reasons: dict[str, int] = field(default_factory=dict)
    notifications: int = 0

    @classmethod
    def from_counters(cls, c: dict[str, int]) -> Counts:
        reasons = {reason: c[key] for key, reason in NOT_ATTEMPTED_REASONS.items() if c.get(key)}
        decided = c["zerocopied"] + c["copied"]
        return cls(zc_requests=c["requests"], bytes=c["bytes"], zerocopied=c["zerocopied"],
                   copied=c["copied"], unknown=max(0, c["requests"] - decided),
                   not_attempted=sum(reasons.values()), not_attempted_reasons=reasons,
                   notifications=c["notifications"])

    def add(self, other: Counts) -> None:
        for name in ("zc_requests", "bytes", "zerocopied", "copied", "unknown", "not_attempted",
                     "notifications"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.not_attempted_reasons.items():
            self.not_attempted_reasons[reason] = self.not_attempted_reasons.get(reason, 0) + n

    @property
    def verdict(self) -> str:
        """One word for a row: the outcome every request shares, else `mixed`."""
        outcomes = {k: v for k, v in (("zerocopied", self.zerocopied), ("copied", self.copied),
                                      ("unknown", self.unknown), ("not_attempted", self.not_attempted)) if v}
        if not outcomes:
            return "-"
        return next(iter(outcomes)) if len(outcomes) == 1 else "mixed"


@dataclass
class Flow:
    """One process's sends through one API and protocol."""

    api: str
    proto: str
    counts: Counts


@dataclass
class ProcessReport:
    pid: int
    comm: str
    counts: Counts
    flows: list[Flow]


@dataclass
class Report:
    tier: str
    totals: Counts
    processes: list[ProcessReport]
    probes: list[dict] = field(default_factory=list)
    kernel_events: dict[str, dict[str, int]] = field(default_factory=dict)
    copy_sites: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _counted(row: StatsRow) -> bool:
    c = row.counters
    return bool(c["requests"] or any(c[k] for k in NOT_ATTEMPTED_REASONS))


def build(snapshot: Snapshot, tier: str, probes: list[dict] | None = None,
          comm: str | None = None) -> Report:
    """Aggregate a snapshot into per-process reports and totals; `comm` filters by name."""
    by_pid: dict[int, ProcessReport] = {}
    totals = Counts()
    for row in snapshot.rows:
        if not _counted(row) or (comm is not None and row.comm != comm):
            continue
        counts = Counts.from_counters(row.counters)
        proc = by_pid.setdefault(row.pid, ProcessReport(row.pid, row.comm, Counts(), []))
        proc.flows.append(Flow(row.api, row.proto, counts))
        proc.counts.add(counts)
        totals.add(counts)
    return Report(
        tier=tier, totals=totals,
        processes=sorted(by_pid.values(), key=lambda p: (-p.counts.zc_requests, p.pid)),
        probes=probes or [],
        kernel_events={k: {"count": c, "bytes": b} for k, (c, b) in snapshot.kevents.items() if c},
        copy_sites=[{"stack": list(s.stack[:8]), "count": s.count, "bytes": s.bytes}
                    for s in snapshot.copy_sites])
