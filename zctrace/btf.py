"""A small reader for the kernel's BTF (/sys/kernel/btf/vmlinux).

zctrace compiles its probes against whatever kernel headers are at hand, which may not match
the running kernel; every struct offset the probes use comes from here instead.
"""

from __future__ import annotations

import struct
from dataclasses import astuple, dataclass
from pathlib import Path

from . import cache

VMLINUX = Path("/sys/kernel/btf/vmlinux")

_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF, _VOLATILE, _CONST, _RESTRICT = range(1, 12)
_FUNC, _FUNC_PROTO, _VAR, _DATASEC, _FLOAT, _DECL_TAG, _TYPE_TAG, _ENUM64 = range(12, 20)
_MODIFIERS = {_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG}
# Bytes that follow the 12-byte common header, per kind: (fixed, per vlen item).
_TRAILER = {_INT: (4, 0), _ARRAY: (12, 0), _STRUCT: (0, 12), _UNION: (0, 12), _ENUM: (0, 8),
            _FUNC_PROTO: (0, 8), _VAR: (4, 0), _DATASEC: (0, 12), _DECL_TAG: (4, 0),
            _ENUM64: (0, 12)}


class BtfError(LookupError):
    """A type, member or enum value the probes need is not in this kernel's BTF."""


@dataclass(frozen=True, slots=True)
class Field:
    """Where a struct member lives: byte offset of its storage unit, and for bitfields the
    bit shift and width within the little-endian word read at `offset`."""

    offset: int
    size: int
    bit_shift: int = 0
    bits: int = 0


class Btf:
    """Types of one BTF blob, indexed lazily by name."""

    def __init__(self, data: bytes) -> None:
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<HBBIIIII", data, 0)
        if magic != 0xEB9F:
            raise BtfError("not a little-endian BTF blob")
        self._data = data
        self._strs = hdr_len + str_off
        self._str_end = self._strs + str_len
        self._offsets: list[int] = [0]  # type id -> byte offset of its header
        self._by_name: dict[tuple[int, str], int] = {}
        self._enums: list[int] = []  # every enum, named or not (flag bits live in anonymous ones)
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name_off, info = struct.unpack_from("<II", data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            tid = len(self._offsets)
            self._offsets.append(pos)
            if name_off and kind in (_STRUCT, _UNION, _ENUM, _ENUM64, _FUNC, _TYPEDEF):
                self._by_name.setdefault((kind, self._str(name_off)), tid)
            if kind in (_ENUM, _ENUM64):
                self._enums.append(tid)
            fixed, item = _TRAILER.get(kind, (0, 0))
            pos += 12 + fixed + item * vlen

    @classmethod
    def load(cls, path: Path = VMLINUX) -> Btf:
        try:
            return cls(path.read_bytes())
        except OSError as e:
            raise BtfError(f"cannot read kernel BTF at {path}: {e.strerror}") from e

    def _str(self, off: int) -> str:
        start = self._strs + off
        return self._data[start:self._data.index(b"\0", start, self._str_end)].decode()

    def _header(self, tid: int) -> tuple[int, int, int, bool, int]:
        pos = self._offsets[tid]
        name_off, info, size_or_type = struct.unpack_from("<III", self._data, pos)
        return (info >> 24) & 0x1F, info & 0xFFFF, size_or_type, bool(info >> 31), pos + 12

    def _resolve(self, tid: int) -> int:
        """Skip typedefs and qualifiers."""
        while tid:
            kind, _, target, _, _ = self._header(tid)
            if kind not in _MODIFIERS:
                return tid
            tid = target
        return tid

    def _size(self, tid: int) -> int:
        tid = self._resolve(tid)
        kind, _, size, _, pos = self._header(tid)
        if kind == _PTR:
            return 8
        if kind == _ARRAY:
            elem, _, nelems = struct.unpack_from("<III", self._data, pos)
            return self._size(elem) * nelems
        return size

    def _struct_id(self, name: str) -> int:
        for kind in (_STRUCT, _UNION):
            tid = self._by_name.get((kind, name))
            if tid:
                return tid
        raise BtfError(f"struct {name} is not in this kernel's BTF")

    def _members(self, tid: int):
        kind, vlen, _, kflag, pos = self._header(tid)
        for i in range(vlen):
            name_off, mtype, off = struct.unpack_from("<III", self._data, pos + 12 * i)
            bits, bit_off = (off >> 24, off & 0xFFFFFF) if kflag else (0, off)
            yield (self._str(name_off) if name_off else ""), mtype, bit_off, bits

    def _find(self, tid: int, member: str) -> tuple[int, int, int] | None:
        """(bit offset, type id, bitfield bits) of `member`, looking into anonymous members."""
        for name, mtype, bit_off, bits in self._members(tid):
            if name == member:
                return bit_off, mtype, bits
            if not name:
                inner = self._resolve(mtype)
                if self._header(inner)[0] in (_STRUCT, _UNION):
                    hit = self._find(inner, member)
                    if hit:
                        return bit_off + hit[0], hit[1], hit[2]
        return None

    def field(self, struct_name: str, path: str) -> Field:
        """Locate `path` ("a" or "a.b.c") inside `struct struct_name`."""
        tid, bit_total, bits = self._struct_id(struct_name), 0, 0
        mtype = tid
        for part in path.split("."):
            hit = self._find(self._resolve(mtype), part)
            if hit is None:
                raise BtfError(f"{struct_name}.{path} is not in this kernel's BTF")
            bit_off, mtype, bits = hit
            bit_total += bit_off
        if bits:
            offset = bit_total // 8
            return Field(offset - offset % 4, 4, bit_total - (offset - offset % 4) * 8, bits)
        return Field(bit_total // 8, self._size(mtype))

    def offset(self, struct_name: str, path: str) -> int:
        return self.field(struct_name, path).offset

    def enum_value(self, name: str) -> int:
        """Value of enumerator `name`, searching every enum."""
        for tid in self._enums:
            kind, vlen, _, _, pos = self._header(tid)
            step = 8 if kind == _ENUM else 12
            for i in range(vlen):
                name_off, val = struct.unpack_from("<Ii", self._data, pos + step * i)
                if self._str(name_off) == name:
                    return val
        raise BtfError(f"enum value {name} is not in this kernel's BTF")

    def tracepoint_args(self, event: str) -> int:
        """How many arguments raw tracepoint `event` passes (its btf_trace_<event> prototype,
        less the leading data pointer)."""
        tid = self._by_name.get((_TYPEDEF, f"btf_trace_{event}"))
        if tid is None:
            raise BtfError(f"tracepoint {event} is not in this kernel's BTF")
        kind, _, target, _, _ = self._header(tid)
        kind, _, target, _, _ = self._header(target)  # typedef -> pointer -> prototype
        kind, vlen, _, _, _ = self._header(target)
        if kind != _FUNC_PROTO:
            raise BtfError(f"btf_trace_{event} is not a function pointer")
        return vlen - 1

    def has_function(self, name: str) -> bool:
        return (_FUNC, name) in self._by_name


class CachedBtf(Btf):
    """The running kernel's Btf, its answers remembered on disk under the blob's hash (and this
    module's): a second start reads and hashes the blob but parses nothing. Answers are cached
    one query at a time, so new questions (changed probes) are simply misses. `save()` writes."""

    def __init__(self, path: Path = VMLINUX) -> None:  # Btf.__init__ runs on the first miss
        try:
            blob = path.read_bytes()
        except OSError as e:
            raise BtfError(f"cannot read kernel BTF at {path}: {e.strerror}") from e
        self._path = path
        self._name = f"btf-{cache.key(blob, Path(__file__).read_bytes())}.json"
        self._memo: dict[str, list] = cache.load(self._name) or {}
        self._dirty = False
        self._parsed = False

    @classmethod
    def load(cls, path: Path = VMLINUX) -> CachedBtf:
        return cls(path)

    def _ask(self, query: str, answer):
        if query not in self._memo:
            if not self._parsed:
                Btf.__init__(self, self._path.read_bytes())
                self._parsed = True
            try:
                self._memo[query] = [True, answer()]
            except BtfError as e:
                self._memo[query] = [False, str(e)]
            self._dirty = True
        ok, value = self._memo[query]
        if not ok:
            raise BtfError(value)
        return value

    def save(self) -> None:
        if self._dirty:
            cache.store(self._name, self._memo)
            self._dirty = False

    def field(self, struct_name: str, path: str) -> Field:
        return Field(*self._ask(f"field {struct_name} {path}",
                                lambda: astuple(Btf.field(self, struct_name, path))))

    def enum_value(self, name: str) -> int:
        return self._ask(f"enum {name}", lambda: Btf.enum_value(self, name))

    def has_function(self, name: str) -> bool:
        return self._ask(f"function {name}", lambda: Btf.has_function(self, name))

    def tracepoint_args(self, event: str) -> int:
        return self._ask(f"tracepoint {event}", lambda: Btf.tracepoint_args(self, event))
