"""A small on-disk cache for what depends only on the kernel build, this boot and zctrace's own
sources (BTF answers, probe tier verdicts): $XDG_CACHE_HOME/zctrace, else ~/.cache/zctrace.
Callers put those inputs in the key; a cache that cannot be read or written is just a miss."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zctrace"


def key(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:24]


def boot_id() -> bytes:
    """Differs on every boot (kernel, its policy and its symbol addresses can change)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_bytes()
    except OSError:
        return b""


def load(name: str) -> dict | None:
    try:
        return json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return None


def store(name: str, data: dict) -> None:
    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
    except OSError:
        pass


def forget(name: str) -> None:
    try:
        (cache_dir() / name).unlink()
    except OSError:
        pass
