"""cgroup v2 filters: a path given by the user, resolved to the ids BPF reports.

bpf_get_current_cgroup_id() is the inode number of the process's cgroup v2 directory. A filter
on a cgroup takes its whole subtree (`system.slice` holds `system.slice/x.service`), read again
at every use, since cgroups come and go. The v2 hierarchy is found in /proc/self/mountinfo, so
hybrid hosts (v2 at /sys/fs/cgroup/unified) work too.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ZctraceError


def mount() -> Path:
    """Where the cgroup v2 hierarchy is mounted."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                if fields[sep + 1] == "cgroup2":
                    return Path(fields[4])
    except (OSError, ValueError, IndexError):
        pass
    raise ZctraceError("no cgroup v2 hierarchy is mounted: --cgroup needs one")


def resolve(path: str) -> Path:
    """The directory of cgroup `path`: absolute under the v2 mount, or relative to it."""
    root = mount()
    full = Path(path) if Path(path).is_relative_to(root) else root / path.lstrip("/")
    if not full.is_dir():
        raise ZctraceError(f"no cgroup {path!r} (looked for {full})")
    return full


def subtree_ids(directory: Path) -> frozenset[int]:
    """The ids of the cgroup at `directory` and of every cgroup below it."""
    ids = set()
    for top, _, _ in os.walk(directory):
        try:
            ids.add(os.stat(top).st_ino)
        except OSError:  # removed while walking
            continue
    return frozenset(ids)
