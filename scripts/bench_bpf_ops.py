#!/usr/bin/env python3
"""Benchmark (not a test): what single BPF operations cost in a program on `io_uring_complete`,
the probes' hottest attach point. One raw tracepoint program per variant (empty, or doing one
kind of operation), attached while the C reference sender runs io_uring SEND_ZC on the sink;
ns per run from the kernel's BPF statistics, medians of interleaved rounds.

    python3 scripts/bench_bpf_ops.py [--rounds 3] [--seconds 1]

An empty program's ns per run is the statistics' own floor (two clock reads) plus dispatch; the
other rows are read against it (docs/probes.md). Needs root.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zctrace.bench.reference import build_reference, run_reference  # noqa: E402
from zctrace import bpfinfo  # noqa: E402
from zctrace.workload.senders import WorkloadSpec  # noqa: E402
from zctrace.workload.targets import open_target  # noqa: E402

HEADER = "struct head { u64 w[12]; };\nBPF_HASH(h, u64, u64, 4096);\nBPF_ARRAY(a, u64, 4096);\n"
VARIANTS = {
    "empty": "return 0;",
    "read 16 B": "u64 b[2]; bpf_probe_read_kernel(&b, 16, (void *)ctx->args[2]); return b[0] == 7;",
    "read 96 B": "struct head x; bpf_probe_read_kernel(&x, 96, (void *)ctx->args[1]); return x.w[10] == 7;",
    "hash lookup": "u64 k = ctx->args[0], one = 1, *v = h.lookup(&k); if (v) *v += 1; else h.update(&k, &one); "
                   "return 0;",
    "array lookup": "u32 i = (u32)((ctx->args[0] * 0x9E3779B97F4A7C15ULL) >> 52) & 4095; u64 *v = a.lookup(&i); "
                    "if (v) *v += 1; return 0;",
    "4 atomic adds": "u32 i = 1; u64 *v = a.lookup(&i); if (v) { __sync_fetch_and_add(v, 1); "
                     "__sync_fetch_and_add(v, 2); __sync_fetch_and_add(v, 3); __sync_fetch_and_add(v, 4); } return 0;",
    "4 plain adds": "u32 i = 1; u64 *v = a.lookup(&i); if (v) { *v += 1; *v += 2; *v += 3; *v += 4; } return 0;",
    "u64 division": "u32 i = 1; u64 *v = a.lookup(&i); if (v) *v += (*v + 12345) / ((ctx->args[0] & 7) + 3); "
                    "return 0;",
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.0)
    args = p.parse_args()
    from bcc import BPF  # auto-attaches RAW_TRACEPOINT_PROBE by its name

    binary = build_reference()
    spec = WorkloadSpec(target="sink", duration=args.seconds, mode="uring_zc", size=1000, inflight=8, notif="lazy")
    ns: dict[str, list[float]] = {k: [] for k in VARIANTS}
    stats = bpfinfo.enable_stats()
    try:
        with open_target("sink", "udp") as endpoint:
            for rnd in range(args.rounds):
                for name in (list(VARIANTS) if rnd % 2 == 0 else list(VARIANTS)[::-1]):
                    b = BPF(text=HEADER + "RAW_TRACEPOINT_PROBE(io_uring_complete) {" + VARIANTS[name] + "}")
                    try:
                        fd = b.funcs[b"raw_tracepoint__io_uring_complete"].fd
                        before = bpfinfo.prog_stats(fd)
                        run_reference(binary, endpoint, spec)
                        after = bpfinfo.prog_stats(fd)
                    finally:
                        b.cleanup()
                    runs = after.run_count - before.run_count
                    ns[name].append((after.run_time_ns - before.run_time_ns) / max(runs, 1))
    finally:
        os.close(stats)
    floor = statistics.median(ns["empty"])
    print(f"raw tracepoint io_uring_complete, C reference sender, io_uring SEND_ZC 1000 B, "
          f"medians of {args.rounds} rounds")
    print("| program does | ns per run | over empty |\n|---|---:|---:|")
    for name, v in ns.items():
        m = statistics.median(v)
        print(f"| {name} | {m:.1f} | {m - floor:+.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
