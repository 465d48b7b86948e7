"""What the advice reads of the host and of a process: net.core.optmem_max (this network
namespace's), a process's RLIMIT_MEMLOCK (/proc/PID/limits) and CAP_IPC_LOCK (/proc/PID/status)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .crossover import kernel_release


@dataclass
class HostFacts:
    """What the advice reads of the host, replaceable in tests."""

    kernel: str = field(default_factory=kernel_release)
    optmem_max: int | None = None
    memlock: Callable[[int], tuple[int | None, int | None] | None] = lambda pid: read_memlock(pid)
    ipc_lock: Callable[[int], bool | None] = lambda pid: has_ipc_lock(pid)

    @classmethod
    def read(cls) -> HostFacts:
        return cls(optmem_max=read_optmem_max())


def read_optmem_max() -> int | None:
    try:
        with open("/proc/sys/net/core/optmem_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def read_memlock(pid: int) -> tuple[int | None, int | None] | None:
    """(soft, hard) RLIMIT_MEMLOCK of `pid` in bytes (None: unlimited), from /proc/PID/limits;
    None if the process is gone."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max locked memory"):
                    soft, hard = line[len("Max locked memory"):].split()[:2]
                    value = lambda v: None if v == "unlimited" else int(v)  # noqa: E731
                    return value(soft), value(hard)
    except (OSError, ValueError):
        pass
    return None


def has_ipc_lock(pid: int) -> bool | None:
    """Whether `pid` has CAP_IPC_LOCK in its effective set (then nothing it pins counts against
    RLIMIT_MEMLOCK); None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 14 & 1)
    except (OSError, ValueError):
        pass
    return None
