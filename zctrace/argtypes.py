"""argparse value types shared by the subcommands (bad values become one-line errors), and the
options more than one command takes, defined once."""

from __future__ import annotations

import argparse
import errno
import math
import os
import stat
from typing import Callable

from .probes import LATENCY_EVERY, TIERS

# The longest --duration/--interval taken: 30 days. Longer runs are a daemon's job (`zctrace
# export`) or a trace without --duration, stopped with SIGINT/SIGTERM.
MAX_SECONDS = 30 * 24 * 3600
# The kernel keeps a task's comm in 16 bytes with the NUL (TASK_COMM_LEN): a longer name is
# cut to 15 bytes, so a longer --comm could never match.
COMM_BYTES = 15


def _checked(kind: type, not_a_number: str, not_positive: str) -> Callable[[str], int | float]:
    def parse(text: str):
        try:
            value = kind(text)
            if value != value:
                raise ValueError("NaN")
        except ValueError:
            raise argparse.ArgumentTypeError(f"{not_a_number}: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{not_positive}: {text!r}")
        return value
    return parse


def positive(kind: type, what: str) -> Callable[[str], int | float]:
    """A parser for a positive `kind` (int or float); `what` names it in the error."""
    return _checked(kind, f"not a number of {what}", f"{what} must be positive")


_pid_number = _checked(int, "not a PID", "not a PID")


def pid(text: str) -> int:
    """The PID of a process that exists now (a thread's id counts: /proc has it too)."""
    value = _pid_number(text)
    if not os.path.isdir(f"/proc/{value}"):
        raise argparse.ArgumentTypeError(f"no process with PID {value}")
    return value


_positive_seconds = positive(float, "seconds")


def seconds(text: str) -> float:
    """A finite positive number of seconds, at most MAX_SECONDS (30 days)."""
    value = _positive_seconds(text)
    if not math.isfinite(value) or value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"seconds must be at most {MAX_SECONDS} (30 days): {text!r}")
    return value


def comm(text: str) -> str:
    """A command name as the kernel keeps it: 1 to 15 bytes."""
    size = len(os.fsencode(text))
    if not 0 < size <= COMM_BYTES:
        raise argparse.ArgumentTypeError(
            f"a command name is 1 to {COMM_BYTES} bytes (the kernel cuts longer ones), got {size}: {text!r}")
    return text


def output_file(text: str) -> str:
    """A file this process can write ('-' = stdout), checked before any work: a new file is
    created and removed again, an existing regular file opened for appending (not truncated)."""
    if text == "-":
        return text
    if not text:
        raise argparse.ArgumentTypeError("empty file name")
    try:
        mode = os.stat(text).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot write {text}: {e.strerror}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise argparse.ArgumentTypeError(f"cannot write {text}: it is a directory")
    parent = os.path.dirname(text) or "."
    if mode is None and not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"cannot write {text}: no directory {parent}")
    try:
        if mode is None:
            os.close(os.open(text, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            os.unlink(text)
        elif stat.S_ISREG(mode):
            os.close(os.open(text, os.O_WRONLY | os.O_APPEND))
        elif not os.access(text, os.W_OK):  # a device or FIFO: opening it may block or act
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot write {text}: {e.strerror}") from None
    return text


# --- options more than one command takes ---------------------------------------------------

def add_process_filters(p: argparse.ArgumentParser, follow: str, keep: str) -> None:
    """-p/--pid, --comm, --cgroup: the processes a command watches (`follow`: its verb, e.g.
    "trace") and the ones it keeps (`keep`, e.g. "report only")."""
    p.add_argument("-p", "--pid", type=pid, action="append", help=f"{follow} this process (repeatable)")
    p.add_argument("--comm", type=comm, help=f"{keep} processes with this command name")
    p.add_argument("--cgroup", help=f"{keep} processes in this cgroup v2 or below it (path, e.g. system.slice)")


def add_cgroup_mount(p: argparse.ArgumentParser) -> None:
    """--cgroup-mount PATH: the cgroup v2 hierarchy the processes' cgroup ids resolve in (their
    container, pod and cgroup), when it is not the one this process sees mounted (e.g. the
    host's hierarchy mounted into the exporter's container)."""
    p.add_argument("--cgroup-mount", metavar="PATH",
                   help="the host's cgroup v2 hierarchy, where it is not mounted at the usual place for "
                        "this process (e.g. in a container: /host/sys/fs/cgroup); default: from /proc/self/mountinfo")


def resolver(args: argparse.Namespace, needed: bool = True):
    """The workload resolver (cgroup id -> container, pod, cgroup path) for --cgroup-mount or the
    mounted hierarchy; None when there is none and it is not `needed`. An unreadable hierarchy is
    bad input (ZctraceError: one line, exit 2), checked before any work."""
    from .errors import ZctraceError
    from .workloads import Resolver, v2_root
    try:
        return Resolver(v2_root(getattr(args, "cgroup_mount", None)))
    except ZctraceError as e:
        if needed or getattr(args, "cgroup_mount", None):
            raise ZctraceError(f"{e} (the workload labels need it: --cgroup-mount PATH, or --labels comm)"
                               if needed else str(e)) from None
        return None


def add_json(p: argparse.ArgumentParser, what: str) -> None:
    """--json FILE: also write `what` (e.g. "the report") as JSON, '-' = stdout."""
    p.add_argument("--json", metavar="FILE", type=output_file, help=f"also write {what} as JSON ('-' = stdout)")


def add_tier(p: argparse.ArgumentParser) -> None:
    """--tier: force a probe tier instead of the best this kernel allows."""
    p.add_argument("--tier", choices=TIERS, help="force a probe tier instead of the best available")


def add_latency_every(p: argparse.ArgumentParser) -> None:
    """--latency-every N: the notification latency histogram times one send in N."""
    p.add_argument("--latency-every", type=positive(int, "sends"), default=LATENCY_EVERY, metavar="N",
                   help=f"time the notification latency of one send in N per socket or ring (default "
                        f"{LATENCY_EVERY}; 1 = every send while none is in flight; the probes keep no entry per send)")


def add_kernel_events(p: argparse.ArgumentParser) -> None:
    """--kernel-events: load the opt-in program counting pages attached and notification ranges."""
    p.add_argument("--kernel-events", action="store_true",
                   help="also count pages attached zero-copy and notification ranges (fentry/kprobe tiers; "
                        "a probe per skb or send, so off by default)")


def extra_programs(args: argparse.Namespace) -> frozenset[str]:
    """The opt-in probe programs the command line asks for."""
    return frozenset({"kernel_events"} if getattr(args, "kernel_events", False) else ())
