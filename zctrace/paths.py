"""Where the files zctrace reads at run time are: package data of an installed wheel
(zctrace/_probes, zctrace/_data: setup.py puts them there), else the source checkout's folders."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def _find(packaged: str, checkout: str) -> Path:
    path = Path(str(files(__package__).joinpath(packaged)))
    return path if path.exists() else _CHECKOUT / checkout


PROBE_DIR = _find("_probes", "probes")


def reference_source() -> Path:
    """The C reference sender's source (scripts/zc_ref_sender.c in a checkout)."""
    return _find("_data/zc_ref_sender.c", "scripts/zc_ref_sender.c")
