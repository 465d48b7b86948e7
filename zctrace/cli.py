"""The `zctrace` command line: the subcommands' table and main. Each command is a module with
add_arguments(parser) and run_cli(args) (trace.py, top.py, bench/command.py, doctor/command.py,
exporter/daemon.py); shared options and value types are argtypes.py's."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
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


# name -> examples for its --help: (command line, what it does). tests/test_cli.py parses every
# one of them against the parser, so they stay real.
EXAMPLES: dict[str, tuple[tuple[str, str], ...]] = {
    "doctor": (
        ("zctrace doctor", "everything, as text"),
        ("zctrace doctor --size 9000", "check 9000-byte sends against each interface's MTU"),
        ("zctrace doctor --json - | jq '.findings[] | select(.status != \"ok\")'", "the findings to act on"),
    ),
    "trace": (
        ("zctrace trace -- ./sender --port 9000", "run a command, traced from its first instruction"),
        ('zctrace trace -p "$(pidof -s sender)" --duration 10 --json -', "a running process for 10 s, as JSON"),
        ("zctrace trace --cgroup kubepods.slice --interval 5 --json - | jq -c 'select(.type == \"interval\")"
         " | .delta.totals'", "a JSON line every 5 s, what changed in a cgroup"),
    ),
    "bench": (
        ("zctrace bench", "copy, MSG_ZEROCOPY and io_uring SEND_ZC over loopback and the sink"),
        ("zctrace bench --mode msg_zerocopy --size 1000 --count 100 --json -", "one mode, as JSON"),
        ("zctrace bench --suite overhead --check --max-ns-per-request 150", "the tracer's own cost, with a budget"),
    ),
    "top": (
        ("zctrace top", "every process, refreshed each second"),
        ("zctrace top --comm nginx --interval 5", "one command name, every 5 s"),
        ("zctrace top --cgroup system.slice --iterations 3", "three snapshots of a cgroup, then exit"),
    ),
    "export": (
        ("zctrace export", "serve http://127.0.0.1:9435/metrics"),
        ("zctrace export --listen :9435 --per-pid", "on every IPv4 address, with a pid label"),
        ("zctrace export --cgroup kubepods.slice --tls-cert tls.crt --tls-key tls.key",
         "one cgroup's processes, over HTTPS"),
    ),
}


def _epilog(name: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}\n      {what}" for line, what in EXAMPLES[name])


def version() -> str:
    """zctrace's version: the pyproject.toml of the source tree this package runs from, if it
    runs from one (an installed distribution's metadata may be another checkout's, as with an
    editable install); else the installed distribution's."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        import tomllib
        project = tomllib.loads(pyproject.read_text())["project"]
        if project.get("name") == "zctrace":
            return project["version"]
    except (OSError, ValueError, KeyError):
        pass
    from importlib import metadata
    try:
        return metadata.version("zctrace")
    except metadata.PackageNotFoundError:
        return "unknown"


class _Version(argparse.Action):
    """--version: `zctrace VERSION` on stdout, exit 0 (the version looked up only then)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kw: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print zctrace's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"zctrace {version()}")
        parser.exit(0)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that command gets its arguments (and its module imported):
    none for "", every one for None."""
    p = _Parser(prog="zctrace", description="Were my sends really zero-copy, and if not, why?",
                epilog="zctrace COMMAND --help: the command's options, with examples")
    p.add_argument("--version", action=_Version)
    p.set_defaults(needs_root=False)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    for name, (text, load, needs_root) in COMMANDS.items():
        parser = sub.add_parser(name, help=text, description=f"zctrace {name}: {text}", epilog=_epilog(name),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        if only in (None, name):
            module = load()
            module.add_arguments(parser)
            parser.set_defaults(func=module.run_cli, needs_root=needs_root)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    restore = interrupts.install()  # from here on SIGINT/SIGTERM never kill without a word
    try:
        given = sys.argv[1:] if argv is None else list(argv)
        # only the command given is imported (none for --version, --help or a bad command)
        args = build_parser(given[0] if given and given[0] in COMMANDS else "").parse_args(given)
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
