"""The BPF maps the Python side reads or writes, declared once: name, what one entry is, how an
entry names its process, whether a benchmark cell starts it empty. Probes (Session.clear),
snapshot (the reads), lifecycle (the reaper's deletes) and the exporter take the names from
here, never from literals. The maps themselves are declared in probes/*.bpf.c and the
probes/*.bpf.h headers (maps.bpf.h: the shared ones); the rows' C types in probes/zctrace.h.

Data flows one way, probes -> maps -> snapshot -> model -> report/exporter, with two writes back
into the maps, both named here: Session.clear (between benchmark cells) and the lifecycle
Reaper (entries of processes that exited, `owner`), and one from Session.add_pid (`zc_targets`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class MapSpec:
    name: str
    row: str  # what one entry is
    owner: Callable[[object, object], int] | None = None  # (key, value) -> the pid it belongs to
    cleared: bool = False  # emptied by Session.clear (every entry deleted; an array's zeroed)

    @property
    def key(self) -> bytes:
        """The name as bcc's module takes it."""
        return self.name.encode()


STATS = MapSpec("zc_stats", "counters of one (process, api, proto) (struct zc_stats)",
                owner=lambda k, v: k.tgid, cleared=True)
RINGS = MapSpec("zc_rings", "an io_uring instance and its counters per proto (struct zc_ring)",
                owner=lambda k, v: v.tgid, cleared=True)
REASONS = MapSpec("zc_reasons", "copied requests of one (process, api, proto, reason, stack)",
                  owner=lambda k, v: k.tgid, cleared=True)
SOCKS = MapSpec("zc_socks", "one MSG_ZEROCOPY socket (struct zc_sock)", owner=lambda k, v: v.tgid, cleared=True)
RX = MapSpec("zc_rx", "TCP_ZEROCOPY_RECEIVE results of one process", owner=lambda k, v: k.value, cleared=True)
TARGETS = MapSpec("zc_targets", "a process traced when the session filters (-p, -- CMD)",
                  owner=lambda k, v: k.value)
HISTS = MapSpec("zc_hists", "log2 histogram slots [(hist * apis + api) * slots + slot]", cleared=True)
HIST_SUMS = MapSpec("zc_hist_sums", "each histogram's sum of values [hist * apis + api]", cleared=True)
ERRORS = MapSpec("zc_errors", "what the probes could not record, per cause (struct zc_lost)", cleared=True)
KEVENTS = MapSpec("zc_kevents", "kernel zerocopy events and their bytes (struct zc_kev)", cleared=True)
COPY_SITES = MapSpec("zc_copy_sites", "late copies per kernel stack (fentry/kprobe)", cleared=True)
COPY_STACKS = MapSpec("zc_copy_stacks", "kernel stacks of late copies (a stack trace map)", cleared=True)
LATE_COPIES = MapSpec("zc_late_copies", "a notification's first late copy, until its completion", cleared=True)
REDIRECTED = MapSpec("zc_redirected", "skbs a tc BPF program redirected", cleared=True)
URING_FAILED = MapSpec("zc_uring_failed", "io_uring sends that failed, until their notification", cleared=True)

REGISTRY = (STATS, RINGS, REASONS, SOCKS, RX, TARGETS, HISTS, HIST_SUMS, ERRORS, KEVENTS, COPY_SITES,
            COPY_STACKS, LATE_COPIES, REDIRECTED, URING_FAILED)
PER_PROCESS = tuple(m for m in REGISTRY if m.owner is not None)  # what the reaper sweeps
