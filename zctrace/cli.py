"""The `zctrace` command line: doctor, trace, bench, export."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from typing import Sequence

from . import argtypes, cgroups, model, report, snapshot, tiers
from .btf import Btf, BtfError
from .errors import ZctraceError
from .probes import TIERS, Session, require_root


class _Parser(argparse.ArgumentParser):
    """argparse, but bad input is one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ZctraceError(message)


def _tier_line(active: str, checks: list[tiers.TierCheck]) -> str:
    refused = "; ".join(f"{c.tier} unavailable: {c.error}" for c in checks if not c.ok)
    return f"zctrace: probe tier {active}" + (f" ({refused})" if refused else "")


def _open_session(forced: str | None, pids: list[int] | None) -> Session:
    require_root()
    btf = Btf.load()
    tier, checks = tiers.best(forced)
    if not tier:
        raise ZctraceError(f"the {forced} tier does not load here: {checks[-1].error}" if forced
                           else "no probe tier loads on this kernel: " + checks[-1].error)
    print(_tier_line(tier, checks), file=sys.stderr)
    session = Session.open(tier, btf, pids=pids)
    for status in session.statuses:
        if not status.attached:
            print(f"zctrace: probe {status.program} not attached to {status.target}: {status.error}",
                  file=sys.stderr)
    for name, why in session.skipped.items():
        print(f"zctrace: probe {name} not loaded: {why}", file=sys.stderr)
    return session


def probe_statuses(session: Session) -> list[dict]:
    """Each attach point (`variant_of`: the manifest's name for a function this kernel calls
    otherwise), then each program not loaded, with why."""
    return ([{"program": s.program, "target": s.target, "attached": s.attached, "error": s.error,
              "variant_of": s.variant_of} for s in session.statuses]
            + [{"program": name, "target": "", "attached": False, "error": why}
               for name, why in session.skipped.items()])


def _spawn_gated(argv: list[str]) -> tuple[int, int]:
    """Fork `argv`, held before exec until the returned gate fd is written (so its pid can be
    traced from its first instruction). Returns (pid, gate write fd)."""
    if shutil.which(argv[0]) is None:
        raise ZctraceError(f"command not found: {argv[0]}")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
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
    session = _open_session(args.tier, pids)
    status = 0
    with session:
        previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            if command:
                child, gate = _spawn_gated(command)
                session.add_pid(child)
                os.write(gate, b"x")
                os.close(gate)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child gets the terminal's ^C
                _, raw = os.waitpid(child, 0)
                status = os.waitstatus_to_exitcode(raw)
                status = status if status >= 0 else 128 - status
                time.sleep(0.2)  # let completions of the last sends land
            else:
                deadline = time.monotonic() + args.duration if args.duration else None
                print("zctrace: tracing" + (f" for {args.duration:g} s" if deadline else ", Ctrl-C to stop"),
                      file=sys.stderr)
                while deadline is None or time.monotonic() < deadline:
                    time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
        rep = model.build(snapshot.take(session.bpf, rings=True), session.tier, probe_statuses(session), comm=args.comm,
                          cgroups=cgroups.subtree_ids(cgroup) if cgroup else None)
    print(report.render(rep, args.verbose))
    if args.json:
        report.write_json(rep.to_json(), args.json)
    return status


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import diagnose, render
    result = diagnose(args.size)
    print(render(result))
    if args.json:
        report.write_json(result, args.json)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_cli
    return run_cli(args)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="zctrace", description="Were my sends really zero-copy, and if not, why?")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    from .doctor import add_arguments as doctor_arguments
    d = sub.add_parser("doctor", help="what this kernel supports, and whether zerocopy can succeed here")
    doctor_arguments(d)
    d.set_defaults(func=cmd_doctor)

    t = sub.add_parser("trace", help="trace zerocopy sends and report per-process verdicts")
    t.add_argument("-p", "--pid", type=argtypes.pid, action="append", help="trace this process (repeatable)")
    t.add_argument("--comm", help="report only processes with this command name")
    t.add_argument("--cgroup", help="report only processes in this cgroup v2 or below it (path, e.g. system.slice)")
    t.add_argument("--duration", type=argtypes.seconds, help="stop after this many seconds")
    t.add_argument("--tier", choices=TIERS, help="force a probe tier instead of the best available")
    t.add_argument("--json", metavar="FILE", help="also write the report as JSON ('-' = stdout)")
    t.add_argument("-v", "--verbose", action="store_true",
                   help="also list late copies by kernel call site, with their stacks (fentry/kprobe tiers)")
    t.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...: run and trace CMD")
    t.set_defaults(func=cmd_trace)

    from .bench import add_arguments
    b = sub.add_parser("bench", help="the built-in zerocopy send workload, checked by the tracer")
    add_arguments(b)
    b.set_defaults(func=cmd_bench)

    from . import top
    tp = sub.add_parser("top", help="live view of the processes and sockets whose zerocopy sends get copied")
    top.add_arguments(tp)
    tp.set_defaults(func=top.run_cli)

    from .exporter.daemon import add_arguments as add_export_arguments, run_cli as run_export
    e = sub.add_parser("export", help="serve zerocopy verdicts as Prometheus metrics (a daemon)")
    add_export_arguments(e)
    e.set_defaults(func=run_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except ZctraceError as e:
        print(f"zctrace: error: {e}", file=sys.stderr)
        return 2
    except BtfError as e:
        print(f"zctrace: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zctrace: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
