"""`zctrace top`: a live view of the processes (and sockets) whose zerocopy sends get copied.

Every `--interval` seconds the probes' maps are read into a model.Report (counts since start)
and redrawn: processes ordered by copied requests, then requests, with their verdict mix, the
rate since the last refresh and the most frequent copy reason; then the sockets the model
attributes. On a terminal this is a curses screen (q or Ctrl-C quits and restores the
terminal); with stdout not a terminal, plain snapshots are printed one after another.
"""

from __future__ import annotations

import argparse
import curses
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import advice, argtypes, cgroups, crossover, interrupts, lifecycle, model, snapshot
from .probes import Session
from .report import human_bytes, table
from .session import open_session

MAX_SOCKETS = 10


def add_arguments(p: argparse.ArgumentParser) -> None:
    argtypes.add_process_filters(p, "watch", "show only")
    argtypes.add_cgroup_mount(p)
    argtypes.add_tier(p)
    p.add_argument("--interval", type=argtypes.seconds, default=1.0, help="seconds between refreshes (default 1)")
    p.add_argument("--iterations", type=argtypes.positive(int, "refreshes"), help="stop after this many refreshes")


@dataclass
class Frame:
    """One refresh: the report, and requests per second per pid since the previous one."""

    report: model.Report
    rates: dict[int, float]
    at: float


class Sampler:
    """Reads the session's maps into Frames, keeping what rates need between them."""

    def __init__(self, session: Session, comm: str | None, cgroup: Path | None = None, resolve=None) -> None:
        self._session = session
        self._resolve = resolve  # cgroup id -> workload (workloads.Resolver)
        self._comm = comm
        self._cgroup = cgroup
        self._last: dict[int, int] = {}
        self._life = lifecycle.Lifetime(lifecycle.Reaper(session.bpf))  # exited processes leave the maps
        self._then = self._start = time.monotonic()
        self._paths = crossover.DevicePaths()  # sockets' devices, looked up while they exist
        self._saved = crossover.SavedCache()

    def take(self) -> Frame:
        now = time.monotonic()
        snap = self._life.observe(snapshot.take(self._session.bpf))
        self._paths.observe(snap.sockets)
        rep = model.build(snap, self._session.tier, comm=self._comm,
                          cgroups=cgroups.subtree_ids(self._cgroup) if self._cgroup else None,
                          resolve=self._resolve)
        advice.Advisor(self._saved.get(), self._paths).advise(rep, now - self._start)
        elapsed = max(now - self._then, 1e-9)
        rates = {p.pid: (p.counts.zc_requests - self._last.get(p.pid, 0)) / elapsed
                 for p in rep.processes}
        self._last = {p.pid: p.counts.zc_requests for p in rep.processes}
        self._then = now
        return Frame(rep, rates, time.time())


def render(frame: Frame, interval: float) -> list[str]:
    """The screen for one frame, as lines."""
    rep = frame.report
    t = rep.totals
    head = (f"zctrace top  tier {rep.tier}  every {interval:g} s  "
            f"{time.strftime('%H:%M:%S', time.localtime(frame.at))}  "
            f"{len(rep.processes)} process{'' if len(rep.processes) == 1 else 'es'}")
    totals = (f"total  requests {t.zc_requests}  {_mix(t)}  bytes {human_bytes(t.bytes)}  "
              f"top reason {t.top_reason}")
    procs = sorted(rep.processes, key=lambda p: (-p.counts.copied, -p.counts.zc_requests, p.pid))
    rows = [(p.pid, p.comm, p.workload.name, f"{frame.rates.get(p.pid, 0.0):.0f}", p.counts.zc_requests,
             human_bytes(p.counts.bytes), p.counts.copied, _mix(p.counts), p.counts.verdict,
             p.counts.top_reason, _advice(p)) for p in procs]
    lines = [head, totals, ""]
    lines += table(("PID", "COMM", "WORKLOAD", "REQ/S", "REQUESTS", "BYTES", "COPIED", "MIX", "VERDICT",
                    "TOP REASON", "ADVICE"), rows).splitlines()
    if not procs:
        lines.append("no zerocopy sends seen yet")
    if rep.sockets:
        lines += ["", "sockets with the most copied requests:"]
        lines += table(("PID", "PROTO", "INODE", "DEV", "REQUESTS", "BYTES", "ZEROCOPIED", "COPIED"),
                       [(s.pid, s.proto, s.ino, _device(s), s.requests, human_bytes(s.bytes),
                         s.zerocopied, s.copied) for s in rep.sockets[:MAX_SOCKETS]]).splitlines()
    return lines


def _advice(p: model.ProcessReport) -> str:
    """The process's advice codes (docs/advice.md; trace --json has their text and evidence)."""
    return ",".join(dict.fromkeys(a.code for a in p.advice)) or "-"


def _mix(c: model.Counts) -> str:
    """Verdict shares of the requests, e.g. `copied 99% unknown <1%`; `-` without requests."""
    total = c.zc_requests + c.not_attempted
    if not total:
        return "-"
    parts = {**c.verdicts(), model.UNDECIDED: c.undecided}
    return " ".join(f"{name} {_share(n, total)}" for name, n in parts.items() if n)


def _share(n: int, total: int) -> str:
    pct = 100 * n / total
    return "<1%" if pct < 1 else f"{pct:.0f}%"


def _device(sock: snapshot.SocketRow) -> str:
    """The socket's egress device: its name when the socket is in our network namespace."""
    index = sock.ifindex
    if not index:
        return "-"
    if sock.netns == os.stat("/proc/self/ns/net").st_ino:
        try:
            return socket.if_indextoname(index)
        except OSError:
            pass  # gone since
    return f"#{index}"


def run_cli(args: argparse.Namespace) -> int:
    cgroup = cgroups.resolve(args.cgroup) if args.cgroup else None
    resolve = argtypes.resolver(args, needed=False)
    session = open_session(args.tier, list(args.pid) if args.pid else None)
    show = _curses if sys.stdout.isatty() else _plain
    try:
        with session, interrupts.raising():
            show(Sampler(session, args.comm, cgroup, resolve), args)
    except KeyboardInterrupt:
        pass
    return 0


def _plain(sampler: Sampler, args: argparse.Namespace) -> None:
    """Print a snapshot every interval (stdout is not a terminal)."""
    n = 0
    while n != args.iterations:
        time.sleep(args.interval)
        print("\n".join(render(sampler.take(), args.interval)) + "\n", flush=True)
        n += 1


def _curses(sampler: Sampler, args: argparse.Namespace) -> None:
    curses.wrapper(_screen, sampler, args)


def _screen(scr: curses.window, sampler: Sampler, args: argparse.Namespace) -> None:
    """Redraw every interval; between refreshes wait for keys: q quits, a resize redraws."""
    curses.curs_set(0)
    lines = [f"zctrace top: collecting for {args.interval:g} s...  (q quits)"]
    n, due = 0, time.monotonic() + args.interval
    while True:
        _draw(scr, lines)
        scr.timeout(max(0, int((due - time.monotonic()) * 1000)))
        key = scr.getch()
        if key in (ord("q"), ord("Q")):
            return
        if time.monotonic() < due:
            continue  # a resize or another key: redraw, keep waiting
        lines = render(sampler.take(), args.interval)
        lines[0] += "  (q quits)"
        n, due = n + 1, time.monotonic() + args.interval
        if n == args.iterations:
            _draw(scr, lines)
            return


def _draw(scr: curses.window, lines: list[str]) -> None:
    height, width = scr.getmaxyx()
    scr.erase()
    for y, line in enumerate(lines[:height]):
        scr.addnstr(y, 0, line, width - 1, curses.A_REVERSE if y == 0 else curses.A_NORMAL)
    scr.refresh()
