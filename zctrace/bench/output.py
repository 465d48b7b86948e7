"""The suites' files: one JSON record per cell (bench's contract plus the suite's columns), CSV
rows and the seed-tables plot."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from ..errors import ZctraceError
from ..workload.senders import WorkloadSpec
from .suites import SEED_COLUMNS, SuiteCell
from .tables import speedups


CSV_FIELDS = ("target", "proto", "size", "column", "engine", "mode", "notify_batch", "inflight", "notif",
              "batch", "traced_run", "cost_pass", "round", "requests", "seconds", "cpu_seconds", "requests_per_s",
              "bytes_per_s", "cpu_us_per_request", "speedup_vs_copy", "verdict", "kernel_zerocopied",
              "kernel_copied", "kernel_unknown", "traced_zerocopied", "traced_copied", "traced_unknown",
              "lost", "match", "c_requests_per_s", "c_cpu_us_per_request", "ref_ratio",
              "ref_cpu", "bpf_ns_per_request")


def _record(sc: SuiteCell, spec: WorkloadSpec, up: dict[int, float]) -> dict:
    """The JSON result of one cell: bench's contract plus the suite's columns."""
    c, ref = sc.cell, sc.reference
    doc = c.to_json()
    doc.update({"column": sc.column.key, "notify_batch": spec.notify_batch, "inflight": spec.inflight,
                "notif": spec.notif, "batch": spec.batch, "traced_run": sc.traced_run, "cost_pass": sc.cost_pass,
                "round": sc.round, "cpu_us_per_request": round(c.cpu_per_request * 1e6, 3),
                "speedup_vs_copy": round(up[id(sc)], 4) if id(sc) in up else None,
                "verdict": sc.verdict, "reference": None, "ref_ratio": None,
                "ref_cpu": None, "bpf": None, "bpf_ns_per_request": None})
    if sc.bpf is not None:
        doc["bpf"] = {k: {"run_time_ns": ns, "runs": n} for k, (ns, n) in sc.bpf.items()}
        doc["bpf_ns_per_request"] = (round(sum(ns for ns, _ in sc.bpf.values()) / c.requests, 1)
                                     if c.requests else None)
    if ref is not None:
        doc["reference"] = {"requests": ref.requests, "seconds": round(ref.seconds, 6),
                            "cpu_seconds": round(ref.cpu_seconds, 6),
                            "requests_per_s": round(ref.requests_per_s, 1),
                            "kernel": {"zerocopied": ref.zerocopied, "copied": ref.copied}}
        doc["ref_ratio"] = round(sc.ref_ratio, 4) if sc.ref_ratio else None
        doc["ref_cpu"] = round(sc.ref_cpu, 4) if sc.ref_cpu else None
    return doc


def records(cells: list[SuiteCell], args: argparse.Namespace) -> list[dict]:
    up = speedups(cells)
    return [_record(sc, sc.column.spec(sc.cell.target, sc.cell.proto, sc.cell.size, args), up)
            for sc in cells]


def _csv_row(doc: dict) -> dict:
    ref = doc["reference"] or {}
    traced = doc["traced"] or {}
    flat = {k: doc.get(k) for k in CSV_FIELDS}
    flat.update({f"kernel_{k}": doc["kernel"][k] for k in ("zerocopied", "copied", "unknown")})
    flat.update({f"traced_{k}": traced.get(k) for k in ("zerocopied", "copied", "unknown")})
    flat["lost"] = sum((doc["lost"] or {}).values()) if doc["lost"] is not None else None
    flat["c_requests_per_s"] = ref.get("requests_per_s")
    flat["c_cpu_us_per_request"] = (round(ref["cpu_seconds"] / ref["requests"] * 1e6, 3)
                                    if ref.get("requests") else None)
    return flat


def write_csv(docs: list[dict], path: str) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for doc in docs:
        w.writerow(_csv_row(doc))
    if path == "-":
        sys.stdout.write(buf.getvalue())
    else:
        Path(path).write_text(buf.getvalue())


def pyplot():
    """matplotlib.pyplot on the Agg backend (a one-line error without matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        raise ZctraceError("--plot needs matplotlib: pip install 'zctrace[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_plot(cells: list[SuiteCell], path: str, title: str) -> None:
    """req/s against IO size, one line per column and one panel per target and protocol;
    a cross marks a cell whose sends were not really zero-copy."""
    panels: dict[tuple[str, str], list] = {}
    for where in dict.fromkeys(sc.where[:2] for sc in cells):
        for i, col in enumerate(SEED_COLUMNS):
            scs = [sc for sc in cells if sc.column is col and sc.where[:2] == where]
            if scs:
                panels.setdefault(where, []).append((col.title, i, [(sc.cell.size, sc.cell.requests_per_s,
                                                                     not sc.really_zerocopy) for sc in scs]))
    _draw(panels, path, title, "requests/s", log_y=False)


def write_crossover_plot(medians: dict, path: str, title: str) -> None:
    """The crossover suite: sender CPU per byte (ns/B, medians) against IO size, one line per
    column, one panel per target and protocol; a cross marks a cell the kernel copied."""
    panels: dict[tuple[str, str], list] = {}
    for where, by_size in medians.items():
        for i, col in enumerate(SEED_COLUMNS):
            points = [(s, row[col.key].cpu_per_request / s * 1e9, not row[col.key].really_zerocopy)
                      for s, row in by_size.items() if col.key in row]
            if points:
                panels.setdefault(where, []).append((col.title, i, points))
    _draw(panels, path, title, "sender CPU per byte (ns/B)", log_y=True)


def _draw(panels: dict[tuple[str, str], list], path: str, title: str, ylabel: str, log_y: bool) -> None:
    """One panel per (target, proto): lines of (size, value, copied) points per column."""
    plt = pyplot()
    ncols = min(2, len(panels)) or 1
    nrows = max(1, -(-len(panels) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(7 * ncols, 5 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    sizes = sorted({x for lines in panels.values() for _, _, pts in lines for x, _, _ in pts})
    for ax, ((target, proto), lines) in zip(axes.flat, panels.items()):
        for label, i, points in lines:
            xs, ys, bad = zip(*points)
            ax.plot(xs, ys, "-o", color=f"C{i}", label=label, markersize=4)
            crosses = [(x, y) for x, y, b in points if b]
            if crosses:
                ax.plot(*zip(*crosses), "x", color="black", markersize=9)
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(s) for s in sizes], rotation=45)
        ax.set_xlabel("IO size (bytes)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{target} {proto}  (x = not really zero-copy)")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
