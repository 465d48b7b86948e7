"""`zctrace doctor`: the options, the findings gathered (see the package docstring), printed and
written as JSON."""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import asdict

from .. import argtypes, report, tiers
from ..btf import VMLINUX, Btf, BtfError
from ..errors import ZctraceError
from ..probes import Session, load_manifest
from ..session import probe_statuses
from ..workload.uring import supported_opcodes
from . import features
from .system import (interface_findings, io_uring_disabled_finding, leftovers_finding, memlock_finding,
                       optmem_finding)
from .render import render

IORING_OPS = {"send_zc": 47, "sendmsg_zc": 48}
# Bytes per send assumed for the RLIMIT_MEMLOCK estimate when --size is not given.
DEFAULT_SEND_SIZE = 65536


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=argtypes.positive(int, "bytes"), metavar="BYTES",
                   help="bytes per send of your application: checks UDP payload against each "
                        f"MTU and sizes the memlock estimate (default {DEFAULT_SEND_SIZE})")
    p.add_argument("--no-probes", action="store_true",
                   help="do not compile and attach the active tier's probes (seconds on a real "
                        "machine, a minute under emulation); their attach points are not checked")
    argtypes.add_json(p, "the findings")


def run_cli(args: argparse.Namespace) -> int:
    result = diagnose(args.size, probes=not args.no_probes)
    print(render(result), file=report.text_stream(args.json))
    if args.json:
        report.write_json(result, args.json)
    return 0


def diagnose(size: int | None = None, probes: bool = True) -> dict:
    """Findings as plain data (see the package docstring); `size` = bytes per send; `probes`:
    load the active tier's probes and say which attach."""
    result: dict = {"kernel": platform.release(), "btf": VMLINUX.exists(), "root": os.geteuid() == 0}
    try:
        btf = Btf.load()
    except BtfError as e:
        result["btf_error"] = str(e)
        btf = None
    checks = tiers.check_all() if result["root"] else []
    result["tiers"] = [{"tier": c.tier, "ok": c.ok, "error": c.error} for c in checks]
    active = next((c.tier for c in checks if c.ok), None)
    result["active_tier"] = active
    # Each kernel function the probes attach to, with the name this kernel has it under.
    found = {f: name for p in load_manifest() for f, name in (p.resolve_kfuncs(btf)[0] if btf else {}).items()}
    funcs = sorted({f for p in load_manifest() for f in p.kfuncs})
    result["kernel_functions"] = {f: f in found for f in funcs}
    result["kernel_function_variants"] = {f: name for f, name in sorted(found.items()) if name != f}
    result["probes"] = []
    result["probe_fallbacks"] = {}
    result["probes_checked"] = bool(probes and active and btf)
    if result["probes_checked"]:
        try:
            with Session.open(active, btf) as session:
                result["probes"] = probe_statuses(session)
                result["probe_fallbacks"] = session.fallbacks
        except ZctraceError as e:
            result["probes_error"] = str(e)
    ops = supported_opcodes()
    result["io_uring"] = {name: op in ops for name, op in IORING_OPS.items()}

    result["network_namespace"] = os.readlink("/proc/self/ns/net")
    from . import netdev  # here, not at the top: pyroute2 would cost every command's start ~0.1-0.3 s
    leftovers = leftovers_finding()  # before the interfaces: removed ones are not listed there
    ifaces = [(i, netdev.assess(i, size)) for i in netdev.interfaces()]
    result["interfaces"] = [netdev.to_json(i, v) for i, v in ifaces]
    findings = leftovers + [f for i, v in ifaces for f in interface_findings(i, v)]
    findings += [optmem_finding(), memlock_finding(size or DEFAULT_SEND_SIZE),
                 io_uring_disabled_finding(), features.report_usage_finding(), features.zcrx_finding(),
                 features.scm_zc_notification_finding()]
    result["findings"] = [asdict(f) for f in findings]
    return result
