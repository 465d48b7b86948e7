#!/usr/bin/env python3
"""Benchmark one probe program's own cost (not a test): requests/s with every program of a tier
attached, against the same without PROGRAM, interleaved rounds, medians.

    python3 scripts/bench_probe_cost.py --without rx_evidence [--tier tracepoint] [--rounds 4]
        [--size 1000] [--seconds 1] [--target sink]

Each round opens one session per variant (the order alternates per round, so drift favours
neither) and runs a plain send cell and a MSG_ZEROCOPY cell on the same target. `zctrace bench
--suite overhead` measures the whole tracer against no tracing; this isolates one program.
Needs root.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zctrace.bench import cells  # noqa: E402
from zctrace.btf import Btf  # noqa: E402
from zctrace.probes import TIERS, Session, load_manifest  # noqa: E402
from zctrace.workload.senders import WorkloadSpec  # noqa: E402
from zctrace.workload.targets import open_target  # noqa: E402

MODES = ("copy", "msg_zerocopy")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--without", required=True, metavar="PROGRAM", help="the program to leave out")
    p.add_argument("--tier", choices=TIERS, default="tracepoint")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--size", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--target", default="sink")
    args = p.parse_args()
    names = {prog.name for prog in load_manifest() if args.tier in prog.tiers and not prog.filtered_only}
    if args.without not in names:
        p.error(f"no program {args.without!r} on the {args.tier} tier: {', '.join(sorted(names))}")
    variants = {"all": names, f"without {args.without}": names - {args.without}}
    specs = [WorkloadSpec(mode=m, size=args.size, target=args.target, duration=args.seconds) for m in MODES]
    rates: dict[tuple[str, str], list[float]] = {(v, m): [] for v in variants for m in MODES}
    btf = Btf.load()
    with open_target(args.target, "udp") as endpoint:
        for rnd in range(args.rounds):
            for variant in (list(variants) if rnd % 2 == 0 else list(variants)[::-1]):
                with Session.open(args.tier, btf, only=variants[variant]) as session:
                    for cell in cells.run_on(endpoint, specs, session):
                        rates[(variant, cell.mode)].append(cell.requests / cell.seconds)
    with_all, without = variants
    print(f"{args.tier} tier, {args.target} udp {args.size} B, medians of {args.rounds} interleaved rounds")
    for mode in MODES:
        a, b = statistics.median(rates[(with_all, mode)]), statistics.median(rates[(without, mode)])
        print(f"{mode:<13} all {a:>10,.0f} req/s   {without} {b:>10,.0f} req/s   ratio {a / b:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
