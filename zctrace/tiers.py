"""Which probe tier this kernel allows: try to load and attach a tiny program of each kind.

Each try costs a bcc compile (~0.2 s); the verdicts are remembered for this boot (the kernel and
its BPF policy) and this module's programs. A caller that finds a remembered verdict wrong (the
tier then fails to load) calls forget() and asks again; remembered refusals of every tier are
always tried again before they fail a start."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from . import cache, interrupts
from .probes import TIERS, entry_point, import_bcc, quiet_stderr

# A function every zerocopy-capable kernel has, and a tracepoint every kernel has.
_PROBE_FUNC = "skb_copy_ubufs"
_PROBE_TP = "syscalls:sys_enter_sendmsg"
_TINY = {
    "fentry": (f"KFUNC_PROBE({_PROBE_FUNC}) {{ return 0; }}",
               lambda b: b.attach_kfunc(fn_name=entry_point("fentry", _PROBE_FUNC))),
    "kprobe": (f"int {entry_point('kprobe', _PROBE_FUNC)}(void *ctx) {{ return 0; }}",
               lambda b: b.attach_kprobe(event=_PROBE_FUNC, fn_name=entry_point("kprobe", _PROBE_FUNC))),
    "tracepoint": ("TRACEPOINT_PROBE(%s, %s) { return 0; }" % tuple(_PROBE_TP.split(":")),
                   lambda b: b.attach_tracepoint(tp=_PROBE_TP, fn_name=entry_point("tracepoint", _PROBE_TP))),
}


@dataclass(frozen=True)
class TierCheck:
    tier: str
    ok: bool
    error: str = ""
    remembered: bool = False  # from the cache, not tried by this process


def _cache_name() -> str:
    return f"tiers-{cache.key(cache.boot_id(), Path(__file__).read_bytes())}.json"


def _remember(checks: list[TierCheck]) -> None:
    known = cache.load(_cache_name()) or {}
    known.update({c.tier: asdict(c) | {"remembered": True} for c in checks})
    cache.store(_cache_name(), known)


def forget() -> None:
    cache.forget(_cache_name())


def check(tier: str) -> TierCheck:
    module = import_bcc()
    text, attach = _TINY[tier]
    b = None
    with interrupts.deferred():  # never a stop signal half-way through bcc (see interrupts)
        try:
            with quiet_stderr():
                b = module(text=text)
                attach(b)
            return TierCheck(tier, True)
        except Exception as e:
            return TierCheck(tier, False, _explain(str(e).splitlines()[0][:200]))
        finally:
            if b is not None:
                b.cleanup()


def _explain(error: str) -> str:
    if "super-user" in error and os.geteuid() == 0:  # bcc's text for any EPERM
        return "the kernel refused to load it (EPERM as root: lockdown or a BPF policy)"
    return error


def check_all() -> list[TierCheck]:
    """Every tier tried now (the remembered verdicts are replaced)."""
    checks = [check(t) for t in TIERS]
    _remember(checks)
    return checks


def best(forced: str | None = None) -> tuple[str, list[TierCheck]]:
    """The best tier that loads here (or `forced`), with the checks that led there."""
    known = cache.load(_cache_name()) or {}
    checks = []
    for tier in TIERS if forced is None else (forced,):
        trusted = tier in known and (forced is None or known[tier]["ok"])  # a forced tier's "no" is retried
        c = TierCheck(**known[tier]) if trusted else check(tier)
        checks.append(c)
        if c.ok:
            break
    fresh = [c for c in checks if not c.remembered]
    if fresh:
        _remember(fresh)
    if not any(c.ok for c in checks) and len(fresh) < len(checks):
        forget()  # never fail on remembered verdicts alone: try every tier now
        return best(forced)
    return next((c.tier for c in checks if c.ok), ""), checks
