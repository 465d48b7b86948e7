#!/usr/bin/env python3
"""Start-up of `zctrace trace` and `zctrace export`: time to first data and memory (RSS).

trace: from spawning `zctrace trace -- date +%s.%N` to the moment `date` runs (the command is
started only once the probes are attached, so its first send is traced); RSS is the tracer's
VmRSS at that moment (read by the command from /proc/$PPID) and its peak (VmHWM).
export: from spawning `zctrace export` to the first /metrics answer with zctrace's families;
RSS after that scrape, and the peak. Both also report the zctrace process's CPU time to that
point: on a machine busy with other work wall time grows, CPU time hardly does.

Run 1 of each starts with an empty cache (a fresh XDG_CACHE_HOME), runs 2..N reuse it ("warm":
what a second start on the same machine costs). Median of the warm runs is what --check judges:
exit 1 if time to first data is over --max-seconds or the exporter's RSS over --max-export-mb.
Run as root from the checkout:  python3 scripts/bench_startup.py --runs 5 --check
On a machine busy with other work, `chrt -f 10` in front gives the process a core as if idle.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Sample:
    seconds: float
    cpu_seconds: float  # the zctrace process's own user+system time: what a loaded machine does not inflate
    rss_mb: float
    peak_mb: float


def _cpu(stat: str) -> float:
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mb(status: str, key: str) -> float:
    line = next(line for line in status.splitlines() if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024


def trace_once(zctrace: list[str], env: dict[str, str]) -> Sample:
    probe = "date +%s.%N; cat /proc/$PPID/stat; cat /proc/$PPID/status"
    start = time.time()
    r = subprocess.run(zctrace + ["trace", "--", "sh", "-c", probe], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    if r.returncode:
        raise SystemExit(f"bench_startup: trace failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    first, stat, status = r.stdout.split("\n", 2)
    return Sample(float(first) - start, _cpu(stat), _mb(status, "VmRSS"), _mb(status, "VmHWM"))


def export_once(zctrace: list[str], env: dict[str, str]) -> Sample:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.time()
    proc = subprocess.Popen(zctrace + ["export", "--listen", f"127.0.0.1:{port}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"bench_startup: export exited {proc.returncode}: {proc.stderr.read()[-500:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                    if b"zctrace_probe_up" in resp.read():
                        seconds = time.time() - start
                        break
            except OSError:
                pass
            time.sleep(0.01)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        cpu = _cpu(Path(f"/proc/{proc.pid}/stat").read_text())
        return Sample(seconds, cpu, _mb(status, "VmRSS"), _mb(status, "VmHWM"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def summary(samples: list[Sample]) -> dict:
    warm = samples[1:] or samples
    return {"first_run": asdict(samples[0]),
            "warm_median": {k: round(statistics.median(getattr(s, k) for s in warm), 3)
                            for k in ("seconds", "cpu_seconds", "rss_mb", "peak_mb")},
            "warm_range_s": [round(min(s.seconds for s in warm), 3), round(max(s.seconds for s in warm), 3)],
            "runs": len(samples)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="runs per command, the first with an empty cache")
    p.add_argument("--zctrace", default=f"{sys.executable} -m zctrace.cli",
                   help="how to run zctrace (default: this checkout's)")
    p.add_argument("--max-seconds", type=float, default=1.5)
    p.add_argument("--max-export-mb", type=float, default=150)
    p.add_argument("--check", action="store_true", help="exit 1 when a warm median misses a target")
    args = p.parse_args()
    if args.runs < 2:
        p.error("--runs must be at least 2 (one cold, one warm)")
    zctrace = shlex.split(args.zctrace)
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache}
        for name, once in (("trace", trace_once), ("export", export_once)):
            results[name] = summary([once(zctrace, env) for _ in range(args.runs)])
    results["load_average"] = os.getloadavg()
    results["date"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print(json.dumps(results, indent=2))
    failed = [f"{name}: warm time to first data {r['warm_median']['seconds']} s > {args.max_seconds} s"
              for name, r in results.items() if name in ("trace", "export")
              and r["warm_median"]["seconds"] > args.max_seconds]
    if results["export"]["warm_median"]["rss_mb"] > args.max_export_mb:
        failed.append(f"export: RSS {results['export']['warm_median']['rss_mb']} MB > {args.max_export_mb} MB")
    for line in failed:
        print(f"bench_startup: {line}", file=sys.stderr)
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
