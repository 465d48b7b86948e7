"""Which probe tier this kernel allows: try to load and attach a tiny program of each kind."""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import interrupts
from .probes import TIERS, import_bcc, quiet_stderr

# A function every zerocopy-capable kernel has, and a tracepoint every kernel has.
_PROBE_FUNC = "skb_copy_ubufs"
_TINY = {
    "fentry": (f"KFUNC_PROBE({_PROBE_FUNC}) {{ return 0; }}",
               lambda b: b.attach_kfunc(fn_name=f"kfunc__{_PROBE_FUNC}")),
    "kprobe": (f"int kprobe__{_PROBE_FUNC}(void *ctx) {{ return 0; }}",
               lambda b: b.attach_kprobe(event=_PROBE_FUNC, fn_name=f"kprobe__{_PROBE_FUNC}")),
    "tracepoint": ("TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) { return 0; }",
                   lambda b: b.attach_tracepoint(tp="syscalls:sys_enter_sendmsg",
                                                 fn_name="tracepoint__syscalls__sys_enter_sendmsg")),
}


@dataclass(frozen=True)
class TierCheck:
    tier: str
    ok: bool
    error: str = ""


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
    return [check(t) for t in TIERS]


def best(forced: str | None = None) -> tuple[str, list[TierCheck]]:
    """The best tier that loads here (or `forced`), with the checks that led there."""
    checks = []
    for tier in TIERS if forced is None else (forced,):
        c = check(tier)
        checks.append(c)
        if c.ok:
            return tier, checks
    return "", checks
