"""Read the probes' maps into plain Python values (one direction: maps -> snapshot)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .header import APIS, COUNTERS, KEVENTS, PROTOS


@dataclass(frozen=True)
class StatsRow:
    """Counters of one (process, api, protocol)."""

    pid: int
    comm: str
    api: str
    proto: str
    counters: dict[str, int]


@dataclass(frozen=True)
class CopySite:
    """Late copies (skb_copy_ubufs) from one kernel call stack, innermost frame first."""

    stack: tuple[str, ...]
    count: int
    bytes: int


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    rows: list[StatsRow]
    kevents: dict[str, tuple[int, int]] = field(default_factory=dict)  # event -> (count, bytes)
    copy_sites: list[CopySite] = field(default_factory=list)


def take(bpf) -> Snapshot:
    """Snapshot the maps of a loaded bcc module."""
    rows = [StatsRow(pid=k.tgid, comm=v.comm.decode(errors="replace"),
                     api=APIS[k.api] if k.api < len(APIS) else str(k.api),
                     proto=PROTOS[k.proto] if k.proto < len(PROTOS) else str(k.proto),
                     counters={name: int(v.c[i]) for i, name in enumerate(COUNTERS)})
            for k, v in bpf[b"zc_stats"].items()]
    kev = bpf[b"zc_kevents"]
    kevents = {name: (int(kev[kev.Key(i)].count), int(kev[kev.Key(i)].bytes))
               for i, name in enumerate(KEVENTS)}
    sites = []
    if _has(bpf, "zc_copy_sites"):
        stacks = bpf[b"zc_copy_stacks"]
        for k, v in bpf[b"zc_copy_sites"].items():
            frames: tuple[str, ...] = ()
            if k.value >= 0:
                frames = tuple(bpf.ksym(addr, show_offset=False).decode(errors="replace")
                               for addr in stacks.walk(k.value))
            sites.append(CopySite(frames, int(v.count), int(v.bytes)))
    return Snapshot(taken_at=time.time(), rows=sorted(rows, key=lambda r: (r.pid, r.api, r.proto)),
                    kevents=kevents, copy_sites=sorted(sites, key=lambda s: -s.bytes))


def _has(bpf, name: str) -> bool:
    try:
        bpf[name.encode()]
    except KeyError:
        return False
    return True
