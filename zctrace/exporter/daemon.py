"""`zctrace export`: attach the probes, serve /metrics until SIGTERM or SIGINT, detach, exit 0."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from .. import argtypes, cgroups
from ..errors import ZctraceError
from ..session import open_session
from .server import DEFAULT_LISTEN

DEFAULT_TOP = 10
DEFAULT_GRACE = 600.0


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _labels(text: str) -> tuple[str, ...]:
    from .collector import LABELS
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",")))
    unknown = [n for n in names if n not in LABELS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown label {unknown[0] if unknown else text!r} "
                                         f"(known: {', '.join(LABELS)})")
    if not {"comm", "cgroup"} & set(names):
        raise argparse.ArgumentTypeError("--labels needs comm or cgroup among them (the folded remainder is "
                                         "comm=\"other\", cgroup=\"other\")")
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"address to serve /metrics on (default {DEFAULT_LISTEN})")
    argtypes.add_tier(p)
    argtypes.add_latency_every(p)
    argtypes.add_kernel_events(p)
    from .collector import DEFAULT_LABELS, LABELS
    top = p.add_mutually_exclusive_group()
    top.add_argument("--top-cgroups", dest="top", type=_count, metavar="N",
                     help=f"name the top N workloads by bytes sent (a workload: one value of the process "
                          f"labels, by default a command in a cgroup), fold the rest into comm=\"other\", "
                          f"cgroup=\"other\" (default {DEFAULT_TOP}); up to N more that dropped out keep "
                          f"their series for --series-grace")
    top.add_argument("--top-comms", dest="top", type=_count, metavar="N", help="the older name of --top-cgroups")
    p.add_argument("--labels", type=_labels, default=DEFAULT_LABELS, metavar="L,L",
                   help=f"the process labels of the per-process series, of {', '.join(LABELS)} "
                        f"(default {','.join(DEFAULT_LABELS)}; each is one more dimension of series)")
    p.add_argument("--per-pid", action="store_true", help="add a pid label (more series)")
    p.add_argument("--series-grace", type=argtypes.seconds, default=DEFAULT_GRACE, metavar="S",
                   help=f"seconds the series of a workload whose processes all exited (or that dropped out "
                        f"of the top N) keep their final values before they go (default {DEFAULT_GRACE:g})")
    argtypes.add_cgroup_mount(p)
    p.add_argument("--cgroup", metavar="PATH",
                   help="export only processes in this cgroup v2 or below it, e.g. kubepods.slice (the "
                        "per-process families; latency histograms and kernel-side families stay host-wide)")
    p.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    p.add_argument("--basic-auth-file", metavar="FILE",
                   help="require HTTP basic auth; FILE holds user:password lines")
    p.add_argument("--bpf-stats", action="store_true",
                   help="count BPF program run time while running (BPF_ENABLE_STATS; needs CAP_SYS_ADMIN)")


def run_cli(args: argparse.Namespace) -> int:
    from prometheus_client import ProcessCollector
    from prometheus_client.registry import CollectorRegistry

    from .collector import ExportOptions, ZctraceCollector
    from .server import MetricsServer, TlsFiles, parse_listen, read_basic_auth

    logging.basicConfig(format="zctrace: %(message)s", level=logging.INFO, stream=sys.stderr)
    host, port = parse_listen(args.listen)
    if host in ("0.0.0.0", "::"):  # every address: other hosts can scrape it
        print(f"zctrace: note: --listen {args.listen} serves every address of this host, so other "
              f"hosts can scrape it (127.0.0.1:{port}: this host only)", file=sys.stderr)
    cgroup = cgroups.resolve(args.cgroup) if args.cgroup else None
    from .collector import WORKLOAD_LABELS
    attributed = bool(set(WORKLOAD_LABELS) & set(args.labels))
    cgroup_root = argtypes.resolver(args, needed=attributed).root if attributed or args.cgroup_mount else None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ZctraceError("give both --tls-cert and --tls-key, or neither")
    tls = TlsFiles(args.tls_cert, args.tls_key) if args.tls_cert else None
    users = read_basic_auth(args.basic_auth_file) if args.basic_auth_file else None
    if users is not None and tls is None:
        print("zctrace: warning: basic auth over plain HTTP sends the password in the clear", file=sys.stderr)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    registry = CollectorRegistry()
    server = MetricsServer(registry, host, port, tls, users)  # bind before the slow probe build
    stats_fd = None
    try:
        session = open_session(args.tier, None, args.latency_every, argtypes.extra_programs(args))
        with session:
            if args.bpf_stats:
                from ..bpfinfo import enable_stats
                try:
                    stats_fd = enable_stats()
                except OSError as e:
                    print(f"zctrace: warning: --bpf-stats: {e.strerror}", file=sys.stderr)
            collector = ZctraceCollector(session, ExportOptions(
                args.top or DEFAULT_TOP, args.per_pid, cgroup, stats_forced=stats_fd is not None,
                labels=args.labels, grace=args.series_grace, cgroup_root=cgroup_root))
            registry.register(collector)
            from .privileges import drop_after_attach
            drop_after_attach(session.tier)  # before any thread starts: capabilities are per thread
            sweeper = threading.Thread(target=collector.sweep_until, args=(stop,), name="zctrace-sweep", daemon=True)
            sweeper.start()
            try:
                ProcessCollector(registry=registry)
                server.start()
                scheme = "https" if tls else "http"
                shown = f"[{server.address[0]}]" if ":" in server.address[0] else server.address[0]
                print(f"zctrace: serving {scheme}://{shown}:{server.address[1]}/metrics", file=sys.stderr)
                # Python runs signal handlers in the main thread only, at its next bytecode: a
                # SIGTERM another thread took is seen within a second, not at an hour's timeout.
                while not stop.wait(1.0):
                    pass
                server.stop()
            finally:
                stop.set()
                sweeper.join()
    finally:
        server.close()
        if stats_fd is not None:
            os.close(stats_fd)
    print("zctrace: stopped, probes detached", file=sys.stderr)
    return 0
