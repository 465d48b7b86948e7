#!/usr/bin/env python3
"""Benchmark (not a test): how much of the tracer's overhead is the kernel's price of running any
BPF program where the probes attach. Per cell, in interleaved rounds (the order alternates):
`untraced`, `floor` (an empty program at every attach point the tier's session uses: what
observing those events costs before a probe does anything) and `zctrace` (the session).

    python3 scripts/bench_probe_floor.py [--tier tracepoint] [--rounds 3] [--seconds 1]
        [--check] [--min-ratio 0.97] [--bpf-ns]

Prints requests/s and the ratios floor/untraced, zctrace/untraced and zctrace/floor (the part
of the overhead the probes' own work makes). `--check` exits 1 when zctrace/floor is below
--min-ratio in any cell. The workload is the compiled engine on the sink (UDP); BPF statistics
stay off. Needs root.

`--bpf-ns` measures the programs instead of the sender: BPF statistics on for the run
(BPF_ENABLE_STATS), `floor` and `zctrace` only, and per cell and round the BPF ns per request,
the program runs per request and each program's ns a run. Where the sender's rate is too noisy
to compare (the VM under TCG), this says how much of the probes' cost is the price of running
at all and how much their own work.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zctrace.bench import cells  # noqa: E402
from zctrace.btf import Btf  # noqa: E402
from zctrace.probes import TIERS, Session, entry_kind  # noqa: E402
from zctrace.workload.senders import WorkloadSpec  # noqa: E402
from zctrace.workload.targets import open_target  # noqa: E402

CELLS = {
    "zc/8-lazy 1000 B": dict(mode="uring_zc", size=1000, inflight=8, notif="lazy"),
    "zc/8 4000 B": dict(mode="uring_zc", size=4000, inflight=8, notif="wait"),
    "zc-fixed/8-lazy 65000 B": dict(mode="uring_zc_fixed", size=65000, inflight=8, notif="lazy"),
    "msg_zc/32 1000 B": dict(mode="msg_zerocopy", size=1000, batch=32, notify_batch=32),
    "msg_zc/32 65000 B": dict(mode="msg_zerocopy", size=65000, batch=32, notify_batch=32),
}
VARIANTS = ("untraced", "floor", "zctrace")


def empty_programs(session: Session) -> str:
    """bcc text with an empty program at each attach point of `session`."""
    out = []
    for st in session.statuses:
        kind = entry_kind(st.fn_name) if st.attached else None  # (None: a tail call's target)
        name = st.target
        if kind == "tracepoint":
            out.append("TRACEPOINT_PROBE(%s, %s) { return 0; }" % tuple(name.split(":", 1)))
        elif kind == "raw_tracepoint":
            out.append(f"RAW_TRACEPOINT_PROBE({name}) {{ return 0; }}")
        elif kind == "fentry":
            out.append(f"KFUNC_PROBE({name}) {{ return 0; }}")
        elif kind == "kprobe":
            out.append(f"int kprobe__{name}(struct pt_regs *ctx) {{ return 0; }}")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tier", choices=TIERS, default="tracepoint")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--cells", default=",".join(CELLS), help="comma-separated, of: " + ", ".join(CELLS))
    p.add_argument("--min-ratio", type=float, default=0.97)
    p.add_argument("--check", action="store_true")
    p.add_argument("--bpf-ns", action="store_true", help="BPF ns per request of floor and zctrace (statistics on)")
    args = p.parse_args()
    chosen = args.cells.split(",")
    if unknown := [c for c in chosen if c not in CELLS]:
        p.error(f"unknown cell {unknown[0]!r}")
    if args.bpf_ns and args.check:
        p.error("--check compares rates: not with --bpf-ns")
    btf = Btf.load()
    with Session.open(args.tier, btf) as session:
        text = empty_programs(session)
    from bcc import BPF  # auto-attaches the empty programs by their names

    specs = [WorkloadSpec(target="sink", duration=args.seconds, engine="c", **CELLS[c]) for c in chosen]
    if args.bpf_ns:
        return bpf_ns(args, btf, text, chosen, specs)
    rates: dict[tuple[str, str], list[float]] = {(v, c): [] for v in VARIANTS for c in chosen}
    with open_target("sink", "udp") as endpoint:
        for rnd in range(args.rounds):
            for variant in (VARIANTS if rnd % 2 == 0 else VARIANTS[::-1]):
                print(f"bench_probe_floor: round {rnd + 1} {variant}", file=sys.stderr)
                if variant == "zctrace":
                    with Session.open(args.tier, btf) as session:
                        done = cells.run_on(endpoint, specs, session)
                    if cells.check_status(done):
                        return 1
                elif variant == "floor":
                    floor = BPF(text=text)
                    try:
                        done = cells.run_on(endpoint, specs)
                    finally:
                        floor.cleanup()
                else:
                    done = cells.run_on(endpoint, specs)
                for name, cell in zip(chosen, done):
                    rates[(variant, name)].append(cell.requests / cell.seconds)
    print(f"{args.tier} tier, sink udp, compiled engine, medians of {args.rounds} interleaved rounds of "
          f"{args.seconds:g} s")
    print("| cell | untraced req/s | floor req/s | zctrace req/s | floor/untraced | zctrace/untraced | zctrace/floor |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    failed = []
    for name in chosen:
        u, f, z = (statistics.median(rates[(v, name)]) for v in VARIANTS)
        print(f"| {name} | {u:,.0f} | {f:,.0f} | {z:,.0f} | {f / u:.3f} | {z / u:.3f} | {z / f:.3f} |")
        if z / f < args.min_ratio:
            failed.append(f"{name}: zctrace/floor {z / f:.3f} < {args.min_ratio}")
    for line in failed:
        print(f"bench_probe_floor: {line}", file=sys.stderr)
    return 1 if args.check and failed else 0


def bpf_ns(args, btf: Btf, text: str, chosen: list[str], specs: list) -> int:
    """--bpf-ns: per round, variant and cell, BPF ns and program runs per request."""
    import os
    from bcc import BPF
    from zctrace import bpfinfo, cost

    def measure(bpf, session) -> list[str]:
        rows = []
        for name, spec in zip(chosen, specs):
            before = cost.program_stats(bpf.funcs)
            (cell,) = cells.run_on(endpoint, [spec], session)
            after = cost.program_stats(bpf.funcs)
            delta = {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in after}
            n = max(cell.requests, 1)
            per = ", ".join(f"{k} {t / r:,.0f} x {r / n:.2f}" for k, (t, r) in sorted(delta.items()) if r)
            exact = "" if session is None else (" (exact)" if cell.matches else " (COUNTS DIFFER)")
            rows.append(f"| {name} | {sum(t for t, _ in delta.values()) / n:,.0f} | "
                        f"{sum(r for _, r in delta.values()) / n:.2f} | {per}{exact} |")
        return rows

    stats = bpfinfo.enable_stats()
    print(f"{args.tier} tier, sink udp, compiled engine, {args.rounds} interleaved rounds of "
          f"{args.seconds:g} s a cell, BPF statistics on")
    print("| round | variant | cell | BPF ns/request | runs/request | program: ns a run x runs a request |")
    print("|---|---|---|---:|---:|---|")
    try:
        with open_target("sink", "udp") as endpoint:
            for rnd in range(args.rounds):
                for variant in (("floor", "zctrace") if rnd % 2 == 0 else ("zctrace", "floor")):
                    print(f"bench_probe_floor: round {rnd + 1} {variant}", file=sys.stderr)
                    if variant == "zctrace":
                        with Session.open(args.tier, btf) as session:
                            rows = measure(session.bpf, session)
                    else:
                        floor = BPF(text=text)
                        try:
                            rows = measure(floor, None)
                        finally:
                            floor.cleanup()
                    for row in rows:
                        print(f"| {rnd + 1} | {variant} {row}", flush=True)
    finally:
        os.close(stats)
    print(f"load average: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
