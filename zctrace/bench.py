"""`zctrace bench`: the built-in zerocopy send workload, each cell checked by the tracer.

Every cell runs the workload in this process (the compiled send engine by default, the Python
loops with --engine python) with the probes attached (unless --no-trace) and
reports the kernel's own verdict (from the notifications the workload reads) next to the
tracer's verdict for the same requests.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
from contextlib import nullcontext
from dataclasses import dataclass

from . import interrupts, model, report, snapshot
from .argtypes import add_tier, output_file, positive, seconds
from .errors import ZctraceError
from .probes import CAP_NET_ADMIN, CAP_SYS_ADMIN, has_caps, require_root
from .session import open_session

DEFAULT_MODES = ("copy", "msg_zerocopy", "uring_zc")
DEFAULT_SIZES = (1000, 4000)
DEFAULT_TARGETS = ("loopback", "sink")
DEFAULT_DURATION = 0.5


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
    traced: dict[str, int] | None
    lost: dict[str, int] | None = None  # events the probes could not record (None: untraced)
    engine: str = "python"  # which send loops ran: "c" (compiled) or "python"

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def bytes_per_s(self) -> float:
        return self.requests_per_s * self.size

    @property
    def matches(self) -> bool | None:
        """Tracer agrees with the kernel on every request it has a verdict for (None: untraced)."""
        if self.traced is None:
            return None
        zc_mode = self.mode in ("msg_zerocopy", "uring_zc", "uring_zc_fixed") and self.kernel["so_zerocopy"]
        if not zc_mode:
            return self.traced["requests"] == 0
        if self.traced["requests"] != self.requests:
            return False
        if self.kernel["unknown"]:  # the kernel gave no verdict (io_uring without REPORT_USAGE)
            return self.traced["zerocopied"] + self.traced["copied"] + self.traced["unknown"] == self.requests
        return (self.traced["zerocopied"], self.traced["copied"]) == (self.kernel["zerocopied"],
                                                                       self.kernel["copied"])

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


def _sizes(text: str) -> list[int]:
    """'N,N,...': every item a whole number of bytes (no empty items)."""
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be whole numbers of bytes, comma-separated: {text!r}") from None
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive: {text!r}")
    return sizes


def _target(text: str) -> str:
    from .workload.senders import remote_endpoint
    from .workload.targets import TARGETS
    try:
        if text in TARGETS or remote_endpoint(text):
            return text
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    raise argparse.ArgumentTypeError(f"unknown target {text!r}: choose one of {', '.join(TARGETS)}, "
                                     "or ADDR:PORT of a remote receiver")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .benchsuite import SUITES
    from .workload.senders import ENGINES, MODES, NOTIF_POLICIES
    p.add_argument("--mode", action="append", choices=MODES,
                   help=f"send mode (repeatable; default {' '.join(DEFAULT_MODES)})")
    p.add_argument("--proto", action="append", choices=("udp", "tcp"),
                   help="protocol (repeatable; default udp; --suite: udp and tcp where the target allows)")
    p.add_argument("--size", type=_sizes, action="append",
                   help="IO size in bytes, comma-separated list (default 1000,4000; --suite "
                        "seed-tables: 600,1000,1200,1500,4000,8000,65000; overhead: 1000,4000,65000)")
    p.add_argument("--target", action="append", type=_target,
                   help="where to send: loopback, sink, netns, dummy or ADDR:PORT (repeatable; "
                        "default loopback and sink, for --suite sink)")
    p.add_argument("--duration", type=seconds, default=None,
                   help=f"seconds per cell (default {DEFAULT_DURATION}; --suite: 1)")
    p.add_argument("--count", type=positive(int, "requests"), help="requests per cell instead of a duration")
    p.add_argument("--notify-batch", type=positive(int, "sends"), default=32,
                   help="read MSG_ZEROCOPY notifications every N sends (default 32)")
    p.add_argument("--inflight", type=positive(int, "requests"), default=8,
                   help="io_uring requests in flight (default 8)")
    p.add_argument("--report-usage", action=argparse.BooleanOptionalAction, default=True,
                   help="io_uring IORING_SEND_ZC_REPORT_USAGE (default on)")
    p.add_argument("--notif", choices=NOTIF_POLICIES, default="wait",
                   help="io_uring SEND_ZC: a request is in flight until its notification (wait, "
                        "default) or only until its send completion (lazy)")
    p.add_argument("--batch", type=positive(int, "sends"), default=32,
                   help="copy/msg_zerocopy: sends per sendmmsg call, 1 = one send() each (default 32)")
    p.add_argument("--engine", choices=ENGINES, default="c",
                   help="send loops: c (compiled, default: the kernel sets the pace) or python")
    p.add_argument("--no-trace", action="store_true", help="run the workload without the tracer")
    add_tier(p)
    p.add_argument("--json", metavar="FILE", type=output_file, help="also write the results as JSON ('-' = stdout)")
    p.add_argument("--check", action="store_true",
                   help="exit 1 if the tracer's verdicts differ from the kernel's in any cell, or "
                        "the probes lost events")
    p.add_argument("--suite", choices=SUITES,
                   help="a predefined set of cells instead of --mode (see docs/benchmarks.md)")
    p.add_argument("--csv", metavar="FILE", type=output_file, help="--suite: also write one CSV row per cell ('-' = stdout)")
    p.add_argument("--plot", metavar="PNG", type=output_file, help="--suite seed-tables: plot req/s against IO size")
    p.add_argument("--reference", action="store_true",
                   help="--suite seed-tables: run the C reference sender beside every cell (needs gcc)")
    p.add_argument("--repeat", type=positive(int, "rounds"), default=3,
                   help="--suite overhead: traced/untraced rounds per cell (default 3)")
    p.add_argument("--max-ns-per-request", type=positive(float, "nanoseconds"), metavar="NS",
                   help="--suite overhead: exit 1 if the probes' BPF run time per request exceeds NS "
                        "in any cell")
    p.add_argument("--min-ratio", type=positive(float, "ratio"), metavar="R",
                   help="--suite overhead: exit 1 if traced/untraced requests/s is below R in any cell")


def check_args(args: argparse.Namespace) -> None:
    """Reject contradictory options and missing privileges (one line, exit 2)."""
    if args.duration and args.count:
        raise ZctraceError("give either --duration or --count, not both")
    if not args.suite:
        for flag in ("csv", "plot", "reference"):
            if getattr(args, flag):
                raise ZctraceError(f"--{flag} needs --suite")
    for flag in ("max_ns_per_request", "min_ratio"):
        if getattr(args, flag) is not None and args.suite != "overhead":
            raise ZctraceError(f"--{flag.replace('_', '-')} needs --suite overhead")
    if args.engine == "c":
        from .workload.senders import compiled_engine
        try:
            compiled_engine()
        except ValueError as e:
            raise ZctraceError(str(e)) from None
    if not args.no_trace:
        require_root()
    made = local_targets(args)
    if made and not has_caps(CAP_NET_ADMIN, CAP_SYS_ADMIN):
        raise ZctraceError(f"the {made[0]} target needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN: it creates "
                           "a network namespace and devices); use --target loopback or ADDR:PORT")


def local_targets(args: argparse.Namespace) -> list[str]:
    """The targets of this run that create namespaces or devices."""
    from .workload.targets import TARGETS
    default = ["sink"] if args.suite else DEFAULT_TARGETS
    return [t for t in args.target or default if t in TARGETS and t != "loopback"]


def reclaim_leftovers() -> None:
    """Remove what killed runs left (their namespaces and devices), saying what."""
    from .workload.targets import reclaim
    removed, failed = reclaim()
    for pid in sorted({x.pid for x in removed}):
        print(f"zctrace: removed what a killed run (pid {pid}) left: "
              + ", ".join(f"{x.kind} {x.name}" for x in removed if x.pid == pid), file=sys.stderr)
    for leftover, why in failed:
        print(f"zctrace: warning: cannot remove {leftover.kind} {leftover.name} left by pid "
              f"{leftover.pid}: {why}", file=sys.stderr)


def _specs(args: argparse.Namespace) -> list:
    from .workload.senders import WorkloadSpec, validate
    from .workload.targets import UDP_ONLY
    modes = args.mode or list(DEFAULT_MODES)
    protos = args.proto or ["udp"]
    sizes = [s for group in args.size for s in group] if args.size else list(DEFAULT_SIZES)
    targets = args.target or list(DEFAULT_TARGETS)
    specs = []
    for target, proto, mode, size in itertools.product(targets, protos, modes, sizes):
        if target in UDP_ONLY and proto == "tcp":
            continue  # no handshake through a sink; named combinations are validated below
        spec = WorkloadSpec(
            mode=mode, proto=proto, size=size, target=target,
            duration=None if args.count else (args.duration or DEFAULT_DURATION), count=args.count,
            notify_batch=args.notify_batch, inflight=args.inflight, batch=args.batch,
            report_usage=args.report_usage if mode.startswith("uring_zc") else True,
            notif=args.notif if mode.startswith("uring_zc") else "wait", engine=args.engine)
        try:
            validate(spec)
        except ValueError as e:
            raise ZctraceError(str(e)) from None
        specs.append(spec)
    if not specs:
        raise ZctraceError("no runnable combination (tcp cannot use the sink target)")
    return specs


def traced_counts(snap: snapshot.Snapshot, spec) -> dict[str, int]:
    """The tracer's counts for this process's sends of `spec`'s API and protocol."""
    api = "msg_zerocopy" if spec.mode in ("copy", "msg_zerocopy") else "io_uring"
    counts = model.Counts()
    for row in snap.rows:
        if row.pid == os.getpid() and row.api == api and row.proto == spec.proto:
            counts.add(model.Counts.from_counters(row.counters))
    return {"requests": counts.zc_requests, "zerocopied": counts.zerocopied, "copied": counts.copied,
            "unknown": counts.unknown, "not_attempted": counts.not_attempted}


def run_on(endpoint, specs: list, session=None, progress=None) -> list[Cell]:
    """Run specs against an open target; `session` (probes) checks each cell."""
    from .workload.senders import run_workload
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
            traced = traced_counts(snap, spec)
            lost = {k: v for k, v in snap.errors.items() if v}
        cell = Cell(spec.mode, spec.proto, spec.size, spec.target, r.requests, r.seconds,
                    r.cpu_seconds, kernel, traced, lost, spec.engine)
        cells.append(cell)
        if progress:
            progress(cell)
    return cells


def open_endpoint(target: str, proto: str):
    """Context manager: a local target set up (and removed) for `proto`, or a remote ADDR:PORT."""
    from .workload.senders import remote_endpoint
    from .workload.targets import open_target
    remote = remote_endpoint(target)
    return nullcontext(remote) if remote else open_target(target, proto)


def run(specs: list, session=None, progress=None) -> list[Cell]:
    """Run every spec, opening each target once."""
    cells = []
    for (target, proto), group in itertools.groupby(specs, key=lambda s: (s.target, s.proto)):
        with open_endpoint(target, proto) as endpoint:
            cells += run_on(endpoint, list(group), session, progress)
    return cells


def render(cells: list[Cell], tier: str | None) -> str:
    head = ("TARGET", "PROTO", "MODE", "SIZE", "REQUESTS", "REQ/S", "MB/S", "KERNEL ZC/COPIED/UNKNOWN",
            "TRACED ZC/COPIED/UNKNOWN", "MATCH")
    rows = []
    for c in cells:
        k = c.kernel
        kernel = f"{k['zerocopied']}/{k['copied']}/{k['unknown']}" if c.mode not in ("copy", "uring") else "-"
        t = c.traced
        traced = "-" if t is None else f"{t['zerocopied']}/{t['copied']}/{t['unknown']}"
        match = "LOST" if c.lost else {None: "-", True: "yes", False: "NO"}[c.matches]
        rows.append((c.target, c.proto, c.mode, c.size, c.requests, f"{c.requests_per_s:,.0f}",
                     f"{c.bytes_per_s / 1e6:,.1f}", kernel, traced, match))
    tracer = f"tracer tier: {tier}" if tier else "untraced"
    return f"zctrace bench ({engine_note(cells)}; {tracer})\n" + report.table(head, rows)


def engine_note(cells: list[Cell]) -> str:
    """Which send loops produced `cells`, for every table's title."""
    names = {"c": "compiled C engine", "python": "Python engine"}
    return "workload: " + " and ".join(names[e] for e in dict.fromkeys(c.engine for c in cells))


def run_cli(args: argparse.Namespace) -> int:
    check_args(args)
    if local_targets(args):
        reclaim_leftovers()
    try:
        if args.suite:
            from .benchsuite import run_suite
            return run_suite(args)
        return _run_cells(args)
    except (OSError, RuntimeError) as e:  # a target that cannot be set up, a refused connection
        raise ZctraceError(f"bench failed: {e}") from e


def _run_cells(args: argparse.Namespace) -> int:
    """Run the cells; on SIGINT/SIGTERM or a failing cell, report the cells finished before it."""
    specs = _specs(args)
    cells: list[Cell] = []

    def progress(c: Cell) -> None:
        cells.append(c)
        print(f"zctrace: bench {len(cells)}/{len(specs)}: {c.target} {c.proto} {c.mode} {c.size} B, "
              f"{c.requests_per_s:,.0f} req/s", file=sys.stderr)

    session = None if args.no_trace else open_session(args.tier, [os.getpid()])
    tier = session.tier if session is not None else None
    stopped = error = None
    try:
        with interrupts.raising():
            run(specs, session, progress)
    except KeyboardInterrupt:
        stopped = signal.Signals(interrupts.received() or signal.SIGINT).name
    except (OSError, RuntimeError) as e:
        error = e
    finally:
        if session is not None:
            session.close()
    print(render(cells, tier))
    if args.json:
        report.write_json({"tier": tier, "engine": args.engine, "results": [c.to_json() for c in cells]}, args.json)
    done = f"after {len(cells)} of {len(specs)} cells"
    if error:
        raise ZctraceError(f"bench failed {done}: {error}")
    if stopped:
        print(f"zctrace: stopped by {stopped} {done}", file=sys.stderr)
        return interrupts.exit_status()
    return check_status(cells) if args.check else 0


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
