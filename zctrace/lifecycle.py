"""Processes come and go: the map entries of processes that exited are removed, so the maps only
ever fill with live processes, and a Ledger keeps what they counted for reports that cover the
whole run (one direction: maps -> snapshot -> lifecycle -> model).

A process is retired at the first sweep that finds it gone for GRACE seconds or more, so that
completions of its last sends (which can land after it exited) are in the snapshot its rows are
read from. A
process that exec'd or whose pid was reused only loses nothing: its rows are read before they
go, and the probes start new ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from . import maps
from .mapsource import MapSource
from .snapshot import ReasonRow, ReceiveRow, Snapshot, SocketRow, StatsRow, entries



GRACE = 0.2  # seconds a process has been gone before its entries go
SWEEP = 0.25  # seconds between the exporter's sweeps (trace and top sweep at each interrupts tick)


def alive(pid: int, proc: str = "/proc") -> bool:
    return os.path.exists(f"{proc}/{pid}")


def pids_of(snap: Snapshot) -> set[int]:
    """Every process the snapshot has an entry for."""
    return ({r.pid for r in snap.rows} | {r.pid for r in snap.reasons} | {s.pid for s in snap.sockets}
            | {r.pid for r in snap.receive})


@dataclass
class Reaper:
    """Removes the map entries of processes that exited (see the module doc)."""

    bpf: MapSource
    is_alive: Callable[[int], bool] = alive
    clock: Callable[[], float] = time.monotonic
    grace: float = GRACE
    _gone: dict[int, float] = field(default_factory=dict)  # pid -> when first found gone
    retired: int = 0  # processes retired so far

    def sweep(self, snap: Snapshot) -> set[int]:
        """Retire the processes of `snap` found gone `grace` seconds ago or more; returns them
        (their rows in `snap` are their final counts)."""
        now = self.clock()
        gone_now = {pid for pid in pids_of(snap) if not self.is_alive(pid)}
        since = {pid: self._gone.get(pid, now) for pid in gone_now}
        retire = {pid for pid, t in since.items() if now - t >= self.grace}
        self._gone = {pid: t for pid, t in since.items() if pid not in retire}
        if retire:
            self._delete(retire)
            self.retired += len(retire)
        return retire

    def _delete(self, pids: set[int]) -> None:
        """The one write of the read side into the maps (besides Session.clear): the entries of
        retired processes, in every map with per-process entries (maps.PER_PROCESS)."""
        for spec in maps.PER_PROCESS:
            try:
                table = self.bpf[spec.key]
            except KeyError:  # not loaded on this tier
                continue
            keys = [key for key, value in entries(table) if spec.owner(key, value) in pids]
            if not keys:
                continue
            try:  # one BPF_MAP_DELETE_BATCH
                table.items_delete_batch((table.Key * len(keys))(*keys))
            except Exception:  # no batch operations here, or an entry gone meanwhile
                for key in keys:
                    try:
                        del table[key]
                    except KeyError:
                        pass


@dataclass
class Ledger:
    """What retired processes counted, added back to later snapshots (trace and top report the
    whole run)."""

    rows: dict[tuple[int, str, str, str], StatsRow] = field(default_factory=dict)
    reasons: dict[tuple[int, str, str, str, tuple[str, ...]], int] = field(default_factory=dict)
    sockets: list[SocketRow] = field(default_factory=list)
    receive: list[ReceiveRow] = field(default_factory=list)

    def keep(self, snap: Snapshot, pids: set[int]) -> None:
        """Remember the final rows of `pids` from `snap`."""
        for r in snap.rows:
            if r.pid in pids:
                key = (r.pid, r.comm, r.api, r.proto)
                old = self.rows.get(key)
                self.rows[key] = r if old is None else replace(
                    old, counters={k: v + r.counters.get(k, 0) for k, v in old.counters.items()})
        for r in snap.reasons:
            if r.pid in pids:
                key = (r.pid, r.api, r.proto, r.code, r.stack)
                self.reasons[key] = self.reasons.get(key, 0) + r.requests
        self.sockets += [s for s in snap.sockets if s.pid in pids]
        self.receive += [r for r in snap.receive if r.pid in pids]

    def merged(self, snap: Snapshot) -> Snapshot:
        """`snap` with the retired processes' rows added."""
        if not (self.rows or self.reasons or self.sockets or self.receive):
            return snap
        rows = {(r.pid, r.comm, r.api, r.proto): r for r in snap.rows}
        for key, r in self.rows.items():
            live = rows.get(key)
            rows[key] = r if live is None else replace(
                live, counters={k: v + r.counters.get(k, 0) for k, v in live.counters.items()})
        reasons = list(snap.reasons) + [ReasonRow(pid, api, proto, code, stack, n)
                                        for (pid, api, proto, code, stack), n in self.reasons.items()]
        return replace(snap, rows=sorted(rows.values(), key=lambda r: (r.pid, r.api, r.proto)), reasons=reasons,
                       sockets=list(snap.sockets) + self.sockets, receive=list(snap.receive) + self.receive)


@dataclass
class Lifetime:
    """A Reaper and a Ledger together: snapshots of the whole run, with maps that only hold live
    processes (trace, top)."""

    reaper: Reaper
    ledger: Ledger = field(default_factory=Ledger)

    def observe(self, snap: Snapshot) -> Snapshot:
        """Retire what exited (its final rows go to the ledger); the whole run so far."""
        retired = self.reaper.sweep(snap)
        if retired:
            self.ledger.keep(snap, retired)
            snap = replace(snap, rows=[r for r in snap.rows if r.pid not in retired],
                           reasons=[r for r in snap.reasons if r.pid not in retired],
                           sockets=[s for s in snap.sockets if s.pid not in retired],
                           receive=[r for r in snap.receive if r.pid not in retired])
        return self.ledger.merged(snap)
