"""Constants of probes/zctrace.h, the header the BPF programs and this package share."""

from __future__ import annotations

import re
from functools import cache

from .paths import PROBE_DIR

HEADER = PROBE_DIR / "zctrace.h"

_ENUM = re.compile(r"enum\s+(\w+)\s*\{(.*?)\};", re.S)
_ITEM = re.compile(r"^\s*(ZC_\w+)\s*=\s*(\d+)\s*,", re.M)


@cache
def enums() -> dict[str, dict[str, int]]:
    """{enum name: {enumerator: value}} of every enum in the shared header."""
    text = HEADER.read_text()
    return {name: {k: int(v) for k, v in _ITEM.findall(body)} for name, body in _ENUM.findall(text)}


def _names(enum: str, prefix: str) -> tuple[str, ...]:
    """Enumerator names of `enum` in value order, lower-cased without `prefix`, NR_* dropped."""
    items = sorted(enums()[enum].items(), key=lambda kv: kv[1])
    return tuple(k[len(prefix):].lower() for k, _ in items if not k.startswith("ZC_NR_"))


COUNTERS = _names("zc_counter", "ZC_")
KEVENTS = _names("zc_kevent", "ZC_KEV_")
APIS = _names("zc_api", "ZC_API_")
PROTOS = _names("zc_proto", "ZC_PROTO_")
ERRORS = _names("zc_error", "ZC_ERR_")
HISTS = _names("zc_hist", "ZC_HIST_")
REASON_CODES = _names("zc_reason", "ZC_R_")  # indexed by the kernel's reason code
HIST_SLOTS = int(re.search(r"#define ZC_HIST_SLOTS (\d+)", HEADER.read_text()).group(1))
STACK_DEPTH = int(re.search(r"#define ZC_STACK_DEPTH (\d+)", HEADER.read_text()).group(1))
