"""`zctrace trace`: trace zerocopy sends (of the whole system, some processes, or a command run
under it) and report per-process verdicts, as text and JSON."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from typing import Callable

from . import advice, argtypes, cgroups, cost, crossover, interrupts, lifecycle, model, report, snapshot, stream
from .errors import ZctraceError
from .probes import Session
from .session import open_session, probe_statuses


def add_arguments(t: argparse.ArgumentParser) -> None:
    argtypes.add_process_filters(t, "trace", "report only")
    argtypes.add_cgroup_mount(t)
    t.add_argument("--duration", type=argtypes.seconds, help="stop after this many seconds")
    t.add_argument("--interval", type=argtypes.seconds, metavar="S",
                   help="every S seconds, also report what changed: a JSON line with --json (the final "
                        "report is the last line), else a line on stderr")
    argtypes.add_tier(t)
    argtypes.add_latency_every(t)
    argtypes.add_kernel_events(t)
    argtypes.add_json(t, "the report")
    t.add_argument("--cost", action="store_true",
                   help="measure the probes' own cost: BPF run-time statistics on for this session, reported as "
                        "ns and program runs per request and as a share of the traced command's CPU")
    t.add_argument("-v", "--verbose", action="store_true",
                   help="also list late copies by kernel call site, with their stacks (fentry/kprobe tiers)")
    t.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...: run and trace CMD")


def _spawn_gated(argv: list[str], stdout_to_stderr: bool = False) -> tuple[int, int]:
    """Fork `argv`, held before exec until the returned gate fd is written (so its pid can be
    traced from its first instruction); `stdout_to_stderr`: its stdout is our stderr (ours carries
    JSON). Returns (pid, gate write fd)."""
    if shutil.which(argv[0]) is None:
        raise ZctraceError(f"command not found: {argv[0]}")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        interrupts.default_in_child()
        os.close(w)
        os.read(r, 1)
        os.close(r)
        if stdout_to_stderr:
            os.dup2(2, 1)
        try:
            os.execvp(argv[0], argv)
        except OSError as e:
            print(f"zctrace: cannot run {argv[0]}: {e.strerror}", file=sys.stderr)
        os._exit(127)
    os.close(r)
    return pid, w


def run_cli(args: argparse.Namespace) -> int:
    """Trace until --duration, a stop signal or the command's exit; print (and --json write) the
    report, with --interval what changed in each interval too. With --json -, stdout carries only
    JSON: the text goes to stderr, and so does the command's stdout. The exit status is the
    command's, if one ran."""
    if args.command[:1] == ["--"] and len(args.command) == 1:
        raise ZctraceError("nothing to run after --: give a command, or leave out -- to trace the whole system")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command and args.pid:
        raise ZctraceError("give either -p PID or -- CMD, not both")
    if command and shutil.which(command[0]) is None:
        raise ZctraceError(f"command not found: {command[0]}")
    cgroup = cgroups.resolve(args.cgroup) if args.cgroup else None
    resolve = argtypes.resolver(args, needed=False)
    pids = list(args.pid) if args.pid else ([] if command else None)
    session = open_session(args.tier, pids, args.latency_every, argtypes.extra_programs(args))
    status = 0
    with session:
        # Exited processes leave the maps (swept four times a second, so they only hold live
        # ones, however long the run and however fast processes come and go); the ledger keeps
        # what they counted for the report.
        life = lifecycle.Lifetime(lifecycle.Reaper(session.bpf))
        build = lambda snap, probes=None: model.build(  # noqa: E731
            snap, session.tier, probes, comm=args.comm, cgroups=cgroups.subtree_ids(cgroup) if cgroup else None,
            resolve=resolve)
        lines = _stream(args) if args.interval else None
        meter = cost.Meter(session.bpf.funcs, enable=args.cost)
        if meter.error:
            print(f"zctrace: warning: {meter.error}", file=sys.stderr)
        cpu_before = cost.children_cpu()
        paths = crossover.DevicePaths()  # sockets' devices, looked up while they exist (advice)
        started = time.monotonic()

        def sweep() -> None:  # and at the end of an interval, its line from the same snapshot
            snap = life.observe(snapshot.take(session.bpf))
            paths.observe(snap.sockets)
            if lines and lines.due():
                lines.emit(build(snap).to_json())

        if command:
            status = _run_traced(session, command, sweep, stdout_to_stderr=args.json == "-")
        else:
            print("zctrace: tracing" + (f" for {args.duration:g} s" if args.duration else ", Ctrl-C to stop"),
                  file=sys.stderr)
            interrupts.wait(args.duration, tick=sweep)
        final = life.observe(snapshot.take(session.bpf, rings=True))
        paths.observe(final.sockets)
        rep = build(final, probe_statuses(session))
        advice.for_session(paths).advise(rep, time.monotonic() - started)
        cpu = cost.children_cpu() - cpu_before if command else None  # the command's, once reaped
        measured = meter.stop(rep.totals.zc_requests + rep.totals.not_attempted, cpu or None)
        meter.close()
        rep.cost = measured.to_json() if measured else None
    print(report.render(rep, args.verbose), file=report.text_stream(args.json))
    if lines:
        lines.finish(rep.to_json())
    elif args.json:
        report.write_json(rep.to_json(), args.json)
    return status


def _stream(args: argparse.Namespace) -> stream.Stream:
    """--interval's intervals: JSON lines to --json (a file is started now), else a line on stderr each."""
    if not args.json:
        return stream.Stream(args.interval, None, sys.stderr)
    try:
        out = sys.stdout if args.json == "-" else open(args.json, "w", encoding="utf-8")
    except OSError as e:
        raise ZctraceError(f"cannot write {args.json}: {e.strerror}") from None
    return stream.Stream(args.interval, out, None)


def _run_traced(session: Session, command: list[str], tick: Callable[[], object],
                stdout_to_stderr: bool = False) -> int:
    """Run `command` traced until it exits (stop signals forwarded to it; `tick` four times a second);
    its exit status."""
    child, gate = _spawn_gated(command, stdout_to_stderr)
    session.add_pid(child)
    os.write(gate, b"x")
    os.close(gate)
    raw = interrupts.wait_child(child, tick)
    if raw is None:
        print(f"zctrace: {command[0]} (pid {child}) has not exited after a second signal: "
              "reporting without it", file=sys.stderr)
        return interrupts.exit_status()
    status = os.waitstatus_to_exitcode(raw)
    interrupts.wait(0.2, since=interrupts.count())  # let the last completions land (a new signal cuts this short)
    return status if status >= 0 else 128 - status
