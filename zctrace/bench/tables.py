"""The suites' tables: seed-tables (requests/s by size, speedups, the io_uring zerocopy
crossover, the C reference beside the workload) and overhead (traced against untraced medians,
the probes' run time per request, the budget checks)."""

from __future__ import annotations

import argparse
import itertools
import statistics
from dataclasses import dataclass

from .. import report
from .cells import engine_note
from .suites import SEED_COLUMNS, URING_ZC_KEYS, SuiteCell


def speedups(cells: list[SuiteCell]) -> dict[int, float]:
    """id(cell) -> requests/s relative to the copy column of the same target, proto and size."""
    copy = {sc.where: sc.cell.requests_per_s for sc in cells if sc.column.key == "copy"}
    return {id(sc): sc.cell.requests_per_s / copy[sc.where] for sc in cells
            if copy.get(sc.where)}


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.0f}%"


def render_seed(cells: list[SuiteCell], tier: str | None) -> str:
    """The published-style tables (req/s and speedup by size) and the per-cell details."""
    up = speedups(cells)
    columns = [c for c in SEED_COLUMNS if any(sc.column is c for sc in cells)]
    out = [f"zctrace bench --suite seed-tables ({engine_note([sc.cell for sc in cells])}; "
           f"{f'tracer tier: {tier}' if tier else 'untraced'})"]
    for (target, proto), group in itertools.groupby(cells, key=lambda sc: sc.where[:2]):
        group = list(group)
        out.append(f"\n{target} {proto}: requests/s (vs copy); * = sends not really zero-copy")
        rows = []
        for size, row in itertools.groupby(group, key=lambda sc: sc.cell.size):
            by_col = {sc.column.key: sc for sc in row}
            rows.append([size] + [_seed_cell(by_col.get(c.key), up) for c in columns])
        out.append(report.table(["IO size"] + [c.title for c in columns], rows))
        for measure in COMPARE_BY:
            out += zc_comparison(group, measure)
    out.append("\nper cell:")
    head = ["TARGET", "PROTO", "SIZE", "COLUMN", "REQ/S", "MB/S", "CPU/REQ", "VS COPY", "VERDICT"]
    with_ref = any(sc.reference for sc in cells)
    if with_ref:
        head += ["C REF REQ/S", "C REF CPU/REQ", "W/REF REQ/S", "W/REF CPU"]
    rows = []
    for sc in cells:
        c = sc.cell
        row = [c.target, c.proto, c.size, sc.column.key, f"{c.requests_per_s:,.0f}",
               f"{c.bytes_per_s / 1e6:,.1f}", f"{c.cpu_per_request * 1e6:.2f} us",
               _pct(up[id(sc)]) if id(sc) in up else "-",
               sc.verdict + (" (lost events)" if c.lost else "")]
        if with_ref:
            ref = sc.reference
            row += ([f"{ref.requests_per_s:,.0f}", f"{ref.cpu_seconds / ref.requests * 1e6:.2f} us",
                     f"{sc.ref_ratio:.2f}", f"{sc.ref_cpu:.2f}"]
                    if sc.ref_ratio and sc.ref_cpu else ["-"] * 4)
        rows.append(row)
    out.append(report.table(head, rows))
    if with_ref:
        out.append(f"\nThe workload ({engine_note([sc.cell for sc in cells])}) against the C "
                   "reference sender (the engine's loops in a process of their own) in the same "
                   "cells of this run (geometric means over the cells; requests/s: 1 = as fast, "
                   "CPU per request: 1 = no cost of its own):")
        out.append(report.table(["COLUMN", "W/REF REQ/S", "MIN", "MAX", "W/REF CPU/REQ", "MIN", "MAX"],
                                ref_summary(cells)))
    return "\n".join(out)


def crossover(ratios: dict[int, float]) -> int | None:
    """The smallest size from which `ratios` (size -> zerocopy over baseline) stay >= 1."""
    best = None
    for size in sorted(ratios, reverse=True):
        if ratios[size] < 1:
            break
        best = size
    return best


COMPARE_BY = {  # what zc_comparison compares: a per-cell figure where higher is better
    "requests/s": lambda c: c.requests_per_s,
    "requests per CPU second of the sender, steadier when other work shares the CPUs":
        lambda c: 1 / c.cpu_per_request if c.cpu_per_request else 0.0,
}


def zc_comparison(group: list[SuiteCell], measure: str) -> list[str]:
    """Per size, each io_uring zerocopy column against io_uring send (the published comparison)
    and against copy by `measure` (a COMPARE_BY key); ^ marks the crossover (from there on
    zerocopy stays ahead)."""
    by = {(sc.column.key, sc.cell.size): COMPARE_BY[measure](sc.cell) for sc in group}
    sizes = sorted({sc.cell.size for sc in group})
    keys = [k for k in URING_ZC_KEYS if any((k, s) in by for s in sizes)]
    if not keys:
        return []
    ratios = {(k, base): {s: by[k, s] / by[base, s] for s in sizes
                          if by.get((k, s)) and by.get((base, s))}
              for k in keys for base in ("uring", "copy")}
    cross = {kb: crossover(r) for kb, r in ratios.items()}
    head, rows = ["IO size"], []
    for k in keys:
        title = next(c.title for c in SEED_COLUMNS if c.key == k)
        head += [f"{title} vs uring send", f"{title} vs copy"]
    for s in sizes:
        row: list = [s]
        for kb in ((k, base) for k in keys for base in ("uring", "copy")):
            r = ratios[kb].get(s)
            row.append("-" if r is None else _pct(r) + (" ^" if cross[kb] == s else ""))
        rows.append(row)
    ahead = lambda kb: f"from {cross[kb]} B" if cross[kb] else f"never (behind at {sizes[-1]} B)"
    notes = [f"  {next(c.title for c in SEED_COLUMNS if c.key == k)}: ahead of uring send "
             f"{ahead((k, 'uring'))}, of copy {ahead((k, 'copy'))}" for k in keys]
    return [f"\nio_uring zerocopy against io_uring send and copy ({measure}; ^ = crossover, the "
            "smallest size from which zerocopy stays ahead):", report.table(head, rows),
            "crossover:", *notes]


def _seed_cell(sc: SuiteCell | None, up: dict[int, float]) -> str:
    if sc is None:
        return "-"
    text = f"{sc.cell.requests_per_s:,.0f}"
    if sc.column.key != "copy" and id(sc) in up:
        text += f" ({_pct(up[id(sc)])})"
    return text + ("" if sc.really_zerocopy else " *")


def ref_summary(cells: list[SuiteCell]) -> list[list[str]]:
    """Per column: geometric mean, min and max of Python/C requests/s and CPU per request."""
    rows = []
    for col in SEED_COLUMNS:
        mine = [sc for sc in cells if sc.column is col and sc.ref_ratio and sc.ref_cpu]
        if mine:
            row = [col.key]
            for ratios in ([sc.ref_ratio for sc in mine], [sc.ref_cpu for sc in mine]):
                row += [f"{statistics.geometric_mean(ratios):.2f}", f"{min(ratios):.2f}",
                        f"{max(ratios):.2f}"]
            rows.append(row)
    return rows


@dataclass
class Overhead:
    """One overhead cell: medians of the traced and untraced runs."""

    target: str
    proto: str
    size: int
    column: str
    untraced_rps: float
    traced_rps: float
    untraced_cpu: float
    traced_cpu: float
    runs: int
    exact: bool  # every traced run: traced counts == kernel's, nothing lost
    programs: dict[str, tuple[float, float]]  # program -> median (ns, runs) per request, traced

    @property
    def bpf_ns_per_request(self) -> float:
        """The probes' run time per request (sum over programs of the per-program medians)."""
        return sum(ns for ns, _ in self.programs.values())

    @property
    def ratio(self) -> float:
        return self.traced_rps / self.untraced_rps if self.untraced_rps else 0.0

    @property
    def cpu_ratio(self) -> float:
        return self.traced_cpu / self.untraced_cpu if self.untraced_cpu else 0.0

    def to_json(self) -> dict:
        return {"target": self.target, "proto": self.proto, "size": self.size, "column": self.column,
                "untraced_requests_per_s": round(self.untraced_rps, 1),
                "traced_requests_per_s": round(self.traced_rps, 1),
                "ratio": round(self.ratio, 4), "cpu_per_request_ratio": round(self.cpu_ratio, 4),
                "runs": self.runs, "exact": self.exact,
                "bpf_ns_per_request": round(self.bpf_ns_per_request, 1),
                "programs": {k: {"ns_per_request": round(ns, 1), "runs_per_request": round(n, 3)}
                             for k, (ns, n) in self.programs.items()}}


def overheads(cells: list[SuiteCell]) -> list[Overhead]:
    """Traced/untraced medians per (target, proto, size, column)."""
    groups: dict[tuple, list[SuiteCell]] = {}
    for sc in cells:
        groups.setdefault((*sc.where, sc.column.key), []).append(sc)
    out = []
    for (target, proto, size, col), scs in groups.items():
        on = [sc.cell for sc in scs if sc.traced_run and not sc.cost_pass]
        off = [sc.cell for sc in scs if not sc.traced_run]
        if not (on and off):  # a run stopped before this cell's other side
            continue
        med = lambda cs, f: statistics.median(f(c) for c in cs)
        out.append(Overhead(target, proto, size, col,
                            med(off, lambda c: c.requests_per_s), med(on, lambda c: c.requests_per_s),
                            med(off, lambda c: c.cpu_per_request), med(on, lambda c: c.cpu_per_request),
                            len(on), all(c.matches is not False and not c.lost for c in on),
                            _program_medians([sc for sc in scs if sc.cost_pass])))
    return out


def _program_medians(traced: list[SuiteCell]) -> dict[str, tuple[float, float]]:
    """Per program: medians over the traced runs of its ns and runs per request (0 in a run
    where it did not run)."""
    names = sorted({k for sc in traced for k in sc.bpf or {}})
    per = lambda sc, k, i: (sc.bpf or {}).get(k, (0, 0))[i] / sc.cell.requests if sc.cell.requests else 0.0
    return {k: (statistics.median(per(sc, k, 0) for sc in traced),
                statistics.median(per(sc, k, 1) for sc in traced)) for k in names}


def threshold_failures(ohs: list[Overhead], args: argparse.Namespace) -> list[str]:
    """--max-ns-per-request / --min-ratio: one line per cell over budget."""
    bad = []
    for o in ohs:
        cell = f"{o.target} {o.proto} {o.size} B {o.column}"
        if args.max_ns_per_request is not None and o.bpf_ns_per_request > args.max_ns_per_request:
            bad.append(f"{cell}: probes {o.bpf_ns_per_request:.0f} ns per request "
                       f"(> {args.max_ns_per_request:g})")
        if args.min_ratio is not None and o.ratio < args.min_ratio:
            bad.append(f"{cell}: traced/untraced {o.ratio:.3f} (< {args.min_ratio:g})")
    return bad


def render_overhead(ohs: list[Overhead], tier: str, repeat: int, engine: str) -> str:
    head = ["TARGET", "PROTO", "SIZE", "COLUMN", "UNTRACED REQ/S", "TRACED REQ/S", "TRACED/UNTRACED",
            "CPU/REQ RATIO", "BPF NS/REQ", "COUNTS"]
    rows = [[o.target, o.proto, o.size, o.column, f"{o.untraced_rps:,.0f}", f"{o.traced_rps:,.0f}",
             f"{o.ratio:.3f}", f"{o.cpu_ratio:.3f}", f"{o.bpf_ns_per_request:.0f}",
             "exact" if o.exact else "MISMATCH/LOST"] for o in ohs]
    progs = [[o.target, o.proto, o.size, o.column, name, f"{n:.2f}", f"{ns / n:.0f}" if n else "-",
              f"{ns:.0f}"] for o in ohs for name, (ns, n) in o.programs.items() if n >= 0.005]
    engine_name = "compiled C engine" if engine == "c" else "Python engine"
    return (f"zctrace bench --suite overhead (workload: {engine_name}; tracer tier: {tier}; medians "
            f"of {repeat} interleaved rounds with BPF statistics off; BPF time from one more traced pass with "
            f"them on, every process's events)\n"
            + report.table(head, rows) + "\n\nper program (runs of at least 0.005 per request):\n"
            + report.table(["TARGET", "PROTO", "SIZE", "COLUMN", "PROGRAM", "RUNS/REQ", "NS/RUN",
                            "NS/REQ"], progs))




# --- the crossover suite ---------------------------------------------------------------------

@dataclass
class Median:
    """One crossover cell: medians over its rounds, and whether the kernel ever copied it."""

    cpu_per_request: float
    requests_per_s: float
    verdict: str  # the worst round's: `-` (no zerocopy asked), zerocopied, copied, mixed, ...
    runs: int

    @property
    def really_zerocopy(self) -> bool:
        return self.verdict in ("-", "zerocopied")


def crossover_medians(cells: list[SuiteCell]) -> dict[tuple[str, str], dict[int, dict[str, Median]]]:
    """(target, proto) -> size -> column -> Median over the rounds."""
    groups: dict[tuple, list[SuiteCell]] = {}
    for sc in cells:
        groups.setdefault((*sc.where, sc.column.key), []).append(sc)
    out: dict[tuple[str, str], dict[int, dict[str, Median]]] = {}
    for (target, proto, size, col), scs in groups.items():
        bad = [sc.verdict for sc in scs if not sc.really_zerocopy]
        out.setdefault((target, proto), {}).setdefault(size, {})[col] = Median(
            statistics.median(sc.cell.cpu_per_request for sc in scs),
            statistics.median(sc.cell.requests_per_s for sc in scs),
            bad[0] if bad else scs[0].verdict, len(scs))
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def api_crossovers(by_size: dict[int, dict[str, Median]]) -> dict[str, dict]:
    """Per API (crossover.APIS) that ran: against each baseline, the crossover by CPU per request
    (requests per CPU second, the steadier measure here) and by requests/s, the largest size, and
    the sizes where the kernel copied the zerocopy column (not zero-copy there)."""
    from ..crossover import APIS
    out = {}
    for api, (col, bases) in APIS.items():
        sizes = [s for s, row in by_size.items() if col in row]
        if not sizes:
            continue
        vs = {}
        for base in bases:
            both = [s for s in sizes if base in by_size[s]]
            if not both:
                continue
            cpu = {s: by_size[s][base].cpu_per_request / by_size[s][col].cpu_per_request
                   for s in both if by_size[s][col].cpu_per_request}
            rps = {s: by_size[s][col].requests_per_s / by_size[s][base].requests_per_s
                   for s in both if by_size[s][base].requests_per_s}
            vs[base] = {"crossover": crossover(cpu), "crossover_requests_per_s": crossover(rps),
                        "cpu_ratio": {str(s): round(r, 4) for s, r in cpu.items()}}
        copied = [s for s in sizes if not by_size[s][col].really_zerocopy]
        out[api] = {"column": col, "largest": max(sizes), "copied_sizes": copied,
                    "always_copied": len(copied) == len(sizes), "vs": vs}
    return out


def crossover_note(api: dict, base: str, measure: str = "crossover") -> str:
    """'from N B', 'never (behind at N B)' or 'none: the kernel copied every send'."""
    if api["always_copied"]:
        return "none: the kernel copied every zerocopy send on this path"
    size = api["vs"][base][measure]
    text = f"from {size} B" if size else f"never up to {api['largest']} B"
    if api["copied_sizes"]:
        text += f" (the kernel copied at {', '.join(map(str, api['copied_sizes']))} B: not zero-copy there)"
    return text


_API_TITLES = {"msg_zerocopy": "MSG_ZEROCOPY", "send_zc": "SEND_ZC", "send_zc_fixed": "SEND_ZC fixed buffer"}


def render_crossover(cells: list[SuiteCell], repeat: int, notes: list[str]) -> str:
    """Per target and protocol: CPU per byte of every column by size (medians), zerocopy against
    its baselines per size with ^ on the crossover, requests/s, and the crossover per API."""
    cols = [c for c in SEED_COLUMNS if any(sc.column is c for sc in cells)]
    out = [f"zctrace bench --suite crossover ({engine_note([sc.cell for sc in cells])}; untraced; medians "
           f"of {repeat} interleaved rounds; * = the kernel copied this zerocopy cell)"]
    out += [f"note: {n}" for n in notes]
    for (target, proto), by_size in crossover_medians(cells).items():
        apis = api_crossovers(by_size)
        star = lambda m: "" if m.really_zerocopy else " *"  # noqa: E731
        out.append(f"\n{target} {proto}: sender CPU per byte (ns/B; CPU time per request / size)")
        out.append(report.table(["IO size"] + [c.title for c in cols], [
            [s] + [f"{row[c.key].cpu_per_request / s * 1e9:.3f}{star(row[c.key])}" if c.key in row else "-"
                   for c in cols] for s, row in by_size.items()]))
        head, rows = ["IO size"], []
        pairs = [(api, base) for api, a in apis.items() for base in a["vs"]]
        head += [f"{_API_TITLES[api]} vs {base}" for api, base in pairs]
        for s in by_size:
            row: list = [s]
            for api, base in pairs:
                r = apis[api]["vs"][base]["cpu_ratio"].get(str(s))
                row.append("-" if r is None else _pct(r) + (" ^" if apis[api]["vs"][base]["crossover"] == s else ""))
            rows.append(row)
        if pairs:
            out.append("\nzerocopy against its baseline, requests per CPU second (^ = crossover):")
            out.append(report.table(head, rows))
        out.append("\nrequests/s:")
        out.append(report.table(["IO size"] + [c.title for c in cols], [
            [s] + [f"{row[c.key].requests_per_s:,.0f}" if c.key in row else "-" for c in cols]
            for s, row in by_size.items()]))
        out.append("crossover (by CPU per request; by requests/s in brackets):" if pairs else
                   "crossover: none measured (no zerocopy column ran: see the notes)")
        for api, base in pairs:
            out.append(f"  {_API_TITLES[api]} vs {base}: {crossover_note(apis[api], base)} "
                       f"[{crossover_note(apis[api], base, 'crossover_requests_per_s')}]")
    return "\n".join(out)


def crossover_record(target: str, proto: str, by_size: dict[int, dict[str, Median]], path, meta: dict,
                     skipped: dict[str, str]) -> dict:
    """The saved measurement of one target and protocol (zctrace/crossover.py, docs/advice.md)."""
    from ..crossover import FORMAT
    return {"format": FORMAT, "target": target, "proto": proto, "path": path.to_json() if path else None,
            **meta, "skipped": skipped,
            "sizes": [{"size": s, "columns": {k: {"cpu_us_per_request": round(m.cpu_per_request * 1e6, 4),
                                                  "requests_per_s": round(m.requests_per_s, 1),
                                                  "verdict": m.verdict, "runs": m.runs}
                                              for k, m in row.items()}} for s, row in by_size.items()],
            "crossovers": api_crossovers(by_size)}
