"""`zctrace bench --suite`: the published zerocopy tables reproduced, and the tracer's own cost.

``seed-tables``: requests/s by IO size for copy, MSG_ZEROCOPY (notifications read every 1 and
every 32 sends), io_uring send and SEND_ZC (1 and 8 in flight, registered buffers, notification
waited for or reaped lazily), each cell with MB/s, CPU time per request, speedup against the
copy column and the traced verdict, then io_uring zerocopy against io_uring send and copy per size
with the crossover marked; optionally the C reference sender beside every cell.
``overhead``: copy, MSG_ZEROCOPY and the io_uring zerocopy columns with and without the probes
attached, interleaved rounds, reported as traced/untraced ratios and the probes' own run time per
request (bpf_stats), with every traced cell checked against the kernel's own verdicts.
Both run the compiled send engine unless --engine python.
See docs/benchmarks.md for what the columns mean and how they map to the published ones.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from . import interrupts, report
from .cells import Cell, check_status, engine_note, open_endpoint, run_on
from .errors import ZctraceError
from .exporter import bpfinfo
from .paths import reference_source
from .probes import Session
from .session import open_session
from .workload.senders import WorkloadSpec, validate
from .workload.targets import UDP_ONLY, Endpoint

SUITES = ("seed-tables", "overhead")
SEED_SIZES = (600, 1000, 1200, 1500, 4000, 8000, 65000)
OVERHEAD_SIZES = (1000, 4000, 65000)
SUITE_DURATION = 1.0
REFERENCE_SOURCES = (reference_source(), Path(__file__).resolve().parent / "workload" / "engine.c",
                     Path(__file__).resolve().parent / "workload" / "engine.h")


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
OVERHEAD_COLUMNS = (*(c for c in SEED_COLUMNS if c.key in ("copy", "msg_zc/32", "zc/8")),
                    Column("zc/8-lazy", "zc 8 lazy", "uring_zc", notif="lazy"),
                    *(c for c in SEED_COLUMNS if c.key in ("zc-fixed/8", "zc-fixed/8-lazy")))


@dataclass
class Reference:
    """What the C reference sender did in the same cell."""

    requests: int
    seconds: float
    cpu_seconds: float
    zerocopied: int
    copied: int

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


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
    def verdict(self) -> str:
        """The tracer's verdict (the kernel's if untraced): `-` when no zerocopy was asked."""
        c = self.cell
        if c.mode in ("copy", "uring"):
            return "-"
        counts = c.traced if c.traced is not None else c.kernel
        if counts["zerocopied"] == c.requests:
            return "zerocopy"
        if counts["copied"] == c.requests:
            return "COPIED"
        return "partly copied" if counts["copied"] else "unknown"

    @property
    def really_zerocopy(self) -> bool:
        return self.verdict in ("-", "zerocopy")

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


# --- progress --------------------------------------------------------------------------------

class Progress:
    """A progress bar on a terminal, one plain line per step otherwise."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.tty = stream.isatty()
        self.t0 = time.monotonic()

    def step(self, what: str) -> None:
        self.done += 1
        if not self.tty:
            print(f"zctrace: bench {self.done}/{self.total}: {what}", file=self.stream, flush=True)
            return
        filled = self.WIDTH * self.done // self.total
        elapsed = time.monotonic() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        line = (f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total} "
                f"{elapsed:.0f}s, ~{eta:.0f}s left  {what}")
        self.stream.write(line[:shutil.get_terminal_size().columns].ljust(40) + "\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.done:
            self.stream.write("\n")
            self.stream.flush()


# --- the C reference sender --------------------------------------------------------------------

def build_reference() -> Path:
    """Compile scripts/zc_ref_sender.c with the engine (once per source version) and return the
    binary: the engine's loops alone in a process of their own."""
    missing = [p.name for p in REFERENCE_SOURCES if not p.exists()]
    if missing:
        raise ZctraceError(f"--reference needs {', '.join(missing)} from a source checkout")
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise ZctraceError("--reference needs a C compiler (apt-get install gcc)")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in REFERENCE_SOURCES)).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zctrace"
    binary = cache / f"zc_ref_sender-{digest}"
    if not binary.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_suffix(f".{os.getpid()}")
        sender, engine, header = REFERENCE_SOURCES
        r = subprocess.run([gcc, "-O2", "-I", str(header.parent), "-o", str(tmp), str(sender),
                            str(engine)], capture_output=True, text=True)
        if r.returncode:
            raise ZctraceError(f"the C reference does not compile: {r.stderr.strip().splitlines()[-1]}")
        tmp.replace(binary)
    return binary


def run_reference(binary: Path, endpoint: Endpoint, spec: WorkloadSpec) -> Reference:
    """Run the C sender with `spec`'s loop on `endpoint` (already set up) and read its result."""
    argv = [str(binary), "-a", endpoint.addr[0], "-p", str(endpoint.addr[1]), "-P", spec.proto,
            "-s", str(spec.size), "-m", spec.mode, "-N", str(spec.notify_batch),
            "-b", str(spec.batch), "-f", str(spec.inflight), "-w", spec.notif,
            "-r", str(int(spec.report_usage))]
    argv += ["-n", str(spec.count)] if spec.count else ["-t", str(spec.duration)]
    if endpoint.ifname:
        argv += ["-i", endpoint.ifname]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60 + (spec.duration or 0))
    if r.returncode:
        raise ZctraceError(f"the C reference failed: {r.stderr.strip() or r.returncode}")
    d = json.loads(r.stdout)
    return Reference(d["requests"], d["seconds"], d["cpu_seconds"], d["zerocopied"], d["copied"])


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


def program_stats(session: Session) -> dict[str, tuple[int, int]]:
    """Cumulative (run ns, runs) of every loaded program, by its event (counted only while BPF
    run-time statistics are on; every process's events count, ours or not)."""
    out = {}
    for name, fn in session.bpf.funcs.items():
        st = bpfinfo.prog_stats(fn.fd)
        kind, _, event = name.decode().partition("__")
        out[event.replace("__", ":") if kind == "tracepoint" else f"{kind}:{event}"] = \
            (st.run_time_ns, st.run_count)
    return out


def _run_plan(plan: Plan, session: Session | None, progress: Progress, args: argparse.Namespace, out: list[SuiteCell],
              reference: Path | None = None, traced_run: bool = True, rnd: int = 0,
              bpf_stats: bool = False, cost_pass: bool = False) -> None:
    """Run `plan` (opening each target once) into `out` cell by cell, the C reference after each
    cell if given, each program's run time and count over the cell if `bpf_stats`."""
    for (t, p), group in itertools.groupby(plan, key=lambda x: x[:2]):
        with open_endpoint(t, p) as endpoint:
            for _, _, size, col in group:
                spec = col.spec(t, p, size, args)
                before = program_stats(session) if bpf_stats else {}
                (cell,) = run_on(endpoint, [spec], session)
                used = None
                if bpf_stats:
                    used = {k: (ns - before[k][0], n - before[k][1])
                            for k, (ns, n) in program_stats(session).items() if n > before[k][1]}
                ref = run_reference(reference, endpoint, spec) if reference else None
                out.append(SuiteCell(col, cell, ref, traced_run, rnd, used, cost_pass))
                progress.step(f"{t} {p} {size} B {col.key}: {cell.requests_per_s:,.0f} req/s")


def _open_session(args: argparse.Namespace, quiet: bool = False) -> Session:
    """Probes for this process (the tier line and probe warnings on stderr unless `quiet`)."""
    if not quiet:
        return open_session(args.tier, [os.getpid()])
    from .btf import Btf
    return Session.open(args.tier, Btf.load(), pids=[os.getpid()])


@dataclass
class SuiteRun:
    """What a suite run has so far (filled cell by cell: a signal keeps what was finished)."""

    planned: int = 0
    cells: list[SuiteCell] = field(default_factory=list)
    tier: str | None = None


def run_seed(args: argparse.Namespace, run: SuiteRun) -> None:
    """Every seed-table cell once (traced unless --no-trace), into `run`."""
    plan = _plan(args, SEED_COLUMNS, SEED_SIZES)
    reference = build_reference() if args.reference else None
    run.planned = len(plan)
    session = None if args.no_trace else _open_session(args)
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
        session = _open_session(args, quiet=run.tier is not None)
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


# --- tables ----------------------------------------------------------------------------------

def _key(sc: SuiteCell) -> tuple[str, str, int]:
    return sc.cell.target, sc.cell.proto, sc.cell.size


def speedups(cells: list[SuiteCell]) -> dict[int, float]:
    """id(cell) -> requests/s relative to the copy column of the same target, proto and size."""
    copy = {_key(sc): sc.cell.requests_per_s for sc in cells if sc.column.key == "copy"}
    return {id(sc): sc.cell.requests_per_s / copy[_key(sc)] for sc in cells
            if copy.get(_key(sc))}


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.0f}%"


def render_seed(cells: list[SuiteCell], tier: str | None) -> str:
    """The published-style tables (req/s and speedup by size) and the per-cell details."""
    up = speedups(cells)
    columns = [c for c in SEED_COLUMNS if any(sc.column is c for sc in cells)]
    out = [f"zctrace bench --suite seed-tables ({engine_note([sc.cell for sc in cells])}; "
           f"{f'tracer tier: {tier}' if tier else 'untraced'})"]
    for (target, proto), group in itertools.groupby(cells, key=lambda sc: _key(sc)[:2]):
        group = list(group)
        out.append(f"\n{target} {proto}: requests/s (vs copy); * = sends not really zero-copy")
        rows = []
        for size, row in itertools.groupby(group, key=lambda sc: sc.cell.size):
            by_col = {sc.column.key: sc for sc in row}
            rows.append([size] + [_seed_cell(by_col.get(c.key), up) for c in columns])
        out.append(report.table(["IO size"] + [c.title for c in columns], rows))
        for measure in COMPARE_BY:
            out += zc_comparison(group, measure)
    out.append("\nper cell:")
    head = ["TARGET", "PROTO", "SIZE", "COLUMN", "REQ/S", "MB/S", "CPU/REQ", "VS COPY", "VERDICT"]
    with_ref = any(sc.reference for sc in cells)
    if with_ref:
        head += ["C REF REQ/S", "C REF CPU/REQ", "W/REF REQ/S", "W/REF CPU"]
    rows = []
    for sc in cells:
        c = sc.cell
        row = [c.target, c.proto, c.size, sc.column.key, f"{c.requests_per_s:,.0f}",
               f"{c.bytes_per_s / 1e6:,.1f}", f"{c.cpu_per_request * 1e6:.2f} us",
               _pct(up[id(sc)]) if id(sc) in up else "-",
               sc.verdict + (" (lost events)" if c.lost else "")]
        if with_ref:
            ref = sc.reference
            row += ([f"{ref.requests_per_s:,.0f}", f"{ref.cpu_seconds / ref.requests * 1e6:.2f} us",
                     f"{sc.ref_ratio:.2f}", f"{sc.ref_cpu:.2f}"]
                    if sc.ref_ratio and sc.ref_cpu else ["-"] * 4)
        rows.append(row)
    out.append(report.table(head, rows))
    if with_ref:
        out.append(f"\nThe workload ({engine_note([sc.cell for sc in cells])}) against the C "
                   "reference sender (the engine's loops in a process of their own) in the same "
                   "cells of this run (geometric means over the cells; requests/s: 1 = as fast, "
                   "CPU per request: 1 = no cost of its own):")
        out.append(report.table(["COLUMN", "W/REF REQ/S", "MIN", "MAX", "W/REF CPU/REQ", "MIN", "MAX"],
                                ref_summary(cells)))
    return "\n".join(out)


def crossover(ratios: dict[int, float]) -> int | None:
    """The smallest size from which `ratios` (size -> zerocopy over baseline) stay >= 1."""
    best = None
    for size in sorted(ratios, reverse=True):
        if ratios[size] < 1:
            break
        best = size
    return best


COMPARE_BY = {  # what zc_comparison compares: a per-cell figure where higher is better
    "requests/s": lambda c: c.requests_per_s,
    "requests per CPU second of the sender, steadier when other work shares the CPUs":
        lambda c: 1 / c.cpu_per_request if c.cpu_per_request else 0.0,
}


def zc_comparison(group: list[SuiteCell], measure: str) -> list[str]:
    """Per size, each io_uring zerocopy column against io_uring send (the published comparison)
    and against copy by `measure` (a COMPARE_BY key); ^ marks the crossover (from there on
    zerocopy stays ahead)."""
    by = {(sc.column.key, sc.cell.size): COMPARE_BY[measure](sc.cell) for sc in group}
    sizes = sorted({sc.cell.size for sc in group})
    keys = [k for k in URING_ZC_KEYS if any((k, s) in by for s in sizes)]
    if not keys:
        return []
    ratios = {(k, base): {s: by[k, s] / by[base, s] for s in sizes
                          if by.get((k, s)) and by.get((base, s))}
              for k in keys for base in ("uring", "copy")}
    cross = {kb: crossover(r) for kb, r in ratios.items()}
    head, rows = ["IO size"], []
    for k in keys:
        title = next(c.title for c in SEED_COLUMNS if c.key == k)
        head += [f"{title} vs uring send", f"{title} vs copy"]
    for s in sizes:
        row: list = [s]
        for kb in ((k, base) for k in keys for base in ("uring", "copy")):
            r = ratios[kb].get(s)
            row.append("-" if r is None else _pct(r) + (" ^" if cross[kb] == s else ""))
        rows.append(row)
    ahead = lambda kb: f"from {cross[kb]} B" if cross[kb] else f"never (behind at {sizes[-1]} B)"
    notes = [f"  {next(c.title for c in SEED_COLUMNS if c.key == k)}: ahead of uring send "
             f"{ahead((k, 'uring'))}, of copy {ahead((k, 'copy'))}" for k in keys]
    return [f"\nio_uring zerocopy against io_uring send and copy ({measure}; ^ = crossover, the "
            "smallest size from which zerocopy stays ahead):", report.table(head, rows),
            "crossover:", *notes]


def _seed_cell(sc: SuiteCell | None, up: dict[int, float]) -> str:
    if sc is None:
        return "-"
    text = f"{sc.cell.requests_per_s:,.0f}"
    if sc.column.key != "copy" and id(sc) in up:
        text += f" ({_pct(up[id(sc)])})"
    return text + ("" if sc.really_zerocopy else " *")


def ref_summary(cells: list[SuiteCell]) -> list[list[str]]:
    """Per column: geometric mean, min and max of Python/C requests/s and CPU per request."""
    rows = []
    for col in SEED_COLUMNS:
        mine = [sc for sc in cells if sc.column is col and sc.ref_ratio and sc.ref_cpu]
        if mine:
            row = [col.key]
            for ratios in ([sc.ref_ratio for sc in mine], [sc.ref_cpu for sc in mine]):
                row += [f"{statistics.geometric_mean(ratios):.2f}", f"{min(ratios):.2f}",
                        f"{max(ratios):.2f}"]
            rows.append(row)
    return rows


@dataclass
class Overhead:
    """One overhead cell: medians of the traced and untraced runs."""

    target: str
    proto: str
    size: int
    column: str
    untraced_rps: float
    traced_rps: float
    untraced_cpu: float
    traced_cpu: float
    runs: int
    exact: bool  # every traced run: traced counts == kernel's, nothing lost
    programs: dict[str, tuple[float, float]]  # program -> median (ns, runs) per request, traced

    @property
    def bpf_ns_per_request(self) -> float:
        """The probes' run time per request (sum over programs of the per-program medians)."""
        return sum(ns for ns, _ in self.programs.values())

    @property
    def ratio(self) -> float:
        return self.traced_rps / self.untraced_rps if self.untraced_rps else 0.0

    @property
    def cpu_ratio(self) -> float:
        return self.traced_cpu / self.untraced_cpu if self.untraced_cpu else 0.0

    def to_json(self) -> dict:
        return {"target": self.target, "proto": self.proto, "size": self.size, "column": self.column,
                "untraced_requests_per_s": round(self.untraced_rps, 1),
                "traced_requests_per_s": round(self.traced_rps, 1),
                "ratio": round(self.ratio, 4), "cpu_per_request_ratio": round(self.cpu_ratio, 4),
                "runs": self.runs, "exact": self.exact,
                "bpf_ns_per_request": round(self.bpf_ns_per_request, 1),
                "programs": {k: {"ns_per_request": round(ns, 1), "runs_per_request": round(n, 3)}
                             for k, (ns, n) in self.programs.items()}}


def overheads(cells: list[SuiteCell]) -> list[Overhead]:
    """Traced/untraced medians per (target, proto, size, column)."""
    groups: dict[tuple, list[SuiteCell]] = {}
    for sc in cells:
        groups.setdefault((*_key(sc), sc.column.key), []).append(sc)
    out = []
    for (target, proto, size, col), scs in groups.items():
        on = [sc.cell for sc in scs if sc.traced_run and not sc.cost_pass]
        off = [sc.cell for sc in scs if not sc.traced_run]
        if not (on and off):  # a run stopped before this cell's other side
            continue
        med = lambda cs, f: statistics.median(f(c) for c in cs)
        out.append(Overhead(target, proto, size, col,
                            med(off, lambda c: c.requests_per_s), med(on, lambda c: c.requests_per_s),
                            med(off, lambda c: c.cpu_per_request), med(on, lambda c: c.cpu_per_request),
                            len(on), all(c.matches is not False and not c.lost for c in on),
                            _program_medians([sc for sc in scs if sc.cost_pass])))
    return out


def _program_medians(traced: list[SuiteCell]) -> dict[str, tuple[float, float]]:
    """Per program: medians over the traced runs of its ns and runs per request (0 in a run
    where it did not run)."""
    names = sorted({k for sc in traced for k in sc.bpf or {}})
    per = lambda sc, k, i: (sc.bpf or {}).get(k, (0, 0))[i] / sc.cell.requests if sc.cell.requests else 0.0
    return {k: (statistics.median(per(sc, k, 0) for sc in traced),
                statistics.median(per(sc, k, 1) for sc in traced)) for k in names}


def threshold_failures(ohs: list[Overhead], args: argparse.Namespace) -> list[str]:
    """--max-ns-per-request / --min-ratio: one line per cell over budget."""
    bad = []
    for o in ohs:
        cell = f"{o.target} {o.proto} {o.size} B {o.column}"
        if args.max_ns_per_request is not None and o.bpf_ns_per_request > args.max_ns_per_request:
            bad.append(f"{cell}: probes {o.bpf_ns_per_request:.0f} ns per request "
                       f"(> {args.max_ns_per_request:g})")
        if args.min_ratio is not None and o.ratio < args.min_ratio:
            bad.append(f"{cell}: traced/untraced {o.ratio:.3f} (< {args.min_ratio:g})")
    return bad


def render_overhead(ohs: list[Overhead], tier: str, repeat: int, engine: str) -> str:
    head = ["TARGET", "PROTO", "SIZE", "COLUMN", "UNTRACED REQ/S", "TRACED REQ/S", "TRACED/UNTRACED",
            "CPU/REQ RATIO", "BPF NS/REQ", "COUNTS"]
    rows = [[o.target, o.proto, o.size, o.column, f"{o.untraced_rps:,.0f}", f"{o.traced_rps:,.0f}",
             f"{o.ratio:.3f}", f"{o.cpu_ratio:.3f}", f"{o.bpf_ns_per_request:.0f}",
             "exact" if o.exact else "MISMATCH/LOST"] for o in ohs]
    progs = [[o.target, o.proto, o.size, o.column, name, f"{n:.2f}", f"{ns / n:.0f}" if n else "-",
              f"{ns:.0f}"] for o in ohs for name, (ns, n) in o.programs.items() if n >= 0.005]
    engine_name = "compiled C engine" if engine == "c" else "Python engine"
    return (f"zctrace bench --suite overhead (workload: {engine_name}; tracer tier: {tier}; medians "
            f"of {repeat} interleaved rounds with BPF statistics off; BPF time from one more traced pass with "
            f"them on, every process's events)\n"
            + report.table(head, rows) + "\n\nper program (runs of at least 0.005 per request):\n"
            + report.table(["TARGET", "PROTO", "SIZE", "COLUMN", "PROGRAM", "RUNS/REQ", "NS/RUN",
                            "NS/REQ"], progs))


# --- files -----------------------------------------------------------------------------------

CSV_FIELDS = ("target", "proto", "size", "column", "engine", "mode", "notify_batch", "inflight", "notif",
              "batch", "traced_run", "cost_pass", "round", "requests", "seconds", "cpu_seconds", "requests_per_s",
              "bytes_per_s", "cpu_us_per_request", "speedup_vs_copy", "verdict", "kernel_zerocopied",
              "kernel_copied", "kernel_unknown", "traced_zerocopied", "traced_copied", "traced_unknown",
              "lost", "match", "c_requests_per_s", "c_cpu_us_per_request", "ref_ratio",
              "ref_cpu", "bpf_ns_per_request")


def _record(sc: SuiteCell, spec: WorkloadSpec, up: dict[int, float]) -> dict:
    """The JSON result of one cell: bench's contract plus the suite's columns."""
    c, ref = sc.cell, sc.reference
    doc = c.to_json()
    doc.update({"column": sc.column.key, "notify_batch": spec.notify_batch, "inflight": spec.inflight,
                "notif": spec.notif, "batch": spec.batch, "traced_run": sc.traced_run, "cost_pass": sc.cost_pass,
                "round": sc.round, "cpu_us_per_request": round(c.cpu_per_request * 1e6, 3),
                "speedup_vs_copy": round(up[id(sc)], 4) if id(sc) in up else None,
                "verdict": sc.verdict, "reference": None, "ref_ratio": None,
                "ref_cpu": None, "bpf": None, "bpf_ns_per_request": None})
    if sc.bpf is not None:
        doc["bpf"] = {k: {"run_time_ns": ns, "runs": n} for k, (ns, n) in sc.bpf.items()}
        doc["bpf_ns_per_request"] = (round(sum(ns for ns, _ in sc.bpf.values()) / c.requests, 1)
                                     if c.requests else None)
    if ref is not None:
        doc["reference"] = {"requests": ref.requests, "seconds": round(ref.seconds, 6),
                            "cpu_seconds": round(ref.cpu_seconds, 6),
                            "requests_per_s": round(ref.requests_per_s, 1),
                            "kernel": {"zerocopied": ref.zerocopied, "copied": ref.copied}}
        doc["ref_ratio"] = round(sc.ref_ratio, 4) if sc.ref_ratio else None
        doc["ref_cpu"] = round(sc.ref_cpu, 4) if sc.ref_cpu else None
    return doc


def records(cells: list[SuiteCell], args: argparse.Namespace) -> list[dict]:
    up = speedups(cells)
    return [_record(sc, sc.column.spec(sc.cell.target, sc.cell.proto, sc.cell.size, args), up)
            for sc in cells]


def _csv_row(doc: dict) -> dict:
    ref = doc["reference"] or {}
    traced = doc["traced"] or {}
    flat = {k: doc.get(k) for k in CSV_FIELDS}
    flat.update({f"kernel_{k}": doc["kernel"][k] for k in ("zerocopied", "copied", "unknown")})
    flat.update({f"traced_{k}": traced.get(k) for k in ("zerocopied", "copied", "unknown")})
    flat["lost"] = sum((doc["lost"] or {}).values()) if doc["lost"] is not None else None
    flat["c_requests_per_s"] = ref.get("requests_per_s")
    flat["c_cpu_us_per_request"] = (round(ref["cpu_seconds"] / ref["requests"] * 1e6, 3)
                                    if ref.get("requests") else None)
    return flat


def write_csv(docs: list[dict], path: str) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for doc in docs:
        w.writerow(_csv_row(doc))
    if path == "-":
        sys.stdout.write(buf.getvalue())
    else:
        Path(path).write_text(buf.getvalue())


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ZctraceError("--plot needs matplotlib: pip install 'zctrace[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_plot(cells: list[SuiteCell], path: str, title: str) -> None:
    """req/s against IO size, one line per column and one panel per target and protocol;
    a cross marks a cell whose sends were not really zero-copy."""
    plt = _pyplot()
    panels = list(dict.fromkeys(_key(sc)[:2] for sc in cells))
    ncols = min(2, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7 * ncols, 5 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (target, proto) in zip(axes.flat, panels):
        for i, col in enumerate(SEED_COLUMNS):
            scs = [sc for sc in cells if sc.column is col and _key(sc)[:2] == (target, proto)]
            if not scs:
                continue
            color = f"C{i}"
            xs = [sc.cell.size for sc in scs]
            ys = [sc.cell.requests_per_s for sc in scs]
            ax.plot(xs, ys, "-o", color=color, label=col.title, markersize=4)
            bad = [(x, y) for x, y, sc in zip(xs, ys, scs) if not sc.really_zerocopy]
            if bad:
                ax.plot(*zip(*bad), "x", color="black", markersize=9)
        ax.set_xscale("log")
        ax.set_xticks(sorted({sc.cell.size for sc in cells}))
        ax.set_xticklabels([str(s) for s in sorted({sc.cell.size for sc in cells})], rotation=45)
        ax.set_xlabel("IO size (bytes)")
        ax.set_ylabel("requests/s")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{target} {proto}  (x = not really zero-copy)")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- entry point -----------------------------------------------------------------------------

def run_suite(args: argparse.Namespace) -> int:
    """`zctrace bench --suite NAME`: run, print the tables, write --json/--csv/--plot."""
    if args.mode:
        raise ZctraceError("--suite picks its own modes: drop --mode")
    if args.plot:
        if args.suite != "seed-tables":
            raise ZctraceError("--plot needs --suite seed-tables")
        _pyplot()  # fail before running, not after
    if args.reference and args.suite != "seed-tables":
        raise ZctraceError("--reference needs --suite seed-tables")
    started = time.time()
    run, stopped = SuiteRun(), None
    try:
        with interrupts.raising():
            (run_seed if args.suite == "seed-tables" else run_overhead)(args, run)
    except KeyboardInterrupt:
        stopped = signal.Signals(interrupts.received() or signal.SIGINT).name
    cells, tier = run.cells, run.tier
    if args.suite == "seed-tables":
        print(render_seed(cells, tier))
    else:
        ohs = overheads(cells)
        print(render_overhead(ohs, tier, args.repeat, args.engine))
    docs = records(cells, args)
    if args.json:
        doc = {"suite": args.suite, "tier": tier, "engine": args.engine, "command": " ".join(["zctrace", *sys.argv[1:]]),
               "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
               "host": {"kernel": platform.release(), "cpus": os.cpu_count()}, "results": docs}
        if args.suite == "overhead":
            doc["overhead"] = [o.to_json() for o in ohs]
        report.write_json(doc, args.json)
    if args.csv:
        write_csv(docs, args.csv)
    if args.plot:
        write_plot(cells, args.plot, f"zctrace bench --suite seed-tables, {time.strftime('%Y-%m-%d')}, "
                                     f"kernel {platform.release()}, {engine_note([sc.cell for sc in cells])}")
    if stopped:
        print(f"zctrace: stopped by {stopped} after {len(cells)} of {run.planned} cells", file=sys.stderr)
        return interrupts.exit_status()
    status = check_status([sc.cell for sc in cells]) if args.check else 0
    if args.suite == "overhead":
        for line in threshold_failures(ohs, args):
            print(f"zctrace: over budget: {line}", file=sys.stderr)
            status = 1
    return status
