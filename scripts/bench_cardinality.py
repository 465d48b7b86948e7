#!/usr/bin/env python3
"""Benchmark (not a test): the exporter's series stay bounded while short-lived workloads come and go.

    python3 scripts/bench_cardinality.py [--cgroups 300] [--minutes 10] [--top 10] [--grace 60] [--check]

Starts `zctrace export --top-cgroups TOP --series-grace GRACE`, scoped to a scratch cgroup, then
for --minutes starts --cgroups short-lived workloads, evenly spread: each a new cgroup laid out
like a containerd container of a Kubernetes pod (kubepods.slice/.../cri-containerd-<id>.scope),
a MSG_ZEROCOPY sender (the compiled engine, loopback) moved into it, the cgroup removed once it
exits. Scrapes /metrics every second and reports:

- nothing lost: the sum over series of each series' increases (what rate() and increase() see;
  a new series counts from 0) equals the kernel's own count of every sender, and the probes
  lost no event;
- series: the most owners (label sets) zctrace_zerocopy_requests had at once, against the
  budget of 2 * TOP + 1 (TOP named, TOP frozen, `other`);
- scrape time p50 and p99, and the daemon's RSS after the first minute and at the end.

--check exits 1 unless: nothing lost, owners <= 2 * TOP + 1, scrape p50 < 50 ms, RSS growth
< 5 %. Needs root and cgroup v2. Prints the load average with the result.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_exporter import rss_kib, scrape, start_exporter  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from zctrace import cgroups  # noqa: E402


def sender(cgroup: Path, count: int) -> subprocess.Popen:
    argv = [sys.executable, "-m", "zctrace.workload", "--mode", "msg_zerocopy", "--target", "loopback",
            "--size", "1000", "--count", str(count), "--engine", "c"]
    return subprocess.Popen(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)


def requests_by_owner(body: bytes) -> tuple[dict[tuple, float], float]:
    """zctrace_zerocopy_requests_total per label set, and the probes' lost events."""
    series, lost = {}, 0.0
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == "zctrace_zerocopy_requests_total":
                series[tuple(sorted(s.labels.items()))] = s.value
            elif s.name == "zctrace_lost_events_total":
                lost += s.value
    return series, lost


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cgroups", type=int, default=300)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--grace", type=float, default=60.0)
    p.add_argument("--sends", type=int, default=2000, help="requests per sender")
    p.add_argument("--check", action="store_true")
    args = p.parse_args()

    root = cgroups.mount() / f"zctrace-bench-{secrets.token_hex(3)}"
    root.mkdir()
    log = tempfile.NamedTemporaryFile("w+", prefix="zctrace-bench-", suffix=".log", delete=False)
    exporter, url = start_exporter(["--cgroup", root.name, "--top-cgroups", str(args.top),
                                    "--series-grace", str(args.grace)], log)
    kernel = 0
    running: list[tuple[subprocess.Popen, Path]] = []
    last: dict[tuple, float] = {}
    increases, owners_max, times, rss = 0.0, 0, [], {}
    lost = 0.0
    start = time.monotonic()
    every = args.minutes * 60 / args.cgroups
    started = 0
    try:
        while True:
            now = time.monotonic() - start
            while started < args.cgroups and now >= started * every:
                uid = secrets.token_hex(16)
                uid = f"{uid[:8]}_{uid[8:12]}_{uid[12:16]}_{uid[16:20]}_{uid[20:]}"
                path = (root / "kubepods.slice" / "kubepods-besteffort.slice" / f"kubepods-besteffort-pod{uid}.slice"
                        / f"cri-containerd-{secrets.token_hex(32)}.scope")
                path.mkdir(parents=True)
                running.append((sender(path, args.sends), path))
                started += 1
            for proc, path in list(running):
                if proc.poll() is not None:
                    out = proc.stdout.read()
                    if proc.returncode == 0:
                        kernel += json.loads(out)["requests"]
                    else:
                        print(f"sender in {path} exited {proc.returncode}", file=sys.stderr)
                    running.remove((proc, path))
                    path.rmdir()
                    path.parent.rmdir()
            seconds, body = scrape(url)
            times.append(seconds)
            series, lost = requests_by_owner(body)
            for key, value in series.items():
                increases += value - last.get(key, 0.0)
            last.update(series)
            owners = {tuple(kv for kv in key if kv[0] not in ("verdict", "api", "proto")) for key in series}
            owners_max = max(owners_max, len(owners))
            if "warm" not in rss and now >= 60:
                rss["warm"] = rss_kib(exporter.pid)
            if started == args.cgroups and not running and now >= args.minutes * 60:
                break
            time.sleep(1.0)
        time.sleep(2.0)  # the last senders' final counts: two more scrapes
        for _ in range(2):
            seconds, body = scrape(url)
            series, lost = requests_by_owner(body)
            for key, value in series.items():
                increases += value - last.get(key, 0.0)
            last.update(series)
            time.sleep(1.0)
        rss["end"] = rss_kib(exporter.pid)
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)
        for proc, _ in running:
            proc.kill()
        for d in sorted((d for d in root.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)) + [root]:
            d.rmdir()
    times.sort()
    p50, p99 = statistics.median(times), times[int(0.99 * (len(times) - 1))]
    budget = 2 * args.top + 1
    growth = rss["end"] / rss.get("warm", rss["end"]) - 1
    load = os.getloadavg()
    print(f"zctrace bench_cardinality: {args.cgroups} cgroups over {args.minutes:g} min, --top-cgroups {args.top}, "
          f"--series-grace {args.grace:g} s, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"  requests: kernel {kernel}, sum of series increases {increases:.0f}, lost events {lost:.0f}")
    print(f"  owners at once: at most {owners_max} (budget {budget})")
    print(f"  scrape: p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms over {len(times)} scrapes")
    print(f"  exporter RSS: {rss.get('warm', 0) / 1024:.1f} MiB after 1 min, {rss['end'] / 1024:.1f} MiB at the end "
          f"({growth * 100:+.1f} %)")
    ok = increases == kernel and lost == 0 and owners_max <= budget and p50 < 0.050 and growth < 0.05
    print("  check:", "pass" if ok else "FAIL")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
