"""Where snapshots read the probes' maps from: the part of a loaded bcc module that
snapshot.take, lifecycle and the exporter use, as a protocol. A live session's `bpf` satisfies it;
so does the dict-backed fake of the unit tests (tests/unit/fakemaps.py), which drives
snapshot -> model -> report and the collector from hand-written map contents."""

from __future__ import annotations

from typing import Any, Iterable, Protocol


class Table(Protocol):
    """One BPF map as bcc presents it: hash maps walked by items() (items_lookup_batch() where
    the kernel has it), arrays read by table[table.Key(i)] or values(), entries deleted by key."""

    Key: Any
    Leaf: Any
    max_entries: int

    def items(self) -> Iterable[tuple[Any, Any]]: ...

    def values(self) -> Iterable[Any]: ...

    def __getitem__(self, key: Any) -> Any: ...

    def __delitem__(self, key: Any) -> None: ...


class StackTable(Table, Protocol):
    """A stack trace map: the addresses of one stack, innermost first."""

    def walk(self, stackid: int) -> Iterable[int]: ...


class MapSource(Protocol):
    """The maps of a loaded module by name (KeyError: not loaded on this tier), the kernel's
    symbol names for stack addresses, and the loaded programs by function name (`funcs`, each
    with its `fd`: snapshot.take reads their run statistics with BPF_OBJ_GET_INFO_BY_FD, or
    through the source's own `prog_stats(fd)` where it has one, as the unit tests' fake does)."""

    funcs: Any

    def __getitem__(self, name: bytes) -> Any: ...  # a Table; a StackTable for a stack map

    def ksym(self, addr: int, show_module: bool = False, show_offset: bool = False) -> bytes: ...
