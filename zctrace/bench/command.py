"""`zctrace bench`: the built-in zerocopy send workload, each cell checked by the tracer.

Every cell (cells.py) runs the workload in this process (the compiled send engine by default,
the Python loops with --engine python) with the probes attached (unless --no-trace) and
reports the kernel's own verdict (from the notifications the workload reads) next to the
tracer's verdict for the same requests; --suite runs a predefined set (suites.py, rendered by
tables.py, written by output.py).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import signal
import sys
import time

from .. import crossover, interrupts, report
from ..argtypes import add_json, add_tier, output_file, positive, seconds
from .cells import Cell, check_status, engine_note, run
from ..errors import ZctraceError
from ..probes import CAP_NET_ADMIN, CAP_SYS_ADMIN, has_caps, require_root
from ..session import open_session
from .output import pyplot, records, write_crossover_plot, write_csv, write_plot
from .suites import SUITES, SuiteRun, run_crossover, run_overhead, run_seed
from .tables import (crossover_medians, crossover_record, overheads, render_crossover, render_overhead, render_seed,
                     threshold_failures)

DEFAULT_MODES = ("copy", "msg_zerocopy", "uring_zc")
DEFAULT_SIZES = (1000, 4000)
DEFAULT_TARGETS = ("loopback", "sink")
DEFAULT_DURATION = 0.5


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
    from ..workload.senders import remote_endpoint
    from ..workload.targets import TARGETS
    try:
        if text in TARGETS or remote_endpoint(text):
            return text
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    raise argparse.ArgumentTypeError(f"unknown target {text!r}: choose one of {', '.join(TARGETS)}, "
                                     "or ADDR:PORT of a remote receiver")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..workload.senders import ENGINES, MODES, NOTIF_POLICIES
    p.add_argument("--mode", action="append", choices=MODES,
                   help=f"send mode (repeatable; default {' '.join(DEFAULT_MODES)})")
    p.add_argument("--proto", action="append", choices=("udp", "tcp"),
                   help="protocol (repeatable; default udp; --suite: udp and tcp where the target allows)")
    p.add_argument("--size", type=_sizes, action="append",
                   help="IO size in bytes, comma-separated list (default 1000,4000; --suite "
                        "seed-tables: 600,1000,1200,1500,4000,8000,65000; overhead: 1000,4000,65000; "
                        "crossover: 256,512,1000,2000,4000,8000,16000,32000,65000 up to the path's MTU)")
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
    add_json(p, "the results")
    p.add_argument("--check", action="store_true",
                   help="exit 1 if the tracer's verdicts differ from the kernel's in any cell, or "
                        "the probes lost events")
    p.add_argument("--suite", choices=SUITES,
                   help="a predefined set of cells instead of --mode (see docs/benchmarks.md)")
    p.add_argument("--csv", metavar="FILE", type=output_file, help="--suite: also write one CSV row per cell ('-' = stdout)")
    p.add_argument("--plot", metavar="PNG", type=output_file,
                   help="--suite seed-tables: plot req/s against IO size; crossover: CPU per byte")
    p.add_argument("--reference", action="store_true",
                   help="--suite seed-tables: run the C reference sender beside every cell (needs gcc)")
    p.add_argument("--repeat", type=positive(int, "rounds"), default=3,
                   help="--suite overhead: traced/untraced rounds per cell; crossover: rounds, medians "
                        "taken (default 3)")
    p.add_argument("--max-ns-per-request", type=positive(float, "nanoseconds"), metavar="NS",
                   help="--suite overhead: exit 1 if the probes' BPF run time per request exceeds NS "
                        "in any cell")
    p.add_argument("--min-ratio", type=positive(float, "ratio"), metavar="R",
                   help="--suite overhead: exit 1 if traced/untraced requests/s is below R in any cell")


def check_args(args: argparse.Namespace) -> None:
    """Reject contradictory options and missing privileges (one line, exit 2)."""
    if args.duration and args.count:
        raise ZctraceError("give either --duration or --count, not both")
    if args.json == args.csv == "-":
        raise ZctraceError("--json - and --csv - would share stdout: write one of them to a file")
    if not args.suite:
        for flag in ("csv", "plot", "reference"):
            if getattr(args, flag):
                raise ZctraceError(f"--{flag} needs --suite")
    for flag in ("max_ns_per_request", "min_ratio"):
        if getattr(args, flag) is not None and args.suite != "overhead":
            raise ZctraceError(f"--{flag.replace('_', '-')} needs --suite overhead")
    if args.suite == "crossover":
        _check_state_dir()
    if args.engine == "c":
        from ..workload.senders import compiled_engine
        try:
            compiled_engine()
        except ValueError as e:
            raise ZctraceError(str(e)) from None
    if not args.no_trace and args.suite != "crossover":  # the crossover suite runs untraced
        require_root()
    made = local_targets(args)
    if made and not has_caps(CAP_NET_ADMIN, CAP_SYS_ADMIN):
        raise ZctraceError(f"the {made[0]} target needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN: it creates "
                           "a network namespace and devices); use --target loopback or ADDR:PORT")


def local_targets(args: argparse.Namespace) -> list[str]:
    """The targets of this run that create namespaces or devices."""
    from ..workload.targets import TARGETS
    default = ["sink"] if args.suite else DEFAULT_TARGETS
    return [t for t in args.target or default if t in TARGETS and t != "loopback"]


def reclaim_leftovers() -> None:
    """Remove what killed runs left (their namespaces and devices), saying what."""
    from ..workload.targets import reclaim
    removed, failed = reclaim()
    for pid in sorted({x.pid for x in removed}):
        print(f"zctrace: removed what a killed run (pid {pid}) left: "
              + ", ".join(f"{x.kind} {x.name}" for x in removed if x.pid == pid), file=sys.stderr)
    for leftover, why in failed:
        print(f"zctrace: warning: cannot remove {leftover.kind} {leftover.name} left by pid "
              f"{leftover.pid}: {why}", file=sys.stderr)


def _specs(args: argparse.Namespace) -> list:
    from ..workload.senders import WorkloadSpec, validate
    from ..workload.targets import UDP_ONLY
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


def run_cli(args: argparse.Namespace) -> int:
    check_args(args)
    if local_targets(args):
        reclaim_leftovers()
    try:
        if args.suite:
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
    print(render(cells, tier), file=report.text_stream(args.json))
    if args.json:
        report.write_json({"tier": tier, "engine": args.engine, "results": [c.to_json() for c in cells]}, args.json)
    done = f"after {len(cells)} of {len(specs)} cells"
    if error:
        raise ZctraceError(f"bench failed {done}: {error}")
    if stopped:
        print(f"zctrace: stopped by {stopped} {done}", file=sys.stderr)
        return interrupts.exit_status()
    return check_status(cells) if args.check else 0


def run_suite(args: argparse.Namespace) -> int:
    """`zctrace bench --suite NAME`: run, print the tables, write --json/--csv/--plot."""
    if args.mode:
        raise ZctraceError("--suite picks its own modes: drop --mode")
    if args.plot:
        if args.suite == "overhead":
            raise ZctraceError("--plot needs --suite seed-tables or crossover")
        pyplot()  # fail before running, not after
    if args.reference and args.suite != "seed-tables":
        raise ZctraceError("--reference needs --suite seed-tables")
    started = time.time()
    run, stopped = SuiteRun(), None
    try:
        with interrupts.raising():
            {"seed-tables": run_seed, "overhead": run_overhead, "crossover": run_crossover}[args.suite](args, run)
    except KeyboardInterrupt:
        stopped = signal.Signals(interrupts.received() or signal.SIGINT).name
    cells, tier = run.cells, run.tier
    saved: list[dict] = []
    if args.suite == "crossover":
        print(render_crossover(cells, args.repeat, run.notes), file=report.text_stream(args.json, args.csv))
        saved = _crossover_records(run, args, started)
        if stopped:
            print("zctrace: not saved: the rounds did not finish", file=sys.stderr)
        else:
            for rec in saved:
                path = crossover.save(rec)
                print(f"zctrace: saved {rec['target']} {rec['proto']} ({_path_note(rec)}) to {path}",
                      file=sys.stderr)
    elif args.suite == "seed-tables":
        print(render_seed(cells, tier), file=report.text_stream(args.json, args.csv))
    else:
        ohs = overheads(cells)
        print(render_overhead(ohs, tier, args.repeat, args.engine), file=report.text_stream(args.json, args.csv))
    docs = records(cells, args)
    if args.json:
        doc = {"suite": args.suite, "tier": tier, "engine": args.engine, "command": " ".join(["zctrace", *sys.argv[1:]]),
               "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
               "host": {"kernel": platform.release(), "cpus": os.cpu_count()}, "results": docs}
        if args.suite == "overhead":
            doc["overhead"] = [o.to_json() for o in ohs]
        if args.suite == "crossover":
            doc["crossover"] = saved
        report.write_json(doc, args.json)
    if args.csv:
        write_csv(docs, args.csv)
    if args.plot and args.suite == "crossover":
        write_crossover_plot(crossover_medians(cells), args.plot,
                             f"zctrace bench --suite crossover, {time.strftime('%Y-%m-%d')}\nkernel "
                             f"{platform.release()}, medians of {args.repeat} rounds, untraced")
    elif args.plot:
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


def _crossover_records(run: SuiteRun, args: argparse.Namespace, started: float) -> list[dict]:
    """The measurements to save, one per target and protocol measured."""
    meta = {"kernel": platform.release(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "engine": args.engine, "version": crossover.version(), "command": " ".join(["zctrace", *sys.argv[1:]]),
            "repeat": args.repeat, "duration": None if args.count else (args.duration or 1.0),
            "count": args.count, "load_average": [round(x, 2) for x in os.getloadavg()]}
    return [crossover_record(t, p, by_size, run.paths.get((t, p)), meta, run.skipped.get((t, p), {}))
            for (t, p), by_size in crossover_medians(run.cells).items()]


def _path_note(rec: dict) -> str:
    path = rec["path"]
    return f"path {path['kind']} MTU {path['mtu']}" if path else "path not known"


def _check_state_dir() -> None:
    """The crossover suite saves into the state directory: one that cannot be written is bad
    input, said before anything runs."""
    directory = crossover.state_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ZctraceError(f"cannot create the state directory {directory} (ZCTRACE_STATE_DIR): {e.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ZctraceError(f"cannot write the state directory {directory}: set ZCTRACE_STATE_DIR to one you can")
