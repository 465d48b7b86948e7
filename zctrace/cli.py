"""The `zctrace` command line: doctor, trace, bench, export."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Callable, Sequence

from . import argtypes, cgroups, interrupts, lifecycle, model, report, snapshot
from .btf import BtfError
from .errors import ZctraceError
from .probes import Session, require_root
from .session import open_session, probe_statuses


class _Parser(argparse.ArgumentParser):
    """argparse, but bad input is one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ZctraceError(message)


def _spawn_gated(argv: list[str]) -> tuple[int, int]:
    """Fork `argv`, held before exec until the returned gate fd is written (so its pid can be
    traced from its first instruction). Returns (pid, gate write fd)."""
    if shutil.which(argv[0]) is None:
        raise ZctraceError(f"command not found: {argv[0]}")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        interrupts.default_in_child()
        os.close(w)
        os.read(r, 1)
        os.close(r)
        try:
            os.execvp(argv[0], argv)
        except OSError as e:
            print(f"zctrace: cannot run {argv[0]}: {e.strerror}", file=sys.stderr)
        os._exit(127)
    os.close(r)
    return pid, w


def cmd_trace(args: argparse.Namespace) -> int:
    if args.command[:1] == ["--"] and len(args.command) == 1:
        raise ZctraceError("nothing to run after --: give a command, or leave out -- to trace the whole system")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command and args.pid:
        raise ZctraceError("give either -p PID or -- CMD, not both")
    for pid in args.pid or ():
        if not os.path.exists(f"/proc/{pid}"):
            raise ZctraceError(f"no process with PID {pid}")
    if command and shutil.which(command[0]) is None:
        raise ZctraceError(f"command not found: {command[0]}")
    cgroup = cgroups.resolve(args.cgroup) if args.cgroup else None
    pids = list(args.pid) if args.pid else ([] if command else None)
    session = open_session(args.tier, pids, args.latency_every, argtypes.extra_programs(args))
    status = 0
    with session:
        # Exited processes leave the maps (swept four times a second, so they only hold live
        # ones, however long the run and however fast processes come and go); the ledger keeps
        # what they counted for the report.
        life = lifecycle.Lifetime(lifecycle.Reaper(session.bpf))
        sweep = lambda: life.observe(snapshot.take(session.bpf))  # noqa: E731
        if command:
            status = _run_traced(session, command, sweep)
        else:
            print("zctrace: tracing" + (f" for {args.duration:g} s" if args.duration else ", Ctrl-C to stop"),
                  file=sys.stderr)
            interrupts.wait(args.duration, tick=sweep)
        rep = model.build(life.observe(snapshot.take(session.bpf, rings=True)), session.tier, probe_statuses(session),
                          comm=args.comm, cgroups=cgroups.subtree_ids(cgroup) if cgroup else None)
    print(report.render(rep, args.verbose))
    if args.json:
        report.write_json(rep.to_json(), args.json)
    return status


def _run_traced(session: Session, command: list[str], tick: Callable[[], object]) -> int:
    """Run `command` traced until it exits (stop signals forwarded to it; `tick` four times a second);
    its exit status."""
    child, gate = _spawn_gated(command)
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


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor.command import diagnose
    from .doctor.render import render
    result = diagnose(args.size)
    print(render(result))
    if args.json:
        report.write_json(result, args.json)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.command import run_cli
    return run_cli(args)


def _trace_arguments(t: argparse.ArgumentParser) -> None:
    argtypes.add_process_filters(t, "trace", "report only")
    t.add_argument("--duration", type=argtypes.seconds, help="stop after this many seconds")
    argtypes.add_tier(t)
    argtypes.add_latency_every(t)
    argtypes.add_kernel_events(t)
    t.add_argument("--json", metavar="FILE", type=argtypes.output_file, help="also write the report as JSON ('-' = stdout)")
    t.add_argument("-v", "--verbose", action="store_true",
                   help="also list late copies by kernel call site, with their stacks (fentry/kprobe tiers)")
    t.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...: run and trace CMD")
    t.set_defaults(func=cmd_trace, needs_root=True)


def _doctor_arguments(d: argparse.ArgumentParser) -> None:
    from .doctor.command import add_arguments
    add_arguments(d)
    d.set_defaults(func=cmd_doctor)


def _bench_arguments(b: argparse.ArgumentParser) -> None:
    from .bench.command import add_arguments
    add_arguments(b)
    b.set_defaults(func=cmd_bench)


def _top_arguments(tp: argparse.ArgumentParser) -> None:
    from . import top
    top.add_arguments(tp)
    tp.set_defaults(func=top.run_cli, needs_root=True)



def _export_arguments(e: argparse.ArgumentParser) -> None:
    from .exporter.daemon import add_arguments, run_cli
    add_arguments(e)
    e.set_defaults(func=run_cli, needs_root=True)


COMMANDS = {  # name -> (help, what defines its arguments)
    "doctor": ("what this kernel supports, and whether zerocopy can succeed here", _doctor_arguments),
    "trace": ("trace zerocopy sends and report per-process verdicts", _trace_arguments),
    "bench": ("the built-in zerocopy send workload, checked by the tracer", _bench_arguments),
    "top": ("live view of the processes and sockets whose zerocopy sends get copied", _top_arguments),
    "export": ("serve zerocopy verdicts as Prometheus metrics (a daemon)", _export_arguments),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that command gets its arguments (and its module imported:
    the others' imports, pyroute2 among them, would cost every start ~0.3 s)."""
    p = _Parser(prog="zctrace", description="Were my sends really zero-copy, and if not, why?")
    p.set_defaults(needs_root=False)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    for name, (text, define) in COMMANDS.items():
        parser = sub.add_parser(name, help=text)
        if only in (None, name):
            define(parser)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    restore = interrupts.install()  # from here on SIGINT/SIGTERM never kill without a word
    try:
        given = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(given[0] if given and given[0] in COMMANDS else None).parse_args(given)
        if args.needs_root:  # privileges first: before any work (bench checks its own)
            require_root()
        return args.func(args)
    except (ZctraceError, BtfError) as e:
        print(f"zctrace: error: {e}", file=sys.stderr)
        return 2
    except interrupts.Interrupted as e:
        print(f"zctrace: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("zctrace: interrupted", file=sys.stderr)
        return interrupts.exit_status()
    finally:
        restore()


if __name__ == "__main__":
    sys.exit(main())
