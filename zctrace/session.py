"""Opening the probes for a command: the best tier this kernel allows (or the one forced), with
what did not attach said on stderr; and the probes' statuses as plain data for reports."""

from __future__ import annotations

import sys

from . import interrupts, tiers
from .btf import CachedBtf
from .errors import ZctraceError
from .probes import LATENCY_EVERY, Session, require_root


def _tier_line(active: str, checks: list[tiers.TierCheck]) -> str:
    refused = "; ".join(f"{c.tier} unavailable: {c.error}" for c in checks if not c.ok)
    return f"zctrace: probe tier {active}" + (f" ({refused})" if refused else "")


def _stale(checks: list[tiers.TierCheck]) -> bool:
    """The chosen tier's verdict was remembered and a try now says otherwise (the kernel or its
    BPF policy changed since): the remembered verdicts must go."""
    return checks[-1].remembered and not tiers.check(checks[-1].tier).ok


def open_session(forced: str | None, pids: list[int] | None, latency_every: int = LATENCY_EVERY,
                 extra: frozenset[str] = frozenset(), quiet: bool = False) -> Session:
    """The probes on `forced` or the best tier (and the opt-in programs in `extra`), for `pids`
    and their children (None: every process); the tier line and the probes not attached or not
    loaded on stderr unless `quiet` (a session opened again, already reported)."""
    require_root()
    btf = CachedBtf()
    tier, checks = tiers.best(forced)
    if not tier:
        raise ZctraceError(f"the {forced} tier does not load here: {checks[-1].error}" if forced
                           else "no probe tier loads on this kernel: " + checks[-1].error)

    def say(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr)

    say(_tier_line(tier, checks))
    try:
        session = Session.open(tier, btf, pids=pids, latency_every=latency_every, extra=extra)
    except ZctraceError:
        if not _stale(checks):
            raise
        tiers.forget()
        return open_session(forced, pids, latency_every, extra, quiet)
    if not all(s.attached for s in session.statuses) and _stale(checks):
        session.close()
        tiers.forget()
        return open_session(forced, pids, latency_every, extra, quiet)
    btf.save()
    unloaded = extra - {p.name for p in session.programs} - session.skipped.keys()
    if unloaded:
        flags = ", ".join("--" + name.replace("_", "-") for name in sorted(unloaded))
        say(f"zctrace: note: {flags}: not on the {tier} tier (fentry and kprobe only)")
    if interrupts.received():
        session.close()
        interrupts.check("before the probes were attached: nothing done")
    for status in session.statuses:
        if not status.attached:
            say(f"zctrace: probe {status.program} not attached to {status.target}: {status.error}")
    for name, why in session.skipped.items():
        say(f"zctrace: probe {name} not loaded: {why}")
    return session


def probe_statuses(session: Session) -> list[dict]:
    """Each attach point (`variant_of`: the manifest's name for a function this kernel calls
    otherwise), then each program not loaded, with why."""
    return ([{"program": s.program, "target": s.target, "attached": s.attached, "error": s.error,
              "variant_of": s.variant_of} for s in session.statuses]
            + [{"program": name, "target": "", "attached": False, "error": why}
               for name, why in session.skipped.items()])
