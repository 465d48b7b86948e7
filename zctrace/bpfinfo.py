"""What the kernel says about our own BPF objects: program run statistics and map fill.

Through libbcc's libbpf (the bpf syscall): BPF_OBJ_GET_INFO_BY_FD for programs and maps,
BPF_MAP_LOOKUP_BATCH to count a hash map's entries, BPF_ENABLE_STATS to switch run-time
statistics on for as long as a file descriptor stays open.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
from dataclasses import dataclass
from functools import cache

STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
_BPF_STATS_RUN_TIME = 0
_HASH = 1
_STACK_TRACE = 7
_BATCH = 1024  # entries per BPF_MAP_LOOKUP_BATCH call


class _ProgInfo(ct.Structure):
    """struct bpf_prog_info up to recursion_misses (the kernel fills what we ask for)."""

    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("tag", ct.c_uint8 * 8),
                ("jited_prog_len", ct.c_uint32), ("xlated_prog_len", ct.c_uint32),
                ("jited_prog_insns", ct.c_uint64), ("xlated_prog_insns", ct.c_uint64),
                ("load_time", ct.c_uint64), ("created_by_uid", ct.c_uint32),
                ("nr_map_ids", ct.c_uint32), ("map_ids", ct.c_uint64), ("name", ct.c_char * 16),
                ("ifindex", ct.c_uint32), ("gpl_compatible", ct.c_uint32),
                ("netns_dev", ct.c_uint64), ("netns_ino", ct.c_uint64),
                ("nr_jited_ksyms", ct.c_uint32), ("nr_jited_func_lens", ct.c_uint32),
                ("jited_ksyms", ct.c_uint64), ("jited_func_lens", ct.c_uint64),
                ("btf_id", ct.c_uint32), ("func_info_rec_size", ct.c_uint32),
                ("func_info", ct.c_uint64), ("nr_func_info", ct.c_uint32),
                ("nr_line_info", ct.c_uint32), ("line_info", ct.c_uint64),
                ("jited_line_info", ct.c_uint64), ("nr_jited_line_info", ct.c_uint32),
                ("line_info_rec_size", ct.c_uint32), ("jited_line_info_rec_size", ct.c_uint32),
                ("nr_prog_tags", ct.c_uint32), ("prog_tags", ct.c_uint64),
                ("run_time_ns", ct.c_uint64), ("run_cnt", ct.c_uint64),
                ("recursion_misses", ct.c_uint64)]


class _MapInfo(ct.Structure):
    """struct bpf_map_info, the leading fields."""

    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("key_size", ct.c_uint32),
                ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32),
                ("map_flags", ct.c_uint32), ("name", ct.c_char * 16)]


@cache
def _lib() -> ct.CDLL:
    """Our own handle on libbcc (bcc's handle has its own argtypes; leave them alone)."""
    lib = ct.CDLL("libbcc.so.0", use_errno=True)
    lib.bpf_obj_get_info_by_fd.argtypes = [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32)]
    lib.bpf_map_lookup_batch.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_void_p,
                                         ct.c_void_p, ct.POINTER(ct.c_uint32), ct.c_void_p]
    lib.bpf_map_get_next_key.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
    lib.bpf_enable_stats.argtypes = [ct.c_int]
    lib.bpf_num_tables.argtypes = [ct.c_void_p]
    lib.bpf_num_tables.restype = ct.c_size_t
    lib.bpf_table_name.argtypes = [ct.c_void_p, ct.c_size_t]
    lib.bpf_table_name.restype = ct.c_char_p
    lib.bpf_table_fd_id.argtypes = [ct.c_void_p, ct.c_size_t]
    return lib


def _info(fd: int, info: ct.Structure) -> None:
    size = ct.c_uint32(ct.sizeof(info))
    if _lib().bpf_obj_get_info_by_fd(fd, ct.byref(info), ct.byref(size)) != 0:
        err = ct.get_errno()
        raise OSError(err, f"BPF_OBJ_GET_INFO_BY_FD: {os.strerror(err)}")


@dataclass(frozen=True)
class ProgStats:
    """Cumulative run statistics of one loaded program (run_* count only while stats are on)."""

    run_time_ns: int
    run_count: int
    recursion_misses: int


def program_event(fn_name: bytes) -> str:
    """The event a bcc program function is attached to, as reports name it: `kprobe:FN`,
    `kfunc:FN`, `raw_tracepoint:EVENT`, or `CATEGORY:EVENT` for a tracepoint; a program no event
    runs (a tail call's target, zc_chain_walk_raw) by its own name."""
    kind, sep, event = fn_name.decode().partition("__")
    if not sep:
        return kind
    return event.replace("__", ":") if kind == "tracepoint" else f"{kind}:{event}"


def prog_stats(fd: int) -> ProgStats:
    info = _ProgInfo()
    _info(fd, info)
    return ProgStats(info.run_time_ns, info.run_cnt, info.recursion_misses)


def stats_sysctl() -> bool:
    """kernel.bpf_stats_enabled (it does not show stats switched on by BPF_ENABLE_STATS)."""
    try:
        with open(STATS_SYSCTL) as f:
            return f.read().strip() != "0"
    except OSError:
        return False


def enable_stats() -> int:
    """Switch program run-time statistics on until the returned fd is closed (CAP_SYS_ADMIN)."""
    fd = _lib().bpf_enable_stats(_BPF_STATS_RUN_TIME)
    if fd < 0:
        err = ct.get_errno() or -fd
        raise OSError(err, f"BPF_ENABLE_STATS: {os.strerror(err)}")
    return fd


@dataclass
class MapFill:
    """Entries in use of one map of a bcc module, counted at each call of `entries()`."""

    name: str
    fd: int
    type: int
    key_size: int
    value_size: int
    max_entries: int

    def entries(self) -> int:
        return self._count_batch() if self.type == _HASH else self._count_keys()

    def _count_batch(self) -> int:
        lib = _lib()
        n = min(_BATCH, self.max_entries)
        keys = ct.create_string_buffer(self.key_size * n)
        values = ct.create_string_buffer(self.value_size * n)
        token = ct.c_uint64(0)
        total, first = 0, True
        while True:
            count = ct.c_uint32(n)
            rc = lib.bpf_map_lookup_batch(self.fd, None if first else ct.byref(token), ct.byref(token),
                                          keys, values, ct.byref(count), None)
            err = ct.get_errno()
            total += count.value
            first = False
            if rc != 0:
                if err == errno.ENOENT:
                    return total
                raise OSError(err, f"BPF_MAP_LOOKUP_BATCH on {self.name}: {os.strerror(err)}")

    def _count_keys(self) -> int:
        lib = _lib()
        key, nxt = ct.create_string_buffer(self.key_size), ct.create_string_buffer(self.key_size)
        total, prev = 0, None
        while lib.bpf_map_get_next_key(self.fd, prev, nxt) == 0:
            total += 1
            ct.memmove(key, nxt, self.key_size)
            prev = key
        return total


def map_names(bpf) -> list[str]:
    """Every map of a loaded bcc module, by name."""
    lib = _lib()
    return [lib.bpf_table_name(bpf.module, i).decode() for i in range(lib.bpf_num_tables(bpf.module))]


def module_maps(bpf) -> list[MapFill]:
    """The maps of a loaded bcc module that refuse new entries when full (hash and stack trace
    maps; LRU maps evict by design, arrays are always full), by name."""
    lib = _lib()
    maps = []
    for i in range(lib.bpf_num_tables(bpf.module)):
        fd = lib.bpf_table_fd_id(bpf.module, i)
        if fd < 0:
            continue
        info = _MapInfo()
        _info(fd, info)
        if info.type in (_HASH, _STACK_TRACE):
            maps.append(MapFill(lib.bpf_table_name(bpf.module, i).decode(), fd, info.type, info.key_size,
                                info.value_size, info.max_entries))
    return sorted(maps, key=lambda m: m.name)


def recursion_misses(funcs: dict, read=prog_stats) -> dict:
    """Each loaded program's recursion_misses by its function name (bcc's `funcs`; `read`: how to
    ask, prog_stats or a fake's), those that cannot be asked left out."""
    out = {}
    for name, fn in funcs.items():
        try:
            out[name] = int(read(fn.fd).recursion_misses)
        except OSError:
            continue
    return out
