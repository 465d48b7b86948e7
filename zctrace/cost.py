"""What the probes cost: their BPF run time per traced request, and as a share of the traced
command's CPU time (the observer effect), from the kernel's program run statistics.

The statistics are counted only while they are on: `trace --cost` (and bench's overhead suite)
switch them on for the session alone (BPF_ENABLE_STATS, held by a file descriptor); with
kernel.bpf_stats_enabled=1 they are on anyway. They cost every program run two clock reads
(about 28 ns here), so a run measured with them is a little slower than one without.

The programs run for every process's events, also where a session filtered by pid returns at
once: their runs per request count those too.
"""

from __future__ import annotations

import os
import resource
from dataclasses import asdict, dataclass, field

from . import bpfinfo


def program_stats(funcs: dict) -> dict[str, tuple[int, int]]:
    """Cumulative (run ns, runs) of every loaded program (bcc's `funcs`: name -> function), by
    its event (`syscalls:sys_enter_sendmsg`, `kfunc:io_tx_ubuf_complete`, ...)."""
    out = {}
    for name, fn in funcs.items():
        st = bpfinfo.prog_stats(fn.fd)
        out[bpfinfo.program_event(name if isinstance(name, bytes) else name.encode())] = (st.run_time_ns, st.run_count)
    return out


@dataclass(frozen=True)
class ProgramCost:
    program: str  # its event
    runs: int
    ns: int


@dataclass
class Cost:
    """The probes' run time over a session, against the requests it traced."""

    how: str  # "--cost" (statistics on for this session) or "kernel.bpf_stats_enabled=1"
    requests: int  # zerocopy requests traced (and sends never attempted zero-copy)
    programs: list[ProgramCost] = field(default_factory=list)  # those that ran, most time first
    cpu_seconds: float | None = None  # the traced command's CPU time (trace -- CMD), else None

    @property
    def runs(self) -> int:
        return sum(p.runs for p in self.programs)

    @property
    def ns(self) -> int:
        return sum(p.ns for p in self.programs)

    @property
    def ns_per_request(self) -> float | None:
        return self.ns / self.requests if self.requests else None

    @property
    def runs_per_request(self) -> float | None:
        return self.runs / self.requests if self.requests else None

    @property
    def cpu_share(self) -> float | None:
        """The probes' run time over the traced command's CPU time."""
        return self.ns / 1e9 / self.cpu_seconds if self.cpu_seconds else None

    def to_json(self) -> dict:
        doc = asdict(self)
        doc.update(measured=True, runs=self.runs, ns=self.ns, ns_per_request=self.ns_per_request,
                   runs_per_request=self.runs_per_request, cpu_share=self.cpu_share)
        return doc


NOT_MEASURED = ("tracer cost: not measured (zctrace trace --cost measures it; BPF statistics add about "
                "28 ns to every program run while on)")


def describe(doc: dict | None) -> str:
    """One line for a report: a Cost's to_json(), or None (not measured: how to measure it)."""
    if doc is None:
        return NOT_MEASURED
    if not doc["requests"]:
        return f"tracer cost: {doc['ns'] / 1e6:.2f} ms in {doc['runs']} program runs; no zerocopy request traced"
    text = (f"tracer cost: {doc['ns_per_request']:.0f} ns of BPF programs per request ({doc['runs_per_request']:.1f} "
            f"runs of {doc['ns'] / max(doc['runs'], 1):.0f} ns, {doc['requests']} requests)")
    if doc["cpu_share"] is not None:
        text += f", {doc['cpu_share']:.2%} of the traced command's {doc['cpu_seconds']:.2f} s of CPU"
    return text + f"; statistics from {doc['how']}, other processes' filtered events included"


class Meter:
    """Program run statistics from now on (`enable`: switched on for as long as the meter is
    open); None from stop() when they were off."""

    def __init__(self, funcs: dict, enable: bool) -> None:
        self._funcs = funcs
        self._fd = None
        self.error = ""
        if enable:
            try:
                self._fd = bpfinfo.enable_stats()
            except OSError as e:
                self.error = f"--cost: BPF statistics cannot be switched on here: {e.strerror}"
        self.how = "--cost" if self._fd is not None else "kernel.bpf_stats_enabled=1" if bpfinfo.stats_sysctl() else ""
        self._start = program_stats(funcs) if self.how else {}

    def stop(self, requests: int, cpu_seconds: float | None = None) -> Cost | None:
        if not self.how:
            return None
        now = program_stats(self._funcs)
        programs = [ProgramCost(event, n - self._start.get(event, (0, 0))[1], ns - self._start.get(event, (0, 0))[0])
                    for event, (ns, n) in now.items() if n > self._start.get(event, (0, 0))[1]]
        return Cost(self.how, requests, sorted(programs, key=lambda p: -p.ns), cpu_seconds)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's waited-for children so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
