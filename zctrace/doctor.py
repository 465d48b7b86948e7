"""`zctrace doctor`: what this kernel lets zctrace see, and what it supports."""

from __future__ import annotations

import os
import platform

from . import tiers
from .btf import VMLINUX, Btf, BtfError
from .probes import Session, load_manifest
from .report import table

IORING_OPS = {"send_zc": 47, "sendmsg_zc": 48}


def diagnose() -> dict:
    """Findings as plain data: kernel, BTF, tiers, probes on the best tier, io_uring."""
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
    funcs = sorted({f for p in load_manifest() for f in p.kfuncs})
    result["kernel_functions"] = {f: bool(btf and btf.has_function(f)) for f in funcs}
    result["probes"] = []
    if active and btf:
        from .cli import probe_statuses
        with Session.open(active, btf) as session:
            result["probes"] = probe_statuses(session)
    from .workload.uring import supported_opcodes
    ops = supported_opcodes()
    result["io_uring"] = {name: op in ops for name, op in IORING_OPS.items()}
    return result


def render(result: dict) -> str:
    yes = lambda b: "yes" if b else "no"
    lines = [f"kernel       {result['kernel']}",
             f"BTF          {yes(result['btf'])}" + (f" ({result['btf_error']})" if 'btf_error' in result else "")]
    if not result["root"]:
        lines.append("probe tiers  not checked: run as root")
    else:
        lines.append("probe tiers:")
        lines.append(table(("  TIER", "LOADS", "WHY NOT"),
                           [(f"  {t['tier']}", yes(t["ok"]), t["error"]) for t in result["tiers"]]))
        lines.append(f"active tier  {result['active_tier'] or 'none'}")
    if result["probes"]:
        lines.append(f"probes on the {result['active_tier']} tier:")
        lines.append(table(("  PROGRAM", "ATTACH POINT", "OK", "ERROR"),
                           [(f"  {p['program']}", p["target"], yes(p["attached"]), p["error"])
                            for p in result["probes"]]))
    lines.append("kernel functions (fentry/kprobe tiers): " + ", ".join(
        f"{f} {yes(ok)}" for f, ok in result["kernel_functions"].items()))
    lines.append("io_uring     " + ", ".join(f"{k} {yes(v)}" for k, v in result["io_uring"].items()))
    return "\n".join(lines)
