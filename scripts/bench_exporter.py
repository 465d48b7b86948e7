#!/usr/bin/env python3
"""Benchmark `zctrace export` (not a test): scrape time and daemon memory with many series.

    python3 scripts/bench_exporter.py [--processes 150] [--sends 20] [--scrapes 300] [--per-pid]

Starts the exporter (best probe tier, --top-comms large enough to name every process), forks
--processes short-lived senders, each under its own comm (zcb-NNNN), that send --sends
MSG_ZEROCOPY UDP datagrams over loopback (copied: local delivery) and read their notifications,
then scrapes /metrics --scrapes times and prints scrape latency, the series count and the
daemon's RSS (after start, after the senders, after the scrapes). Needs root.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SO_ZEROCOPY, MSG_ZEROCOPY, MSG_ERRQUEUE = 60, 0x4000000, 0x2000
PR_SET_NAME = 15


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sender(index: int, addr: tuple[str, int], sends: int) -> None:
    """Child: rename, send MSG_ZEROCOPY datagrams, read the notifications, exit."""
    ctypes.CDLL(None).prctl(PR_SET_NAME, f"zcb-{index:04d}".encode(), 0, 0, 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        s.connect(addr)
        payload = b"z" * 1000
        for _ in range(sends):
            s.send(payload, MSG_ZEROCOPY)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:  # notifications come back as readable errors
            if not select.select([], [], [s], 0.1)[2]:
                continue
            try:
                s.recvmsg(0, 1024, MSG_ERRQUEUE)
            except BlockingIOError:
                continue
            break


def spawn_senders(n: int, sends: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.setblocking(False)
        children = []
        for i in range(n):
            pid = os.fork()
            if pid == 0:
                try:
                    sender(i, sink.getsockname(), sends)
                finally:
                    os._exit(0)
            children.append(pid)
            while True:  # keep the receive queue from filling up
                try:
                    sink.recv(65536)
                except BlockingIOError:
                    break
        for pid in children:
            os.waitpid(pid, 0)


def scrape(url: str) -> tuple[float, bytes]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        body = r.read()
    return time.perf_counter() - t, body


def start_exporter(args: list[str], log) -> tuple[subprocess.Popen, str]:
    """`zctrace export ARGS` on a free loopback port, once it answers: (process, /metrics URL).
    Exits with the daemon's log (`log`, its stderr) if it does not answer within 2 minutes."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    daemon = subprocess.Popen([sys.executable, "-m", "zctrace.cli", "export", "--listen", f"127.0.0.1:{port}", *args],
                              cwd=REPO, stderr=log)
    deadline = time.monotonic() + 120
    while True:
        try:
            scrape(url)
            return daemon, url
        except OSError:
            if daemon.poll() is not None or time.monotonic() > deadline:
                daemon.kill()
                log.seek(0)
                raise SystemExit(log.read())
            time.sleep(0.2)


def series(body: bytes) -> tuple[int, int]:
    """(all samples, zctrace_* samples)."""
    lines = [l for l in body.decode().splitlines() if l and not l.startswith("#")]
    return len(lines), sum(1 for l in lines if l.startswith("zctrace_"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=150)
    p.add_argument("--sends", type=int, default=20)
    p.add_argument("--scrapes", type=int, default=300)
    p.add_argument("--per-pid", action="store_true")
    args = p.parse_args()

    log = tempfile.TemporaryFile("w+")
    extra = ["--top-comms", str(args.processes + 50)] + (["--per-pid"] if args.per_pid else [])
    daemon, url = start_exporter(extra, log)
    try:
        for _ in range(3):
            scrape(url)
        rss_start = rss_kib(daemon.pid)

        t = time.perf_counter()
        spawn_senders(args.processes, args.sends)
        senders_s = time.perf_counter() - t
        for _ in range(2):  # new series show 0 at their first scrape
            scrape(url)
        rss_series = rss_kib(daemon.pid)

        times, sizes, rss_mid = [], [], 0
        for i in range(args.scrapes):
            dt, body = scrape(url)
            times.append(dt)
            sizes.append(len(body))
            if i == args.scrapes // 10:
                rss_mid = rss_kib(daemon.pid)
        rss_end = rss_kib(daemon.pid)
        total, ours = series(body)
        collect = [float(l.split()[1]) for l in body.decode().splitlines()
                   if l.startswith("zctrace_scrape_duration_seconds ")][0]
        q = statistics.quantiles(times, n=100)
        print(f"command: zctrace export {' '.join(extra)}")
        print(f"senders: {args.processes} processes x {args.sends} MSG_ZEROCOPY sends in {senders_s:.1f} s")
        print(f"series: {ours} zctrace_* samples (histogram buckets included; {total} with process_*), "
              f"{sizes[-1] / 1024:.0f} KiB per scrape")
        print(f"scrape over HTTP ({args.scrapes} scrapes): p50 {statistics.median(times) * 1e3:.1f} ms, "
              f"p95 {q[94] * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms; "
              f"collector (maps + programs) {collect * 1e3:.1f} ms in the last")
        print(f"daemon RSS: {rss_start / 1024:.1f} MiB after start, {rss_series / 1024:.1f} MiB with the series, "
              f"{rss_mid / 1024:.1f} MiB after {args.scrapes // 10 + 1} scrapes, "
              f"{rss_end / 1024:.1f} MiB after {args.scrapes}")
    finally:
        daemon.send_signal(signal.SIGTERM)
        rc = daemon.wait(timeout=30)
        print(f"exporter exit status on SIGTERM: {rc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
