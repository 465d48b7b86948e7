"""The C reference sender (zctrace/workload/zc_ref_sender.c): the send engine's loops alone in a process of
their own, built with gcc once per source version and run beside a suite cell (--reference)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ZctraceError
from ..paths import reference_source
from ..workload.senders import WorkloadSpec
from ..workload.targets import Endpoint

_WORKLOAD = Path(__file__).resolve().parent.parent / "workload"
REFERENCE_SOURCES = (reference_source(), _WORKLOAD / "engine.c", _WORKLOAD / "engine.h")


@dataclass
class Reference:
    """What the C reference sender did in the same cell."""

    requests: int
    seconds: float
    cpu_seconds: float
    zerocopied: int
    copied: int

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0



def build_reference() -> Path:
    """Compile zctrace/workload/zc_ref_sender.c with the engine (once per source version) and
    return the binary: the engine's loops alone in a process of their own."""
    missing = [p.name for p in REFERENCE_SOURCES if not p.exists()]
    if missing:
        raise ZctraceError(f"--reference needs {', '.join(missing)} from a source checkout")
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise ZctraceError("--reference needs a C compiler (apt-get install gcc)")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in REFERENCE_SOURCES)).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zctrace"
    binary = cache / f"zc_ref_sender-{digest}"
    if not binary.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_suffix(f".{os.getpid()}")
        sender, engine, header = REFERENCE_SOURCES
        r = subprocess.run([gcc, "-O2", "-I", str(header.parent), "-o", str(tmp), str(sender),
                            str(engine)], capture_output=True, text=True)
        if r.returncode:
            raise ZctraceError(f"the C reference does not compile: {r.stderr.strip().splitlines()[-1]}")
        tmp.replace(binary)
    return binary


def run_reference(binary: Path, endpoint: Endpoint, spec: WorkloadSpec) -> Reference:
    """Run the C sender with `spec`'s loop on `endpoint` (already set up) and read its result."""
    argv = [str(binary), "-a", endpoint.addr[0], "-p", str(endpoint.addr[1]), "-P", spec.proto,
            "-s", str(spec.size), "-m", spec.mode, "-N", str(spec.notify_batch),
            "-b", str(spec.batch), "-f", str(spec.inflight), "-w", spec.notif,
            "-r", str(int(spec.report_usage))]
    argv += ["-n", str(spec.count)] if spec.count else ["-t", str(spec.duration)]
    if endpoint.ifname:
        argv += ["-i", endpoint.ifname]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60 + (spec.duration or 0))
    if r.returncode:
        raise ZctraceError(f"the C reference failed: {r.stderr.strip() or r.returncode}")
    d = json.loads(r.stdout)
    return Reference(d["requests"], d["seconds"], d["cpu_seconds"], d["zerocopied"], d["copied"])

