#!/usr/bin/env python3
"""Cross-check of zctrace's C reference sender against liburing's examples/send-zerocopy.c.

Debian's liburing-dev ships that example as source (apt-get install liburing-dev). It is the
published io_uring benchmark's descendant but covers only io_uring, prints no CPU time and no
kernel verdicts, so `zctrace bench --reference` uses scripts/zc_ref_sender.c; this script shows
how far the two C senders are apart on the sink target, with the Python workload beside them.
liburing 2.3's example runs for -t seconds + 200 ms but divides by -t: rates are corrected here.

    python3 scripts/liburing_crosscheck.py [SIZE ...]     (as root; default 1000 4000 65000)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from zctrace.benchsuite import build_reference
from zctrace.workload.senders import WorkloadSpec, run_workload
from zctrace.workload.targets import RECEIVER_PORT, open_target

EXAMPLE = Path("/usr/share/doc/liburing-dev/examples/send-zerocopy.c")
SECONDS = 1
# column, example flags, zctrace mode, notification policy (the example never waits for them)
CASES = (("uring send", ["-z", "0"], "uring", "wait"),
         ("zc 8 lazy", ["-z", "1", "-b", "0"], "uring_zc", "lazy"),
         ("zc fixed 8 lazy", ["-z", "1", "-b", "1"], "uring_zc_fixed", "lazy"))


def build_example(workdir: str) -> str:
    if not EXAMPLE.exists():
        sys.exit(f"{EXAMPLE} not found: apt-get install liburing-dev")
    binary = f"{workdir}/send-zerocopy"
    subprocess.run(["gcc", "-O2", "-o", binary, str(EXAMPLE), "-luring"], check=True)
    return binary


def example_rate(binary: str, addr: str, size: int, flags: list[str]) -> float:
    out = subprocess.run([binary, "-4", "-D", addr, "-p", str(RECEIVER_PORT), "-s", str(size),
                          "-t", str(SECONDS), "-n", "8", *flags, "udp"],
                         capture_output=True, text=True, check=True)
    packets = int(re.search(r"tx=(\d+)", out.stdout + out.stderr).group(1))
    return packets / (SECONDS + 0.2)


def main(sizes: list[int]) -> None:
    ref = build_reference()
    print("| IO size | column | liburing example req/s | zc_ref_sender req/s | Python req/s | C/liburing |")
    print("|---:|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp, open_target("sink", "udp") as ep:
        example = build_example(tmp)
        for size in sizes:
            for column, flags, mode, notif in CASES:
                lib = example_rate(example, ep.addr[0], size, flags)
                c = json.loads(subprocess.run(
                    [str(ref), "-a", ep.addr[0], "-p", str(RECEIVER_PORT), "-i", ep.ifname,
                     "-P", "udp", "-s", str(size), "-m", mode, "-t", str(SECONDS), "-w", notif],
                    capture_output=True, text=True, check=True).stdout)
                c_rate = c["requests"] / c["seconds"]
                r = run_workload(WorkloadSpec(mode=mode, target="sink", size=size,
                                              duration=float(SECONDS), notif=notif), ep)
                print(f"| {size} | {column} | {lib:,.0f} | {c_rate:,.0f} | "
                      f"{r.requests / r.seconds:,.0f} | {c_rate / lib:.2f} |", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 4000, 65000])
