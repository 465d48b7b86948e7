#!/usr/bin/env python3
"""The compiled send engine against senders it can be checked by (a benchmark, not a test).

io_uring columns: liburing's examples/send-zerocopy.c from Debian's liburing-dev (written by
neither us nor the engine's authors), compiled here from the installed package with
`gcc -luring` at every run and never copied into the repository. Socket columns (copy,
MSG_ZEROCOPY), which that example does not have: the C reference sender (zctrace/workload/zc_ref_sender.c,
the engine's loops in a process of their own), so that the in-process engine is shown to cost
nothing of its own. Same target (the veth sink, UDP), same sizes, interleaved rounds (the order
alternates per round), medians.

    python3 scripts/bench_engine_anchor.py [--size 1000,4000,8000,65000] [--seconds 1]
        [--rounds 3] [--engine c|python] [--min-ratio 0.95] [--metric rate|cpu] [--json FILE]
        [--check]

--check: exit 1 if the engine is below --min-ratio of its anchor in any cell: its requests/s
(--metric rate, the default) or the anchor's CPU time per request over the engine's (--metric
cpu: on a machine busier than its CPUs, the rate measures the scheduler's share, not the loop).
BPF programs other sessions attached to io_uring tracepoints (a running zctrace, say) cost
more for the engine, whose requests each have their own user_data, than for the example, whose
requests all have user_data 1: the output lists them.
liburing 2.3's example sends for -t seconds + 200 ms and divides by -t: its rate is taken as
tx / (t + 0.2). It never waits for notifications, so the engine's waiting columns (zc 1, zc 8,
zc fixed 8) are held to the same loop without waiting: the price of waiting is part of what
those columns measure. Needs root and `apt-get install liburing-dev gcc`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zctrace.bench.reference import build_reference, run_reference  # noqa: E402
from zctrace.workload.senders import WorkloadSpec, run_workload  # noqa: E402
from zctrace.workload.targets import open_target  # noqa: E402

EXAMPLE = Path("/usr/share/doc/liburing-dev/examples/send-zerocopy.c")
EXAMPLE_EXTRA = 0.2  # seconds liburing 2.3's example runs beyond -t
# column, engine mode, notification policy, in flight, anchor ("ref" or the example's flags)
CELLS = (
    ("copy", "copy", "wait", 8, "ref"),
    ("msg_zc/1", "msg_zerocopy", "wait", 8, "ref"),
    ("msg_zc/32", "msg_zerocopy", "wait", 8, "ref"),
    ("uring", "uring", "wait", 8, ["-z", "0", "-n", "8"]),
    ("zc/1", "uring_zc", "wait", 1, ["-z", "1", "-b", "0", "-n", "1"]),
    ("zc/8", "uring_zc", "wait", 8, ["-z", "1", "-b", "0", "-n", "8"]),
    ("zc-fixed/8", "uring_zc_fixed", "wait", 8, ["-z", "1", "-b", "1", "-n", "8"]),
    ("zc-fixed/8-lazy", "uring_zc_fixed", "lazy", 8, ["-z", "1", "-b", "1", "-n", "8"]),
)


def _sizes(text: str) -> list[int]:
    sizes = [int(s) for s in text.split(",")]
    if any(s <= 0 or s > 65507 for s in sizes):
        raise argparse.ArgumentTypeError("sizes must be 1..65507 bytes (one UDP datagram)")
    return sizes


def build_example(workdir: str) -> str:
    """liburing's example, compiled from the installed package into `workdir`."""
    if not EXAMPLE.exists():
        sys.exit(f"bench_engine_anchor: error: {EXAMPLE} not found: apt-get install liburing-dev")
    binary = f"{workdir}/send-zerocopy"
    r = subprocess.run(["gcc", "-O2", "-o", binary, str(EXAMPLE), "-luring"], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"bench_engine_anchor: error: the example does not compile: {r.stderr.strip()}")
    return binary


Run = tuple[float, float]  # requests/s, CPU seconds per request


def example_run(binary: str, addr: tuple[str, int], size: int, seconds: int, flags: list[str]) -> Run:
    """The example's rate and its process's CPU time (rusage, setup included) per request."""
    proc = subprocess.Popen([binary, "-4", "-D", addr[0], "-p", str(addr[1]), "-s", str(size),
                             "-t", str(seconds), *flags, "udp"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    found = re.search(r"tx=(\d+)", out)
    if proc.returncode or not found:
        sys.exit(f"bench_engine_anchor: error: the example failed: {out.strip()}")
    tx = int(found.group(1))
    return tx / (seconds + EXAMPLE_EXTRA), (usage.ru_utime + usage.ru_stime) / tx


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=_sizes, default=[1000, 4000, 8000, 65000])
    p.add_argument("--seconds", type=int, default=1, help="seconds per run (whole: the example's -t)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--engine", choices=("c", "python"), default="c")
    p.add_argument("--min-ratio", type=float, default=0.95)
    p.add_argument("--metric", choices=("rate", "cpu"), default="rate")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    if args.seconds < 1 or args.rounds < 1:
        p.error("--seconds and --rounds must be at least 1")
    ref = build_reference()
    runs: dict[tuple[int, str, str], list[Run]] = {}
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with tempfile.TemporaryDirectory() as tmp, open_target("sink", "udp") as ep:
        example = build_example(tmp)
        for rnd in range(args.rounds):
            for size in args.size:
                for column, mode, notif, inflight, anchor in CELLS:
                    spec = WorkloadSpec(mode=mode, size=size, target="sink", duration=float(args.seconds),
                                        notify_batch=1 if column == "msg_zc/1" else 32,
                                        inflight=inflight, notif=notif, engine=args.engine)
                    run = {"engine": lambda: _engine_run(spec, ep),
                           "anchor": (lambda: _ref_run(ref, ep, spec)) if anchor == "ref" else
                           (lambda: example_run(example, ep.addr, size, args.seconds, anchor))}
                    for who in (("engine", "anchor") if rnd % 2 == 0 else ("anchor", "engine")):
                        runs.setdefault((size, column, who), []).append(run[who]())
                    print(f"bench_engine_anchor: round {rnd + 1} {size} B {column}", file=sys.stderr)
    rows, failed = [], []
    for size in args.size:
        for column, *_, anchor in CELLS:
            mine, theirs = (statistics.median(r for r, _ in runs[size, column, who])
                            for who in ("engine", "anchor"))
            cpu_mine, cpu_theirs = (statistics.median(c for _, c in runs[size, column, who])
                                    for who in ("engine", "anchor"))
            ratio, cpu_ratio = mine / theirs, cpu_theirs / cpu_mine
            name = "zc_ref_sender" if anchor == "ref" else "liburing send-zerocopy " + " ".join(anchor)
            rows.append({"size": size, "column": column, "anchor": name, "engine_requests_per_s": round(mine),
                         "anchor_requests_per_s": round(theirs), "ratio": round(ratio, 3),
                         "engine_cpu_ns_per_request": round(cpu_mine * 1e9),
                         "anchor_cpu_ns_per_request": round(cpu_theirs * 1e9),
                         "cpu_ratio": round(cpu_ratio, 3)})
            if (ratio if args.metric == "rate" else cpu_ratio) < args.min_ratio:
                failed.append(f"{size} B {column}: {ratio if args.metric == 'rate' else cpu_ratio:.3f} "
                              f"of {name} ({args.metric})")
    print(f"engine {args.engine} against its anchors, sink udp, medians of {args.rounds} interleaved "
          f"rounds of {args.seconds} s ({started}, load average {os.getloadavg()[0]:.1f} at the end; "
          f"BPF programs on io_uring tracepoints: {', '.join(uring_programs()) or 'none'})")
    print("| IO size | column | anchor | engine req/s | anchor req/s | engine/anchor | engine CPU ns/req "
          "| anchor CPU ns/req | anchor/engine CPU |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size']} | {r['column']} | {r['anchor']} | {r['engine_requests_per_s']:,} | "
              f"{r['anchor_requests_per_s']:,} | {r['ratio']:.2f} | {r['engine_cpu_ns_per_request']:,} | "
              f"{r['anchor_cpu_ns_per_request']:,} | {r['cpu_ratio']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"date": started, "engine": args.engine,
                                               "rounds": args.rounds, "seconds": args.seconds,
                                               "cells": rows}, indent=1) + "\n")
    if args.check and failed:
        for line in failed:
            print(f"bench_engine_anchor: below {args.min_ratio}: {line}", file=sys.stderr)
        return 1
    return 0


def uring_programs() -> list[str]:
    """Names of the loaded BPF programs that look at io_uring tracepoints (bpftool's view)."""
    try:
        out = subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True).stdout
        progs = json.loads(out or "[]")
    except (OSError, ValueError):
        return []
    names = Counter(p.get("name", "") for p in progs if "io_uring" in p.get("name", ""))
    return [f"{name} x{n}" for name, n in sorted(names.items())]


def _engine_run(spec: WorkloadSpec, ep) -> Run:
    r = run_workload(spec, ep)
    if spec.mode not in ("copy", "uring") and r.kernel_zerocopied != r.requests:
        sys.exit(f"bench_engine_anchor: error: {spec.mode} {spec.size} B not all zerocopied on the sink")
    return r.requests / r.seconds, r.cpu_seconds / r.requests


def _ref_run(binary: Path, ep, spec: WorkloadSpec) -> Run:
    r = run_reference(binary, ep, spec)
    return r.requests / r.seconds, r.cpu_seconds / r.requests


if __name__ == "__main__":
    sys.exit(main())
