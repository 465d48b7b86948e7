"""Benchmark cells: the built-in workload run against a target, each cell's kernel verdicts
(from the notifications the workload reads) beside the tracer's for the same requests."""

from __future__ import annotations

import itertools
import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass

from .. import model, snapshot


@dataclass
class Cell:
    """One benchmark result: the workload's numbers, the kernel's verdicts, the tracer's."""

    mode: str
    proto: str
    size: int
    target: str
    requests: int
    seconds: float
    cpu_seconds: float
    kernel: dict[str, int]
    tracer_counts: model.Counts | None  # model.build's counts of the cell's sends (None: untraced)
    lost: dict[str, int] | None = None  # events the probes could not record (None: untraced)
    engine: str = "c"  # which send loops ran: "c" (compiled) or "python"

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def bytes_per_s(self) -> float:
        return self.requests_per_s * self.size

    @property
    def traced(self) -> dict[str, int] | None:
        """The tracer's counts as the JSON records and the tables show them (None: untraced)."""
        t = self.tracer_counts
        if t is None:
            return None
        return {"requests": t.zc_requests, "zerocopied": t.zerocopied, "copied": t.copied,
                "unknown": t.unknown, "not_attempted": t.not_attempted}

    @property
    def counts(self) -> model.Counts:
        """The cell's verdicts: the tracer's (model.build's) if traced, else the kernel's own
        (every request zerocopied, copied or unknown: no verdict came) in the model's Counts."""
        if self.tracer_counts is not None:
            return self.tracer_counts
        k = self.kernel
        return model.Counts(zc_requests=self.requests, zerocopied=k["zerocopied"], copied=k["copied"],
                            unknown=k["unknown"])

    @property
    def matches(self) -> bool | None:
        """Tracer agrees with the kernel on every request it has a verdict for (None: untraced)."""
        t = self.tracer_counts
        if t is None:
            return None
        zc_mode = self.mode in ("msg_zerocopy", "uring_zc", "uring_zc_fixed") and self.kernel["so_zerocopy"]
        if not zc_mode:
            return t.zc_requests == 0
        if t.zc_requests != self.requests:
            return False
        if self.kernel["unknown"]:  # the kernel gave no verdict (io_uring without REPORT_USAGE)
            return t.zerocopied + t.copied + t.unknown == self.requests
        return (t.zerocopied, t.copied) == (self.kernel["zerocopied"], self.kernel["copied"])

    @property
    def cpu_per_request(self) -> float:
        """Seconds of the sending thread's CPU time per request."""
        return self.cpu_seconds / self.requests if self.requests else 0.0

    def to_json(self) -> dict:
        return {"mode": self.mode, "proto": self.proto, "size": self.size, "target": self.target,
                "engine": self.engine, "requests": self.requests, "seconds": round(self.seconds, 6),
                "cpu_seconds": round(self.cpu_seconds, 6),
                "requests_per_s": round(self.requests_per_s, 1), "bytes_per_s": round(self.bytes_per_s, 1),
                "kernel": {k: self.kernel[k] for k in ("zerocopied", "copied", "unknown")},
                "traced": self.traced, "lost": self.lost, "match": self.matches}


def flow_counts(report: model.Report, api: str, proto: str) -> model.Counts:
    """The counts of a model report's flows of `api` ("msg_zerocopy", "io_uring") and `proto`."""
    counts = model.Counts()
    for proc in report.processes:
        for flow in proc.flows:
            if (flow.api, flow.proto) == (api, proto):
                counts.add(flow.counts)
    return counts


def traced_counts(snap: snapshot.Snapshot, spec, tier: str = "tracepoint") -> model.Counts:
    """The tracer's counts (model.build's) for this process's sends of `spec`'s API and protocol."""
    api = "msg_zerocopy" if spec.mode in ("copy", "msg_zerocopy") else "io_uring"
    return flow_counts(model.build(snap, tier, pids={os.getpid()}), api, spec.proto)


def run_on(endpoint, specs: list, session=None, progress=None) -> list[Cell]:
    """Run specs against an open target; `session` (probes) checks each cell."""
    from ..workload.senders import run_workload
    cells = []
    for spec in specs:
        if session is not None:
            session.clear()
        r = run_workload(spec, endpoint)
        kernel = {"zerocopied": r.kernel_zerocopied, "copied": r.kernel_copied,
                  "unknown": r.kernel_unknown, "so_zerocopy": spec.so_zerocopy}
        traced = lost = None
        if session is not None:
            snap = snapshot.take(session.bpf)
            traced = traced_counts(snap, spec, session.tier)
            lost = {k: v for k, v in snap.errors.items() if v}
        cell = Cell(spec.mode, spec.proto, spec.size, spec.target, r.requests, r.seconds,
                    r.cpu_seconds, kernel, tracer_counts=traced, lost=lost, engine=spec.engine)
        cells.append(cell)
        if progress:
            progress(cell)
    return cells


def open_endpoint(target: str, proto: str):
    """Context manager: a local target set up (and removed) for `proto`, or a remote ADDR:PORT."""
    from ..workload.senders import remote_endpoint
    from ..workload.targets import open_target
    remote = remote_endpoint(target)
    return nullcontext(remote) if remote else open_target(target, proto)


def run(specs: list, session=None, progress=None) -> list[Cell]:
    """Run every spec, opening each target once."""
    cells = []
    for (target, proto), group in itertools.groupby(specs, key=lambda s: (s.target, s.proto)):
        with open_endpoint(target, proto) as endpoint:
            cells += run_on(endpoint, list(group), session, progress)
    return cells


def engine_note(cells: list[Cell]) -> str:
    """Which send loops produced `cells`, for every table's title."""
    names = {"c": "compiled C engine", "python": "Python engine"}
    return "workload: " + " and ".join(names[e] for e in dict.fromkeys(c.engine for c in cells))


def check_status(cells: list[Cell]) -> int:
    """--check: 1 (with the reason on stderr) if any cell's traced counts differ from the
    kernel's or the probes lost events, else 0."""
    if any(c.matches is False for c in cells):
        print("zctrace: tracer verdicts differ from the kernel's (see MATCH)", file=sys.stderr)
        return 1
    if any(c.lost for c in cells):
        print("zctrace: the probes lost events (BPF maps full): counts are incomplete", file=sys.stderr)
        return 1
    return 0
