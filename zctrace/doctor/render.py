"""Doctor's findings as text."""

from __future__ import annotations

from ..report import table


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
                           [(f"  {p['program']}", _attach_point(p), yes(p["attached"]), p["error"])
                            for p in result["probes"]]))
    for prog, whats in result["probe_fallbacks"].items():
        lines += [f"  {prog} falls back to {what}" for what in whats]
    if result["root"] and result["active_tier"] and not result.get("probes_checked", True):
        lines.append(f"probes on the {result['active_tier']} tier: not checked (--no-probes)")
    if "probes_error" in result:
        lines.append(f"probes on the {result['active_tier']} tier: not loaded: {result['probes_error']}")
    variants = result["kernel_function_variants"]
    lines.append("kernel functions (fentry/kprobe tiers): " + ", ".join(
        f"{f} {yes(ok)}" + (f" (as {variants[f]})" if f in variants else "")
        for f, ok in result["kernel_functions"].items()))
    lines.append("io_uring     " + ", ".join(f"{k} {yes(v)}" for k, v in result["io_uring"].items()))
    lines.append(f"interfaces of this network namespace only ({result['network_namespace']}):")
    lines.append(table(("  IFACE", "KIND", "MTU", "UP", "SG", "TX-CSUM", "TSO", "GSO", "UDP-GSO",
                        "QDISC", "TAPS", "UDP-ZC", "TCP-ZC"),
                       [_iface_row(i) for i in result["interfaces"]]))
    lines.append("findings:")
    for f in result["findings"]:
        lines.append(f"  {f['status']:<5} {f['subject']}: {f['value']}: {f['detail']}")
        if f["advice"]:
            lines.append(f"        -> {f['advice']}")
    return "\n".join(lines)


def _attach_point(p: dict) -> str:
    """The target, and for an older name of a function the name the manifest gives it."""
    return f"{p['target']} (variant of {p['variant_of']})" if p.get("variant_of") else p["target"]


def _iface_row(i: dict) -> tuple:
    f = i["features"]
    onoff = lambda k: ("on" if f[k] else "off") if f else "?"
    csum = ("+".join(k.removesuffix("_csum") for k in ("ip_csum", "ipv6_csum", "hw_csum") if f[k])
            or "off") if f else "?"
    return (f"  {i['name']}", i["kind"], i["mtu"], "yes" if i["up"] else "no", onoff("sg"), csum,
            onoff("tso"), onoff("gso"), onoff("udp_gso"), i["qdisc"] or "-", len(i["taps"]),
            i["udp"], i["tcp"])

