"""Read the probes' maps into plain Python values (one direction: maps -> snapshot)."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

from . import bpfinfo
from .header import APIS, COUNTERS, ERRORS, HIST_SLOTS, HISTS, KEVENTS, PROTOS, REASON_CODES
from . import maps
from .mapsource import MapSource, StackTable, Table


@dataclass(frozen=True)
class StatsRow:
    """Counters of one (process, api, protocol)."""

    pid: int
    comm: str
    api: str
    proto: str
    counters: dict[str, int]
    cgroup: int = 0


@dataclass(frozen=True)
class ReasonRow:
    """Copied requests of one (process, api, protocol) for one reason code; a late copy keeps
    the kernel stack of skb_copy_ubufs (innermost first) for classification."""

    pid: int
    api: str
    proto: str
    code: str
    stack: tuple[str, ...]
    requests: int


@dataclass(frozen=True)
class SocketRow:
    """One MSG_ZEROCOPY socket: who owns it and what happened to its requests."""

    pid: int
    proto: str
    ino: int
    cgroup: int
    netns: int
    ifindex: int
    requests: int
    bytes: int
    zerocopied: int
    copied: int


@dataclass(frozen=True)
class ReceiveRow:
    """TCP_ZEROCOPY_RECEIVE results of one process."""

    pid: int
    comm: str
    calls: int
    mapped: int
    copied: int
    skipped: int
    errors: int
    cgroup: int = 0


@dataclass(frozen=True)
class CopySite:
    """Late copies (skb_copy_ubufs) from one kernel call stack, innermost frame first."""

    stack: tuple[str, ...]
    count: int
    bytes: int


@dataclass(frozen=True)
class RingRow:
    """An io_uring instance of a process that sent zerocopy requests, from /proc fdinfo: what
    the kernel posted that the application has not consumed yet (all CQE kinds)."""

    pid: int
    ino: int
    cq_pending: int   # CQEs in the CQ ring past the application's head (CqTail - CqHead)
    cq_overflow: int  # CQEs in the kernel's overflow list: the CQ ring was full


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    rows: list[StatsRow]
    reasons: list[ReasonRow] = field(default_factory=list)
    sockets: list[SocketRow] = field(default_factory=list)
    hists: dict[tuple[str, str], dict[int, int]] = field(default_factory=dict)  # (hist, api) -> {log2 slot: n}
    hist_sums: dict[tuple[str, str], int] = field(default_factory=dict)  # (hist, api) -> sum of its values
    errors: dict[str, int] = field(default_factory=dict)  # cause -> events the probes could not record
    lost: dict[str, tuple[int, int]] = field(default_factory=dict)  # cause -> (requests, bytes) uncounted
    kevents: dict[str, tuple[int, int]] = field(default_factory=dict)  # event -> (count, bytes)
    copy_sites: list[CopySite] = field(default_factory=list)
    receive: list[ReceiveRow] = field(default_factory=list)
    rings: list[RingRow] = field(default_factory=list)
    # Runs the kernel skipped of each loaded program, by event (recursion_misses: kernel-wide
    # counters, never cleared); and whether this kernel counts those of kprobe and tracepoint
    # programs (6.7+), or only fentry's.
    recursion_misses: dict[str, int] = field(default_factory=dict)
    recursion_misses_counted: bool = True

    @property
    def skipped_runs(self) -> int:
        """Runs the kernel skipped, of every program (the lost cause `recursion_misses`)."""
        return sum(self.recursion_misses.values())


def _name(names: tuple[str, ...], i: int) -> str:
    return names[i] if i < len(names) else str(i)


def stack_addrs(table: StackTable, stackid: int) -> list[int]:
    """The frames of stack `stackid` in a stack trace map, innermost first (KeyError: evicted).
    The map holds header.STACK_DEPTH frames, fewer than bcc's walk expects: a stack that fills
    them has no terminating 0, and the walk runs past their end."""
    addrs = []
    try:
        for addr in table.walk(stackid):
            addrs.append(addr)
    except IndexError:
        pass
    return addrs


def _stack(bpf: MapSource, stackid: int) -> tuple[str, ...]:
    if stackid < 0:
        return ()
    try:
        addrs = stack_addrs(bpf[maps.COPY_STACKS.key], stackid)
    except KeyError:  # evicted, or no stack map on this tier
        return ()
    return tuple(bpf.ksym(a, show_offset=False).decode(errors="replace") for a in addrs)


_modules_seen = [""]


def _forget_stale_ksyms(bpf: MapSource) -> None:
    """bcc reads /proc/kallsyms once per process: addresses in a module loaded since (tun on
    the first tun device, ...) would take the name of the nearest older symbol. Forget bcc's
    kernel symbols whenever the loaded modules changed."""
    try:
        with open("/proc/modules") as f:  # name size refs users state address: names, addresses
            modules = " ".join(f"{line.split()[0]}@{line.split()[-1]}" for line in f if line.strip())
    except OSError:
        return
    if modules != _modules_seen[0]:
        getattr(type(bpf), "_sym_caches", {}).pop(-1, None)
        _modules_seen[0] = modules


def parse_ring_fdinfo(text: str) -> tuple[int, int, int] | None:
    """(ring inode, CQEs pending, CQEs in the overflow list) from an io_uring fd's fdinfo, or None
    when a field is missing or malformed (the kernel leaves lines out while the ring is busy)."""
    lines = text.splitlines()
    info = dict(line.split(":", 1) for line in lines if ":" in line and not line[:1].isspace())
    try:
        ino, head, tail = (int(info[k]) for k in ("ino", "CqHead", "CqTail"))
    except (KeyError, ValueError):
        return None
    if "CqOverflowList:" not in lines:
        return None
    after = lines[lines.index("CqOverflowList:") + 1:]
    overflow = next((i for i, line in enumerate(after) if not line[:1].isspace()), len(after))
    return ino, (tail - head) & 0xFFFFFFFF, overflow


# A busy ring's fdinfo holds only pos/flags/mnt_id/ino (the kernel could not take the ring's
# lock): half the reads next to a busy sender on 6.18, in runs of up to 10 in a row.
RING_READ_TRIES = 20
# A ring with no complete reading yet (none in `last`: the exporter's first scrape of it) is
# tried on for up to a quarter second, further apart: a scrape then holds its process's gauges
# (1 of 120 scrapes next to a busy sender missed them in a CI run, 2026-12-07).
RING_FIRST_READ_PAUSES = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128)


def read_rings(pids: set[int], proc: str = "/proc", last: dict[tuple[int, int], RingRow] | None = None) -> list[RingRow]:
    """The io_uring instances these processes hold, one row per ring (fds sharing it once), read
    from `proc`. A process whose file table holds no ring is looked at thread by thread: a thread
    may have a file table of its own (unshare(CLONE_FILES), as zctrace's own send engine does),
    whose rings its process's /proc/PID/fd does not show. A process that is gone is left out; so
    is a ring whose fdinfo lacks fields RING_READ_TRIES times in a row (a busy submitter holds
    the ring's lock), unless `last` (the previous call's rows, which this call updates) has it:
    then its last complete reading stands; without one it is tried on, further apart
    (RING_FIRST_READ_PAUSES). Never an error."""
    rows: dict[tuple[int, int], RingRow] = {}
    for pid in sorted(pids):
        found = _rings_in(f"{proc}/{pid}", pid, rows, last)
        if found:
            continue
        try:
            tasks = [t for t in os.listdir(f"{proc}/{pid}/task") if t != str(pid)]
        except OSError:
            continue  # gone, or not ours to see
        for tid in tasks:
            _rings_in(f"{proc}/{pid}/task/{tid}", pid, rows, last)
    if last is not None:
        last.clear()
        last.update(rows)
    return list(rows.values())


def _rings_in(base: str, pid: int, rows: dict[tuple[int, int], RingRow],
              last: dict[tuple[int, int], RingRow] | None = None) -> int:
    """The rings in the file table at `base` (/proc/PID or /proc/PID/task/TID) into `rows`; how
    many io_uring fds it holds."""
    try:
        fds = os.listdir(f"{base}/fd")
    except OSError:
        return 0  # gone, or not ours to see
    found = 0
    for fd in fds:
        parsed, text = None, ""
        try:
            if os.readlink(f"{base}/fd/{fd}") != "anon_inode:[io_uring]":
                continue
            found += 1
            for attempt in range(RING_READ_TRIES):
                if attempt:
                    time.sleep(0.0001)
                with open(f"{base}/fdinfo/{fd}") as f:
                    text = f.read()
                parsed = parse_ring_fdinfo(text)
                if parsed is not None:
                    break
            known = None
            if parsed is None:
                m = re.search(r"^ino:\s*(\d+)$", text, re.M)  # a busy ring's fdinfo still has its inode
                known = last.get((pid, int(m.group(1)))) if last and m else None
            for pause in RING_FIRST_READ_PAUSES if parsed is None and known is None else ():
                time.sleep(pause)
                with open(f"{base}/fdinfo/{fd}") as f:
                    parsed = parse_ring_fdinfo(f.read())
                if parsed is not None:
                    break
        except OSError:
            continue  # closed, or the process exited
        if parsed is not None:
            ino, pending, overflow = parsed
            rows[(pid, ino)] = RingRow(pid, ino, pending, overflow)
        elif known is not None:
            rows[(pid, known.ino)] = known
    return found


def ring_pids(bpf: MapSource) -> set[int]:
    """The processes that sent io_uring zerocopy requests (their rings are worth a /proc walk)."""
    return {int(v.tgid) for _, v in entries(bpf[maps.RINGS.key])}


def _has(bpf: MapSource, name: bytes) -> bool:
    try:
        bpf[name]
    except KeyError:
        return False
    return True


def entries(table: Table) -> list[tuple[object, object]]:
    """(key, value) of every entry of a hash map: one BPF_MAP_LOOKUP_BATCH where the kernel has
    it (a bcc items() walk costs two syscalls an entry: seconds for a map of thousands, while
    processes come and go), else the walk."""
    try:
        found = list(table.items_lookup_batch())
    except Exception:  # no batch operations for this map type or kernel
        return list(table.items())
    # The batch gives plain ints for scalar keys and values; items() gives ctypes objects.
    wrap = lambda x, kind: kind(x) if isinstance(x, int) else x  # noqa: E731
    return [(wrap(k, table.Key), wrap(v, table.Leaf)) for k, v in found]


def _stats_rows(bpf: MapSource) -> list[StatsRow]:
    """Counters per (process, api, protocol): zc_stats rows, plus each io_uring ring's own
    counters (struct zc_ring, c[proto * ZC_NR_COUNTERS + counter]) added to its process's rows."""
    rows: dict[tuple[int, str, str], StatsRow] = {}

    def add(pid: int, comm: bytes, api: str, proto: str, cgroup: int, values) -> None:
        key = (pid, api, proto)
        row = rows.get(key)
        if row is None:
            rows[key] = StatsRow(pid=pid, comm=comm.decode(errors="replace"), api=api, proto=proto,
                                 cgroup=cgroup, counters={name: int(values[i]) for i, name in enumerate(COUNTERS)})
        else:
            for i, name in enumerate(COUNTERS):
                row.counters[name] += int(values[i])

    for k, v in entries(bpf[maps.STATS.key]):
        add(k.tgid, v.comm, _name(APIS, k.api), _name(PROTOS, k.proto), int(v.cgroup), v.c)
    n = len(COUNTERS)
    for _, v in entries(bpf[maps.RINGS.key]):
        for p, proto in enumerate(PROTOS):
            values = v.c[p * n:(p + 1) * n]
            if any(values):
                add(v.tgid, v.comm, "io_uring", proto, int(v.cgroup), values)
    return sorted(rows.values(), key=lambda r: (r.pid, r.api, r.proto))


def counts_skipped_runs(release: str | None = None) -> bool:
    """Does this kernel (release: uname -r) count the runs of kprobe and tracepoint programs it
    skips in recursion_misses? Since 6.7 (trace_call_bpf, when another such program runs on the
    CPU: bpf_prog_active); fentry programs' own recursion since 5.12."""
    release = release or os.uname().release
    try:
        major, minor = (int(x) for x in release.split("-")[0].split(".")[:2])
    except ValueError:
        return True  # not a version we can read: trust the counters
    return (major, minor) >= (6, 7)


def recursion_misses(bpf: MapSource) -> dict[str, int]:
    """Runs the kernel skipped of each of the module's loaded programs, by event (a program that
    cannot be asked is left out), since the session last forgot them (Session.clear: its
    `recursion_misses_base`), else since it was loaded. The fake of the unit tests answers
    through its own prog_stats."""
    read = getattr(bpf, "prog_stats", None) or bpfinfo.prog_stats
    base = getattr(bpf, "recursion_misses_base", None) or {}
    return {bpfinfo.program_event(name): n - base.get(name, 0)
            for name, n in bpfinfo.recursion_misses(getattr(bpf, "funcs", {}), read).items()}


def take(bpf: MapSource, rings: bool = False) -> Snapshot:
    """Snapshot the maps of a loaded bcc module (or any MapSource); `rings` adds the io_uring CQ state of the
    processes that sent io_uring zerocopy requests (a walk of their /proc fds: for reports and
    scrapes, not for bench polls)."""
    _forget_stale_ksyms(bpf)
    rows = _stats_rows(bpf)
    reasons = [ReasonRow(pid=k.tgid, api=_name(APIS, k.api), proto=_name(PROTOS, k.proto),
                         code=_name(REASON_CODES, k.reason), stack=_stack(bpf, k.stackid), requests=int(v.value))
               for k, v in entries(bpf[maps.REASONS.key])]
    sockets = [SocketRow(pid=v.tgid, proto=_name(PROTOS, v.proto), ino=int(v.ino), cgroup=int(v.cgroup),
                         netns=int(v.netns), ifindex=int(v.ifindex), requests=int(v.requests),
                         bytes=int(v.bytes), zerocopied=int(v.zerocopied), copied=int(v.copied))
               for _, v in entries(bpf[maps.SOCKS.key])]
    hists: dict[tuple[str, str], dict[int, int]] = {}
    for i, n in enumerate(bpf[maps.HISTS.key].values()):  # [(hist * apis + api) * slots + slot]
        if n.value:
            which, slot = divmod(i, HIST_SLOTS)
            hist, api = divmod(which, len(APIS))
            hists.setdefault((_name(HISTS, hist), _name(APIS, api)), {})[slot] = int(n.value)
    sums = {}
    if _has(bpf, maps.HIST_SUMS.key):
        for i, n in enumerate(bpf[maps.HIST_SUMS.key].values()):  # [hist * apis + api]
            hist, api = divmod(i, len(APIS))
            if (_name(HISTS, hist), _name(APIS, api)) in hists:
                sums[(_name(HISTS, hist), _name(APIS, api))] = int(n.value)
    err = bpf[maps.ERRORS.key]
    lost_rows = {name: err[err.Key(i)] for i, name in enumerate(ERRORS)}
    errors = {name: int(v.events) for name, v in lost_rows.items()}
    lost = {name: (int(v.requests), int(v.bytes)) for name, v in lost_rows.items()}
    kev = bpf[maps.KEVENTS.key]
    kevents = {name: (int(kev[kev.Key(i)].count), int(kev[kev.Key(i)].bytes)) for i, name in enumerate(KEVENTS)}
    sites = []
    if _has(bpf, maps.COPY_SITES.key):
        sites = [CopySite(_stack(bpf, k.value), int(v.count), int(v.bytes))
                 for k, v in bpf[maps.COPY_SITES.key].items()]
    receive = []
    if _has(bpf, maps.RX.key):
        receive = [ReceiveRow(pid=k.value, comm=v.comm.decode(errors="replace"), calls=int(v.calls),
                              mapped=int(v.mapped), copied=int(v.copied), skipped=int(v.skipped),
                              errors=int(v.errors), cgroup=int(v.cgroup))
                   for k, v in entries(bpf[maps.RX.key])]
    return Snapshot(taken_at=time.time(), rows=rows,
                    reasons=reasons, sockets=sockets, hists=hists, hist_sums=sums, errors=errors, lost=lost, kevents=kevents,
                    copy_sites=sorted(sites, key=lambda s: -s.bytes), receive=sorted(receive, key=lambda r: r.pid),
                    rings=read_rings(ring_pids(bpf)) if rings else [],
                    recursion_misses=recursion_misses(bpf), recursion_misses_counted=counts_skipped_runs())
