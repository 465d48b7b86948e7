#!/usr/bin/env python3
"""Soak `zctrace export` (a benchmark, not a test): memory, map fill, scrape time and exactness
over a long run with steady senders, process churn and concurrent scrapers.

    python3 scripts/soak_exporter.py [--minutes 30] [--interval 60] [--scrapers 4]
                                     [--churn-rate 20] [--check] [--rss-tolerance 10]

In a scratch cgroup v2 (the exporter runs with --cgroup on it, so other processes on the host
do not count): one io_uring SEND_ZC and one MSG_ZEROCOPY sender of the project's workload
(rounds of a minute, to the sink), short-lived MSG_ZEROCOPY senders without end (the C
reference sender with -n 1 over loopback, --churn-rate a second), and --scrapers clients
scraping /metrics once a second each. Every --interval seconds one line: the daemon's RSS, the
fullest BPF maps (zctrace_bpf_map_entries / max), scrape time (median, max; and the median of
the collector's own part, zctrace_scrape_duration_seconds: the rest is waiting and rendering), failed scrapes,
and requests counted by the exporter vs. reported by the senders that finished. At the end,
once every sender is done, the two must be equal.

--check exits 1 unless the RSS at the end is within --rss-tolerance % of the RSS after the
first interval, the counts are exact, and no scrape failed (an error status, no answer, or
zctrace_scrape_errors_total going up). Needs root; loopback and the sink only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from zctrace import cgroups  # noqa: E402
from zctrace.bench.reference import build_reference  # noqa: E402

from bench_exporter import rss_kib, start_exporter  # noqa: E402  (scripts/, beside this one)


def scrape(url: str) -> dict[str, list]:
    """{family: samples} of one scrape (raises on an error status or no answer)."""
    with urllib.request.urlopen(url, timeout=30) as r:
        body = r.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(body)}


def counted(fams: dict[str, list]) -> int:
    """Requests the exporter counted: every verdict, plus those still awaiting one."""
    return int(sum(s.value for s in fams.get("zctrace_zerocopy_requests", []))
               + sum(s.value for s in fams.get("zctrace_zerocopy_undecided_requests", [])))


@dataclass
class Tally:
    """What the senders reported and the scrapers saw (shared by the threads)."""

    sent: int = 0
    senders: int = 0
    failed_senders: int = 0
    scrape_seconds: list[float] = field(default_factory=list)
    collect_seconds: list[float] = field(default_factory=list)  # of that, the collector's own work
    failed_scrapes: int = 0
    last: dict[str, list] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_sender(self, out: str, rc: int) -> None:
        with self.lock:
            self.senders += 1
            try:
                self.sent += int(json.loads(out)["requests"])
            except (ValueError, KeyError):
                self.failed_senders += 1
            if rc:
                self.failed_senders += 1


def steady(stop: threading.Event, end: float, mode: str, tally: Tally) -> None:
    """The project's workload in rounds of at most a minute, until `end` (monotonic)."""
    while (left := end - time.monotonic()) > 1 and not stop.is_set():
        p = subprocess.run([sys.executable, "-m", "zctrace.workload", "--mode", mode, "--target", "sink",
                            "--duration", f"{min(60.0, left):.1f}"], cwd=REPO, capture_output=True, text=True)
        tally.add_sender(p.stdout, p.returncode)


def churn(stop: threading.Event, sender: Path, port: int, rate: float, tally: Tally) -> None:
    """Short-lived MSG_ZEROCOPY senders, one request each, one after another, at most `rate`/s."""
    while not stop.wait(1 / rate):
        p = subprocess.run([str(sender), "-a", "127.0.0.1", "-p", str(port), "-P", "udp", "-s", "1000",
                            "-m", "msg_zerocopy", "-n", "1"], capture_output=True, text=True)
        tally.add_sender(p.stdout, p.returncode)


def scraper(stop: threading.Event, url: str, tally: Tally) -> None:
    while not stop.wait(1):
        t = time.perf_counter()
        try:
            fams = scrape(url)
            ok = "zctrace_zerocopy_requests" in fams
        except OSError:
            fams, ok = {}, False
        with tally.lock:
            tally.scrape_seconds.append(time.perf_counter() - t)
            if not ok or (tally.last and fams["zctrace_scrape_errors"][0].value
                          > tally.last["zctrace_scrape_errors"][0].value):
                tally.failed_scrapes += 1
            if ok:
                tally.last = fams
                tally.collect_seconds.append(fams["zctrace_scrape_duration_seconds"][0].value)


def maps_line(fams: dict[str, list]) -> str:
    size = {s.labels["map"]: s.value for s in fams.get("zctrace_bpf_map_max_entries", [])}
    used = sorted(((s.value / size[s.labels["map"]], s.labels["map"], int(s.value))
                   for s in fams.get("zctrace_bpf_map_entries", []) if size.get(s.labels["map"])), reverse=True)
    return " ".join(f"{m} {n}/{int(size[m])}" for _, m, n in used[:3])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--interval", type=float, default=60, help="seconds between report lines")
    p.add_argument("--scrapers", type=int, default=4)
    p.add_argument("--churn-rate", type=float, default=20, help="short-lived senders started a second (default 20)")
    p.add_argument("--churn-parallel", type=int, default=2, help="...of them at most at a time (default 2)")
    p.add_argument("--check", action="store_true")
    p.add_argument("--rss-tolerance", type=float, default=10, help="percent (default 10)")
    args = p.parse_args()

    sender = build_reference()
    cgroup = cgroups.mount() / f"zctrace-soak-{os.getpid()}"
    cgroup.mkdir()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the churn's destination (never read)
    sink.bind(("127.0.0.1", 0))
    log = open(f"/tmp/zctrace-soak-{os.getpid()}.log", "w+")
    tally, stop, scraping = Tally(), threading.Event(), threading.Event()
    threads: list[threading.Thread] = []
    daemon, rc = None, None
    try:
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))  # and so every child
        daemon, url = start_exporter(["--cgroup", cgroup.name], log)
        start_rss = rss_kib(daemon.pid)
        end = time.monotonic() + args.minutes * 60
        threads = ([threading.Thread(target=steady, args=(stop, end, m, tally)) for m in ("uring_zc", "msg_zerocopy")]
                   + [threading.Thread(target=churn, args=(stop, sender, sink.getsockname()[1],
                                                       args.churn_rate / args.churn_parallel, tally))
                      for _ in range(args.churn_parallel)])
        scrapers = [threading.Thread(target=scraper, args=(scraping, url, tally)) for _ in range(args.scrapers)]
        for t in threads + scrapers:
            t.start()
        print(f"exporter pid {daemon.pid}, RSS {start_rss / 1024:.1f} MiB at start; log {log.name}")
        print("sent: by the senders that finished (the steady ones report at the end of each minute)")
        print(f"{'min':>6} {'RSS MiB':>8} {'senders':>8} {'sent':>9} {'counted':>9} "
              f"{'scrape p50/max ms':>18} {'collect p50':>11} {'failed':>6}  fullest maps")
        t0, rss = time.monotonic(), []
        while (elapsed := time.monotonic() - t0) < args.minutes * 60:
            time.sleep(min(args.interval, args.minutes * 60 - elapsed))
            rss.append(rss_kib(daemon.pid) / 1024)
            with tally.lock:
                times, tally.scrape_seconds = tally.scrape_seconds, []
                work, tally.collect_seconds = tally.collect_seconds, []
                fams, sent, senders, failed = tally.last, tally.sent, tally.senders, tally.failed_scrapes
            print(f"{(time.monotonic() - t0) / 60:6.1f} {rss[-1]:8.1f} {senders:8} {sent:9} "
                  f"{counted(fams) if fams else 0:9} "
                  f"{statistics.median(times) * 1e3 if times else 0:8.1f}/{max(times, default=0) * 1e3:<9.1f} "
                  f"{statistics.median(work) * 1e3 if work else 0:8.1f} ms "
                  f"{failed:6}  {maps_line(fams)}", flush=True)
        stop.set()
        for t in threads:
            t.join()
        time.sleep(3)  # the last notifications
        scraping.set()
        for t in scrapers:
            t.join()
        final = scrape(url)
    finally:
        stop.set()
        scraping.set()
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            rc = daemon.wait(timeout=60)
        with open(cgroups.mount() / "cgroup.procs", "w") as f:
            f.write(str(os.getpid()))
        for t in threads:
            t.join()
        cgroup.rmdir()
    lost = {s.labels["cause"]: int(s.value) for s in final["zctrace_lost_events"]}
    print(f"end: {tally.senders} senders ({tally.failed_senders} failed), {tally.sent} requests sent, "
          f"{counted(final)} counted; lost events {lost}; {tally.failed_scrapes} failed scrapes; "
          f"RSS {rss[0]:.1f} -> {rss[-1]:.1f} MiB (max {max(rss):.1f}); maps {maps_line(final)}; "
          f"exporter exit {rc}")
    if not args.check:
        return 0
    problems = []
    if abs(rss[-1] - rss[0]) > rss[0] * args.rss_tolerance / 100:
        problems.append(f"RSS moved {rss[0]:.1f} -> {rss[-1]:.1f} MiB (over {args.rss_tolerance}%)")
    if counted(final) != tally.sent or tally.failed_senders:
        problems.append(f"counted {counted(final)} != sent {tally.sent} ({tally.failed_senders} senders failed)")
    if tally.failed_scrapes:
        problems.append(f"{tally.failed_scrapes} failed scrapes")
    if rc:
        problems.append(f"exporter exit status {rc}")
    for problem in problems:
        print(f"check failed: {problem}")
    print("check passed" if not problems else "check FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
