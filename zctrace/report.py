"""Human-readable tables and JSON files for reports (model -> text)."""

from __future__ import annotations

import json
import sys
from typing import Iterable, Sequence

from .model import Counts, Report


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([fmt(headers)] + [fmt(r) for r in rows])


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _na(c: Counts) -> str:
    if not c.not_attempted:
        return "0"
    return f"{c.not_attempted} ({', '.join(sorted(c.not_attempted_reasons))})"


_HEAD = ("PID", "COMM", "API", "PROTO", "REQUESTS", "BYTES", "ZEROCOPIED", "COPIED", "UNKNOWN",
         "NOT_ATTEMPTED", "VERDICT")


def _row(pid, comm, api, proto, c: Counts) -> list[object]:
    return [pid, comm, api, proto, c.zc_requests, human_bytes(c.bytes), c.zerocopied, c.copied,
            c.unknown, _na(c), c.verdict]


def render(report: Report) -> str:
    rows = [_row(p.pid, p.comm, f.api, f.proto, f.counts) for p in report.processes for f in p.flows]
    rows.append(_row("TOTAL", "", "", "", report.totals))
    out = [table(_HEAD, rows)]
    if report.totals.unknown:
        hint = ("notifications the application did not read, or io_uring without "
                "IORING_SEND_ZC_REPORT_USAGE; the fentry/kprobe tiers see every completion"
                if report.tier == "tracepoint" else "completions still in flight")
        out.append(f"unknown: {hint}")
    if not report.processes:
        out.append("no zerocopy sends seen")
    return "\n".join(out)


def write_json(obj: dict, path: str) -> None:
    """Write `obj` to `path`, or to stdout for '-'."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
    else:
        with open(path, "w") as f:
            f.write(text)
