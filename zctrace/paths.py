"""Where the files zctrace reads at run time are: package data of an installed wheel
(zctrace/_probes: setup.py puts them there), else the source checkout's probes/ folder; the C
reference sender is in the package itself (zctrace/workload/)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def _find(packaged: str, checkout: str) -> Path:
    path = Path(str(files(__package__).joinpath(packaged)))
    return path if path.exists() else _CHECKOUT / checkout


PROBE_DIR = _find("_probes", "probes")


def reference_source() -> Path:
    """The C reference sender's source, beside the send engine it shares its loops with."""
    return Path(__file__).resolve().parent / "workload" / "zc_ref_sender.c"
