"""The `zctrace` command line: the subcommands' table and main. Each command is a module with
add_arguments(parser) and run_cli(args) (trace.py, top.py, bench/command.py, doctor/command.py,
exporter/daemon.py); shared options and value types are argtypes.py's."""

from __future__ import annotations

import argparse
import sys
from types import ModuleType
from typing import Callable, Sequence

from . import interrupts
from .btf import BtfError
from .errors import ZctraceError
from .probes import require_root


class _Parser(argparse.ArgumentParser):
    """argparse, but bad input is one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ZctraceError(message)


# Each command's module is imported only when that command runs: the others' imports, pyroute2
# among them, would cost every start ~0.3 s.

def _doctor() -> ModuleType:
    from .doctor import command
    return command


def _trace() -> ModuleType:
    from . import trace
    return trace


def _bench() -> ModuleType:
    from .bench import command
    return command


def _top() -> ModuleType:
    from . import top
    return top


def _export() -> ModuleType:
    from .exporter import daemon
    return daemon


# name -> (help, its module, whether it needs root before anything: bench checks its own)
COMMANDS: dict[str, tuple[str, Callable[[], ModuleType], bool]] = {
    "doctor": ("what this kernel supports, and whether zerocopy can succeed here", _doctor, False),
    "trace": ("trace zerocopy sends and report per-process verdicts", _trace, True),
    "bench": ("the built-in zerocopy send workload, checked by the tracer", _bench, False),
    "top": ("live view of the processes and sockets whose zerocopy sends get copied", _top, True),
    "export": ("serve zerocopy verdicts as Prometheus metrics (a daemon)", _export, True),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that command gets its arguments (and its module imported)."""
    p = _Parser(prog="zctrace", description="Were my sends really zero-copy, and if not, why?")
    p.set_defaults(needs_root=False)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    for name, (text, load, needs_root) in COMMANDS.items():
        parser = sub.add_parser(name, help=text)
        if only in (None, name):
            module = load()
            module.add_arguments(parser)
            parser.set_defaults(func=module.run_cli, needs_root=needs_root)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    restore = interrupts.install()  # from here on SIGINT/SIGTERM never kill without a word
    try:
        given = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(given[0] if given and given[0] in COMMANDS else None).parse_args(given)
        if args.needs_root:  # privileges first: before any work
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
