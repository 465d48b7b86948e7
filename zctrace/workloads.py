"""Which workload a process belongs to: its cgroup v2 id (what the probes record with every row,
bpf_get_current_cgroup_id()) resolved to the cgroup's path, and the path parsed for the
container and the Kubernetes pod the well-known runtimes lay out (docs/attribution.md):

- containerd `cri-containerd-<id>.scope`, CRI-O `crio-<id>.scope`, Docker `docker-<id>.scope` or
  `/docker/<id>`, Podman `libpod-<id>.scope`; the cgroupfs driver's bare `<64 hex>` under a pod;
- pods: `kubepods-<qos>-pod<uid_with_underscores>.slice` and `kubepods-pod<uid>.slice`
  (Guaranteed) with the systemd driver, `/kubepods/<qos>/pod<uid>/` and `/kubepods/pod<uid>/`
  with the cgroupfs driver;
- systemd services `<name>.service`.

A cgroup's id is the inode number of its directory in the v2 hierarchy. Ids are never reused
(64-bit, increasing), so an id resolved once keeps its answer, even after the cgroup is gone: an
exited container keeps its labels. The resolver walks the hierarchy when it meets an id it does
not know, at most once per RESCAN_SECONDS, and keeps at most MAX_CACHED answers.
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import cgroups
from .errors import ZctraceError

MAX_CACHED = 16384
RESCAN_SECONDS = 1.0

_HEX = r"[0-9a-f]{64}"
_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
# (runtime, pattern of one path element holding the container id)
_CONTAINER = (
    ("containerd", re.compile(rf"cri-containerd-({_HEX})\.scope")),
    ("cri-o", re.compile(rf"crio-({_HEX})\.scope")),
    ("docker", re.compile(rf"docker-({_HEX})\.scope")),
    ("podman", re.compile(rf"libpod-({_HEX})\.scope")),
)
_POD_SYSTEMD = re.compile(rf"kubepods(?:-(?:besteffort|burstable))?-pod({_UID})\.slice")
_POD_CGROUPFS = re.compile(rf"pod({_UID})")
_BARE_ID = re.compile(_HEX)


@dataclass(frozen=True)
class Workload:
    """What a cgroup path says about the processes in it ('' where it says nothing)."""

    cgroup: str  # the v2 path from the hierarchy's root, e.g. /kubepods.slice/...; '' if unknown
    container_id: str = ""  # the runtime's container id (64 hex digits)
    runtime: str = ""  # containerd, cri-o, docker, podman; '' for the cgroupfs driver's bare ids
    pod_uid: str = ""  # the Kubernetes pod UID, with dashes (kube_pod_info's `uid`)
    service: str = ""  # the innermost systemd service, e.g. nginx.service

    @property
    def name(self) -> str:
        """A short name for tables: the container id's first 12 digits, else the service, else
        the cgroup's last element ('-' when unknown)."""
        if self.container_id:
            return self.container_id[:12]
        if self.service:
            return self.service
        return self.cgroup.rsplit("/", 1)[-1] or ("/" if self.cgroup else "-")

    def to_json(self) -> dict[str, str]:
        return {"cgroup": self.cgroup, "container_id": self.container_id, "runtime": self.runtime,
                "pod_uid": self.pod_uid, "service": self.service}


UNKNOWN = Workload("")


def parse(path: str) -> Workload:
    """The workload of cgroup v2 path `path` (relative to the hierarchy's root)."""
    parts = [p for p in path.split("/") if p]
    container = runtime = pod = service = ""
    for i in range(len(parts) - 1, -1, -1):  # innermost first: a container's own sub-cgroups
        part = parts[i]
        if not container:
            for name, pattern in _CONTAINER:
                m = pattern.fullmatch(part)
                if m:
                    container, runtime = m.group(1), name
                    break
            else:
                parent = parts[i - 1] if i else ""
                if _BARE_ID.fullmatch(part) and (parent == "docker" or _POD_CGROUPFS.fullmatch(parent)):
                    container, runtime = part, "docker" if parent == "docker" else ""
        if not pod:
            m = _POD_SYSTEMD.fullmatch(part)
            if m is None and "kubepods" in parts[:i]:
                m = _POD_CGROUPFS.fullmatch(part)
            if m:
                pod = m.group(1).replace("_", "-")
        if not service and part.endswith(".service"):
            service = part
    return Workload("/" + "/".join(parts), container, runtime, pod, service)


def v2_root(given: str | None = None) -> Path:
    """The cgroup v2 hierarchy to resolve ids in: `given` (--cgroup-mount, e.g. the host's
    hierarchy mounted into a container), else where /proc/self/mountinfo says it is mounted.
    Bad input (not a readable directory) is a ZctraceError."""
    root = Path(given) if given else cgroups.mount()
    try:
        os.scandir(root).close()
    except OSError as e:
        raise ZctraceError(f"cannot read the cgroup v2 hierarchy at {root}: {e.strerror}") from None
    if given and not (root / "cgroup.controllers").exists():
        raise ZctraceError(f"{root} is not a cgroup v2 hierarchy (no cgroup.controllers)")
    return root


@dataclass
class Resolver:
    """cgroup id -> Workload, cached (see the module doc)."""

    root: Path
    clock: Callable[[], float] = time.monotonic
    max_cached: int = MAX_CACHED
    rescan_every: float = RESCAN_SECONDS

    def __post_init__(self) -> None:
        self._known: OrderedDict[int, Workload] = OrderedDict()
        self._scanned_at = float("-inf")
        self.scans = 0  # walks of the hierarchy so far
        self.unresolved = 0  # ids asked for that no walk found (the cgroup was gone already)

    def __call__(self, cgroup_id: int) -> Workload:
        found = self._known.get(cgroup_id)
        if found is not None:
            self._known.move_to_end(cgroup_id)
            return found
        if self.clock() - self._scanned_at >= self.rescan_every:
            self._scan()
            found = self._known.get(cgroup_id)
            if found is not None:
                return found
            self.unresolved += 1
        return UNKNOWN

    def _scan(self) -> None:
        """Walk the hierarchy: every cgroup's id and path (new ones first into the cache)."""
        self._scanned_at = self.clock()
        self.scans += 1
        base = len(str(self.root).rstrip("/"))
        for top, dirs, _ in os.walk(self.root):
            try:
                ino = os.stat(top).st_ino
            except OSError:  # removed while walking
                dirs.clear()
                continue
            if ino not in self._known:
                self._known[ino] = parse(top[base:] or "/")
        while len(self._known) > self.max_cached:
            self._known.popitem(last=False)
