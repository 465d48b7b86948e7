"""A dict-backed MapSource (zctrace/mapsource.py): the probes' maps as plain Python, filled by
hand, laid out as probes/zctrace.h lays them out (keys and values with the header's field names,
counters and codes at the header's indexes), so snapshot.take reads them as it reads a live
bcc module; or recorded from a live session (FakeMaps.recorded: tests/test_mapsource.py checks
that a recording reads back as the live snapshot)."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any, Iterable

from zctrace.bpfinfo import ProgStats
from zctrace.header import APIS, COUNTERS, ERRORS, HIST_SLOTS, HISTS, KEVENTS, PROTOS, REASON_CODES
from zctrace.mapsource import MapSource
from zctrace.snapshot import entries, stack_addrs

HASH_MAPS = (b"zc_stats", b"zc_rings", b"zc_reasons", b"zc_socks", b"zc_copy_sites", b"zc_rx")
ARRAYS = (b"zc_hists", b"zc_hist_sums", b"zc_errors", b"zc_kevents")


class Rec:
    """A map key or value: named fields, hashable (lists are kept as tuples)."""

    def __init__(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self, name, tuple(value) if isinstance(value, list) else value)

    def _items(self) -> tuple:
        return tuple(sorted(vars(self).items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rec) and self._items() == other._items()

    def __hash__(self) -> int:
        return hash(self._items())

    def __repr__(self) -> str:
        return "Rec(" + ", ".join(f"{k}={v!r}" for k, v in self._items()) + ")"


@dataclass
class Table:
    """A hash map (`entries`), or an array (`array`: indexed by Key(i)), or a stack map."""

    entries: dict[Any, Any] = field(default_factory=dict)
    array: list[Any] | None = None
    max_entries: int = 10240
    stacks: dict[int, list[int]] = field(default_factory=dict)

    Key = int  # arrays: table[table.Key(i)]
    Leaf = Rec

    def items(self) -> list[tuple[Any, Any]]:
        return list(self.entries.items())

    def values(self) -> list[Any]:
        return list(self.array) if self.array is not None else list(self.entries.values())

    def __getitem__(self, key: Any) -> Any:
        return self.array[key] if self.array is not None else self.entries[key]

    def __delitem__(self, key: Any) -> None:
        del self.entries[key]

    def walk(self, stackid: int) -> Iterable[int]:
        return iter(self.stacks[stackid])


def plain(value: Any) -> Any:
    """A bcc key or value (ctypes) as Rec, list, int or bytes."""
    if isinstance(value, (ctypes.Structure, ctypes.Union)):
        return Rec(**{f[0]: plain(getattr(value, f[0])) for f in value._fields_})
    if isinstance(value, ctypes.Array):
        return [plain(v) for v in value]
    if isinstance(value, ctypes._SimpleCData):
        return Rec(value=value.value)
    return value


def _counters(names: Iterable[str], given: dict[str, int]) -> list[int]:
    unknown = set(given) - set(names)
    assert not unknown, f"not counters of probes/zctrace.h: {unknown}"
    return [given.get(name, 0) for name in names]


@dataclass
class FakeMaps:
    """The maps of one tier's session; `kernel` adds the fentry/kprobe tiers' copy sites and
    `rx` the receive-side map (absent maps raise KeyError, as bcc does)."""

    kernel: bool = False
    rx: bool = True
    tables: dict[bytes, Table] = field(default_factory=dict)
    symbols: dict[int, str] = field(default_factory=dict)
    funcs: dict[bytes, Any] = field(default_factory=dict)  # bcc's loaded programs by function name (program())
    misses: dict[int, int] = field(default_factory=dict)  # fd -> recursion_misses of that program

    def __post_init__(self) -> None:
        names = [b"zc_stats", b"zc_rings", b"zc_reasons", b"zc_socks", b"zc_copy_stacks"]
        names += [b"zc_copy_sites"] if self.kernel else []
        names += [b"zc_rx"] if self.rx else []
        self.tables.update({name: Table() for name in names})
        self.tables[b"zc_hists"] = Table(array=[Rec(value=0) for _ in range(len(HISTS) * len(APIS) * HIST_SLOTS)])
        self.tables[b"zc_hist_sums"] = Table(array=[Rec(value=0) for _ in range(len(HISTS) * len(APIS))])
        self.tables[b"zc_errors"] = Table(array=[Rec(events=0, requests=0, bytes=0) for _ in ERRORS])
        self.tables[b"zc_kevents"] = Table(array=[Rec(count=0, bytes=0) for _ in KEVENTS])

    @classmethod
    def recorded(cls, live: MapSource) -> FakeMaps:
        """The contents of a live session's maps, with the kernel stacks they refer to."""
        maps = cls(kernel=True)
        for name in HASH_MAPS:
            try:
                maps.tables[name].entries = {plain(k): plain(v) for k, v in entries(live[name])}
            except KeyError:  # not loaded on this tier
                del maps.tables[name]
        for name in ARRAYS:
            maps.tables[name].array = [plain(v) for v in live[name].values()]
        sites = maps.tables.get(b"zc_copy_sites", Table()).entries
        ids = [k.stackid for k in maps[b"zc_reasons"].entries] + [k.value for k in sites]
        from zctrace import bpfinfo
        for name, fn in live.funcs.items():
            maps.program(name, bpfinfo.prog_stats(fn.fd).recursion_misses)
        for stackid in {i for i in ids if i >= 0}:
            try:
                addrs = stack_addrs(live[b"zc_copy_stacks"], stackid)
            except KeyError:  # evicted
                continue
            maps[b"zc_copy_stacks"].stacks[stackid] = addrs
            maps.symbols.update({a: live.ksym(a, show_offset=False).decode(errors="replace") for a in addrs})
        return maps

    # MapSource --------------------------------------------------------------------------------

    def __getitem__(self, name: bytes) -> Table:
        return self.tables[name]

    def ksym(self, addr: int, show_module: bool = False, show_offset: bool = False) -> bytes:
        return self.symbols.get(addr, "[unknown]").encode()

    def prog_stats(self, fd: int) -> ProgStats:
        """What BPF_OBJ_GET_INFO_BY_FD says of a loaded program (bpfinfo.prog_stats)."""
        return ProgStats(run_time_ns=0, run_count=0, recursion_misses=self.misses[fd])

    # Filling ----------------------------------------------------------------------------------

    def stats(self, pid: int, api: str, proto: str, comm: str = "app", cgroup: int = 0, **counters: int) -> None:
        """A zc_stats row; `counters` by their header names (requests=, zerocopied=, ...)."""
        key = Rec(tgid=pid, api=APIS.index(api), proto=PROTOS.index(proto), pad=0)
        self[b"zc_stats"].entries[key] = Rec(c=_counters(COUNTERS, counters), cgroup=cgroup, comm=comm.encode())

    def ring(self, pid: int, proto: str, comm: str = "app", cgroup: int = 0, **counters: int) -> None:
        """An io_uring instance of `pid` whose counters for `proto` are `counters`."""
        c = [0] * (len(PROTOS) * len(COUNTERS))
        start = PROTOS.index(proto) * len(COUNTERS)
        c[start:start + len(COUNTERS)] = _counters(COUNTERS, counters)
        rings = self[b"zc_rings"].entries
        rings[Rec(value=0xffff0000 + len(rings))] = Rec(tgid=pid, comm=comm.encode(), cgroup=cgroup, c=c)

    def program(self, fn_name: bytes, misses: int = 0) -> None:
        """A loaded program (bcc's function name: kprobe__io_tx_ubuf_complete, ...) whose runs
        the kernel skipped `misses` times."""
        fd = 1000 + len(self.funcs)
        self.funcs[fn_name] = Rec(name=fn_name, fd=fd)
        self.misses[fd] = misses

    def stack(self, frames: Iterable[str]) -> int:
        """A kernel stack (innermost frame first) in zc_copy_stacks; its id."""
        stacks = self[b"zc_copy_stacks"].stacks
        addrs = []
        for frame in frames:
            addr = 0xffffffff81000000 + 0x100 * len(self.symbols)
            self.symbols[addr] = frame
            addrs.append(addr)
        stacks[len(stacks)] = addrs
        return len(stacks) - 1

    def reason(self, pid: int, api: str, proto: str, code: str, requests: int,
               stack: Iterable[str] | None = None) -> None:
        """A zc_reasons row: `code` a name of enum zc_reason; a late_copy has its `stack`."""
        stackid = self.stack(stack) if stack is not None else -1
        key = Rec(tgid=pid, api=APIS.index(api), proto=PROTOS.index(proto), reason=REASON_CODES.index(code),
                  pad=0, stackid=stackid, pad2=0)
        self[b"zc_reasons"].entries[key] = Rec(value=requests)

    def sock(self, pid: int, proto: str, ino: int, requests: int, zerocopied: int, copied: int,
             nbytes: int = 0, cgroup: int = 0, netns: int = 0, ifindex: int = 0) -> None:
        self[b"zc_socks"].entries[Rec(value=ino)] = Rec(
            tgid=pid, proto=PROTOS.index(proto), ino=ino, cgroup=cgroup, netns=netns, ifindex=ifindex,
            requests=requests, bytes=nbytes, zerocopied=zerocopied, copied=copied)

    def hist(self, hist: str, api: str, slots: dict[int, int], total: int | None = None) -> None:
        """Slot counts, and the sum of the values (default: each slot's lower bound times its count)."""
        row = HISTS.index(hist) * len(APIS) + APIS.index(api)
        for slot, n in slots.items():
            self[b"zc_hists"].array[row * HIST_SLOTS + slot] = Rec(value=n)
        if total is None:
            total = sum((2 ** (slot - 1) if slot else 0) * n for slot, n in slots.items())
        self[b"zc_hist_sums"].array[row] = Rec(value=total)

    def error(self, cause: str, events: int, requests: int = 0, nbytes: int = 0) -> None:
        self[b"zc_errors"].array[ERRORS.index(cause)] = Rec(events=events, requests=requests, bytes=nbytes)

    def kevent(self, event: str, count: int, nbytes: int) -> None:
        self[b"zc_kevents"].array[KEVENTS.index(event)] = Rec(count=count, bytes=nbytes)

    def copy_site(self, stack: Iterable[str], count: int, nbytes: int) -> None:
        self[b"zc_copy_sites"].entries[Rec(value=self.stack(stack))] = Rec(count=count, bytes=nbytes)

    def receive(self, pid: int, comm: str, calls: int, mapped: int, copied: int = 0, skipped: int = 0,
                errors: int = 0, cgroup: int = 0) -> None:
        self[b"zc_rx"].entries[Rec(value=pid)] = Rec(comm=comm.encode(), calls=calls, mapped=mapped,
                                                     copied=copied, skipped=skipped, errors=errors, cgroup=cgroup)
