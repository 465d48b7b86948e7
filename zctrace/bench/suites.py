"""`zctrace bench --suite`: the published zerocopy tables reproduced, and the tracer's own cost.

``seed-tables``: requests/s by IO size for copy, MSG_ZEROCOPY (notifications read every 1 and
every 32 sends), io_uring send and SEND_ZC (1 and 8 in flight, registered buffers, notification
waited for or reaped lazily), each cell with MB/s, CPU time per request, speedup against the
copy column and the traced verdict, then io_uring zerocopy against io_uring send and copy per size
with the crossover marked; optionally the C reference sender beside every cell.
``overhead``: copy, MSG_ZEROCOPY and the io_uring zerocopy columns with and without the probes
attached, interleaved rounds, reported as traced/untraced ratios and the probes' own run time per
request (bpf_stats), with every traced cell checked against the kernel's own verdicts.
``crossover``: copy, MSG_ZEROCOPY, io_uring send, SEND_ZC and SEND_ZC from a registered buffer
over a size ladder, untraced, in interleaved rounds (medians), each cell's kernel verdicts kept;
the crossover per API is saved for the advice of trace, top and the exporter (zctrace/crossover.py).
All run the compiled send engine unless --engine python. Here: the columns, the cells and
their runs; tables.py renders them, output.py writes them (JSON records, CSV, plot).
See docs/benchmarks.md for what the columns mean and how they map to the published ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .cells import Cell, open_endpoint, run_on
from ..crossover import NetPath, device_path
from ..cost import program_stats
from ..errors import ZctraceError
from .. import bpfinfo
from ..probes import Session
from ..session import open_session
from ..workload.senders import WorkloadSpec, validate
from ..workload.targets import UDP_ONLY
from .progress import Progress
from .reference import Reference, build_reference, run_reference

SUITES = ("seed-tables", "overhead", "crossover")
SEED_SIZES = (600, 1000, 1200, 1500, 4000, 8000, 65000)
OVERHEAD_SIZES = (1000, 4000, 65000)
CROSSOVER_SIZES = (256, 512, 1000, 2000, 4000, 8000, 16000, 32000, 65000)
PROBE_COUNT = 16  # requests of the trial run that finds the columns a target cannot run
SUITE_DURATION = 1.0


@dataclass(frozen=True)
class Column:
    """One column of the tables: a send mode and its knobs."""

    key: str
    title: str
    mode: str
    notify_batch: int = 32
    inflight: int = 8
    notif: str = "wait"

    def spec(self, target: str, proto: str, size: int, args: argparse.Namespace) -> WorkloadSpec:
        return WorkloadSpec(mode=self.mode, proto=proto, size=size, target=target,
                            duration=None if args.count else (args.duration or SUITE_DURATION),
                            count=args.count, notify_batch=self.notify_batch,
                            inflight=self.inflight, notif=self.notif, batch=args.batch,
                            engine=args.engine)


SEED_COLUMNS = (
    Column("copy", "copy", "copy"),
    Column("msg_zc/1", "MSG_ZC n1", "msg_zerocopy", notify_batch=1),
    Column("msg_zc/32", "MSG_ZC n32", "msg_zerocopy", notify_batch=32),
    Column("uring", "uring send", "uring"),
    Column("zc/1", "zc 1", "uring_zc", inflight=1),
    Column("zc/8", "zc 8", "uring_zc"),
    Column("zc-fixed/8", "zc fixed 8", "uring_zc_fixed"),
    Column("zc-fixed/8-lazy", "zc fixed 8 lazy", "uring_zc_fixed", notif="lazy"),
)
URING_ZC_KEYS = ("zc/1", "zc/8", "zc-fixed/8", "zc-fixed/8-lazy")  # against "uring" and "copy"
CROSSOVER_COLUMNS = tuple(c for c in SEED_COLUMNS if c.key in ("copy", "msg_zc/32", "uring", "zc/8", "zc-fixed/8"))
OVERHEAD_COLUMNS = (*(c for c in SEED_COLUMNS if c.key in ("copy", "msg_zc/32", "zc/8")),
                    Column("zc/8-lazy", "zc 8 lazy", "uring_zc", notif="lazy"),
                    *(c for c in SEED_COLUMNS if c.key in ("zc-fixed/8", "zc-fixed/8-lazy")))


@dataclass
class SuiteCell:
    column: Column
    cell: Cell
    reference: Reference | None = None
    traced_run: bool = True  # overhead suite: was the tracer attached
    round: int = 0
    bpf: dict[str, tuple[int, int]] | None = None  # program -> (run ns, runs) during the cell
    cost_pass: bool = False  # overhead suite: the traced pass with BPF run-time statistics on

    @property
    def where(self) -> tuple[str, str, int]:
        """(target, proto, size): the cell's place in the tables."""
        return self.cell.target, self.cell.proto, self.cell.size

    @property
    def verdict(self) -> str:
        """The verdict of the cell's counts (Cell.counts: the tracer's, the kernel's if untraced)
        in the model's words (Counts.verdict): `-` when no zerocopy was asked."""
        return "-" if self.cell.mode in ("copy", "uring") else self.cell.counts.verdict

    @property
    def really_zerocopy(self) -> bool:
        return self.verdict in ("-", "zerocopied")

    @property
    def ref_ratio(self) -> float | None:
        """The workload's requests/s over the C reference's (1 = as fast; < 1 = slower)."""
        ref = self.reference
        return self.cell.requests_per_s / ref.requests_per_s if ref and ref.requests_per_s else None

    @property
    def ref_cpu(self) -> float | None:
        """The workload's CPU time per request over the reference's (> 1 = a cost of its own)."""
        ref = self.reference
        if not (ref and ref.requests and ref.cpu_seconds):
            return None
        return self.cell.cpu_per_request / (ref.cpu_seconds / ref.requests)


# --- running ---------------------------------------------------------------------------------

def _targets_protos(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(target, proto) pairs: UDP and TCP where the target allows (sinks drop the handshake)."""
    targets = args.target or ["sink"]
    protos = args.proto or ["udp", "tcp"]
    pairs = [(t, p) for t, p in itertools.product(targets, protos)
             if not (t in UDP_ONLY and p == "tcp")]
    if not pairs:
        raise ZctraceError("no runnable combination (tcp cannot use the sink, dummy or bridge target)")
    return pairs


Plan = list[tuple[str, str, int, Column]]  # (target, proto, size, column) in run order


def _plan(args: argparse.Namespace, columns: tuple[Column, ...], sizes: tuple[int, ...]) -> Plan:
    """Every cell of the suite (`sizes` unless --size), each validated before anything runs."""
    sizes = [s for group in args.size for s in group] if args.size else list(sizes)
    plan = [(t, p, size, col) for (t, p) in _targets_protos(args) for size in sizes for col in columns]
    for t, p, size, col in plan:
        try:
            validate(col.spec(t, p, size, args))
        except ValueError as e:
            raise ZctraceError(str(e)) from None
    return plan


def _run_plan(plan: Plan, session: Session | None, progress: Progress, args: argparse.Namespace, out: list[SuiteCell],
              reference: Path | None = None, traced_run: bool = True, rnd: int = 0,
              bpf_stats: bool = False, cost_pass: bool = False) -> None:
    """Run `plan` (opening each target once) into `out` cell by cell, the C reference after each
    cell if given, each program's run time and count over the cell if `bpf_stats`."""
    for (t, p), group in itertools.groupby(plan, key=lambda x: x[:2]):
        with open_endpoint(t, p) as endpoint:
            for _, _, size, col in group:
                spec = col.spec(t, p, size, args)
                before = program_stats(session.bpf.funcs) if bpf_stats else {}
                (cell,) = run_on(endpoint, [spec], session)
                used = None
                if bpf_stats:
                    used = {k: (ns - before[k][0], n - before[k][1])
                            for k, (ns, n) in program_stats(session.bpf.funcs).items() if n > before[k][1]}
                ref = run_reference(reference, endpoint, spec) if reference else None
                out.append(SuiteCell(col, cell, ref, traced_run, rnd, used, cost_pass))
                progress.step(f"{t} {p} {size} B {col.key}: {cell.requests_per_s:,.0f} req/s")


@dataclass
class SuiteRun:
    """What a suite run has so far (filled cell by cell: a signal keeps what was finished)."""

    planned: int = 0
    cells: list[SuiteCell] = field(default_factory=list)
    tier: str | None = None
    paths: dict[tuple[str, str], NetPath | None] = field(default_factory=dict)  # crossover: (target, proto) -> path
    skipped: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)  # crossover: column -> why not
    notes: list[str] = field(default_factory=list)


def run_seed(args: argparse.Namespace, run: SuiteRun) -> None:
    """Every seed-table cell once (traced unless --no-trace), into `run`."""
    plan = _plan(args, SEED_COLUMNS, SEED_SIZES)
    reference = build_reference() if args.reference else None
    run.planned = len(plan)
    session = None if args.no_trace else open_session(args.tier, [os.getpid()])
    run.tier = session and session.tier
    progress = Progress(len(plan))
    try:
        _run_plan(plan, session, progress, args, run.cells, reference)
    finally:
        progress.close()
        if session is not None:
            session.close()


def run_overhead(args: argparse.Namespace, run: SuiteRun) -> None:
    """`--repeat` rounds of every overhead cell traced and untraced, the order alternating per
    round (AB BA AB ...) so that drift does not favour either side, with BPF run-time statistics
    off (they cost each program run two clock reads: the ratios would read them too); then one
    traced pass with them on, for each program's cost. Into `run`."""
    if args.no_trace:
        raise ZctraceError("--suite overhead compares traced with untraced runs: drop --no-trace")
    plan = _plan(args, OVERHEAD_COLUMNS, OVERHEAD_SIZES)
    run.planned = (2 * args.repeat + 1) * len(plan)
    try:
        os.close(bpfinfo.enable_stats())  # fail before running, not after
    except OSError as e:
        raise ZctraceError(f"--suite overhead needs BPF run-time statistics: {e}") from None
    if bpfinfo.stats_sysctl():
        print("zctrace: note: kernel.bpf_stats_enabled=1: the traced/untraced ratios include the cost "
              "of the statistics (sysctl -w kernel.bpf_stats_enabled=0 for the tracer's alone)", file=sys.stderr)
    progress = Progress(run.planned)

    def traced(rnd: int, cost_pass: bool = False) -> None:
        session = open_session(args.tier, [os.getpid()], quiet=run.tier is not None)
        run.tier = args.tier = session.tier  # later rounds load the tier the first one chose
        try:
            _run_plan(plan, session, progress, args, run.cells, rnd=rnd, bpf_stats=cost_pass, cost_pass=cost_pass)
        finally:
            session.close()

    try:
        for rnd in range(args.repeat):
            for on in ((True, False) if rnd % 2 == 0 else (False, True)):
                if on:
                    traced(rnd)
                else:
                    _run_plan(plan, None, progress, args, run.cells, traced_run=False, rnd=rnd)
        stats_fd = bpfinfo.enable_stats()  # on while we hold it
        try:
            traced(args.repeat, cost_pass=True)
        finally:
            os.close(stats_fd)
    finally:
        progress.close()




def _trial(target: str, proto: str, columns: tuple[Column, ...], size: int,
           args: argparse.Namespace) -> tuple[NetPath | None, dict[str, str]]:
    """Open the target once: its path (the egress device), and the columns it cannot run (a
    trial of PROBE_COUNT requests each), with the reason."""
    skipped = {}
    with open_endpoint(target, proto) as endpoint:
        path = (device_path(ifname=endpoint.ifname) if endpoint.ifname
                else device_path(dest=endpoint.addr[0]))
        for col in columns:
            spec = dataclasses.replace(col.spec(target, proto, size, args), count=PROBE_COUNT, duration=None)
            try:
                run_on(endpoint, [spec])
            except (OSError, RuntimeError) as e:
                skipped[col.key] = f"{type(e).__name__}: {e}"
    return path, skipped


def run_crossover(args: argparse.Namespace, run: SuiteRun) -> None:
    """The crossover ladder, untraced (the tracer's own cost would move it): per (target, proto)
    a trial finds the columns it cannot run (skipped, with the reason) and its path; the default
    ladder stops at the path's MTU for UDP; then `--repeat` rounds of every cell, the column
    order reversed every other round so that drift favours none. Into `run`."""
    plan = _plan(args, CROSSOVER_COLUMNS, CROSSOVER_SIZES)
    sizes = sorted({size for _, _, size, _ in plan})
    for (t, p) in dict.fromkeys((t, p) for t, p, _, _ in plan):
        path, skipped = _trial(t, p, CROSSOVER_COLUMNS, sizes[0], args)
        run.paths[(t, p)], run.skipped[(t, p)] = path, skipped
        for key, why in skipped.items():
            run.notes.append(f"{t} {p}: column {key} skipped: {why}")
        if p == "udp" and path is not None and not args.size:
            over = [s for s in sizes if s + 28 > path.mtu]
            if over:
                run.notes.append(f"{t} {p}: sizes {', '.join(map(str, over))} left out: over the MTU "
                                 f"{path.mtu} of {path.ifname} (UDP datagrams bigger than that are copied)")
        plan = [x for x in plan if not (x[:2] == (t, p) and (x[3].key in skipped or (
            p == "udp" and path is not None and not args.size and x[2] + 28 > path.mtu)))]
    run.planned = args.repeat * len(plan)
    progress = Progress(run.planned)
    try:
        for rnd in range(args.repeat):
            order = plan if rnd % 2 == 0 else _reverse_columns(plan)
            _run_plan(order, None, progress, args, run.cells, traced_run=False, rnd=rnd)
    finally:
        progress.close()


def _reverse_columns(plan: Plan) -> Plan:
    """The plan with the columns of each size in reverse order."""
    out: Plan = []
    for _, group in itertools.groupby(plan, key=lambda x: x[:3]):
        out += list(group)[::-1]
    return out
