"""Compile the probe programs of one tier with bcc, attach them, and hold the session.

The programs, their tiers and attach points are declared in probes/manifest.toml. All the
programs of a session are compiled into one bcc module so they share their maps; each attach
point is attached on its own, so one that fails leaves the others running (and says why).

Per kernel: a kernel function or tracepoint the manifest names may go by an older name on this
kernel (`kfunc_variants`: first one in BTF wins; docs/kernel.md lists
them). The program is then compiled with -D<name>=<variant> (so its program is named after, and
loads against, what this kernel has) and -DZC_VIA_<variant>, for the lines that differ.
Struct members a kernel lacks skip the programs that need them, unless zctrace.offsets has a
fallback for them.
"""

from __future__ import annotations

import ctypes
import os
import re
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from . import bpfinfo, interrupts, maps
from .btf import Btf
from .errors import ZctraceError
from .offsets import kernel_defines, kernel_macros
from .paths import PROBE_DIR

TIERS = ("fentry", "kprobe", "tracepoint")
LATENCY_EVERY = 64  # notification latency: one send in N is timed (probes/maps.bpf.h)
_MACRO = re.compile(r"\bZC_\w+\b")
_INCLUDE = re.compile(r'^#include "([\w.]+\.bpf\.h)"[ \t]*$', re.M)


def inline_headers(text: str, seen: set[str]) -> str:
    """`text` with each `#include "x.bpf.h"` replaced by that header of probes/ (its own includes
    so replaced) where the module first meets it, and by nothing after: bcc rewrites map calls
    only in the main text, so the shared headers are inlined, not included. `seen` is the
    module's: the headers already in it."""
    def one(m: re.Match) -> str:
        name = m.group(1)
        if name in seen:
            return f"/* (#include {name}: inlined above) */"
        seen.add(name)
        return inline_headers((PROBE_DIR / name).read_text(), seen)
    return _INCLUDE.sub(one, text)


def module_text(progs: list[Program]) -> str:
    """One bcc module's text: the programs in the order given, their headers inlined once.
    ZC_PROG_<NAME> tells a program (and a header) which others it is compiled with, whatever
    their order."""
    present = "".join(f"#define ZC_PROG_{p.name.upper()} 1\n" for p in progs)
    seen: set[str] = set()
    return present + "\n".join(inline_headers(p.source(), seen) for p in progs)


@dataclass(frozen=True)
class TailCall:
    """A program array and the program the loader puts in it (probes/manifest.toml `tail_call`)."""

    array: str  # the BPF_PROG_ARRAY
    fn: str  # the program put in its slot 0
    kind: str  # its program type: "raw_tracepoint" or "tracepoint"
    caller: str  # the attach point whose program makes the call (for the status line)
    purpose: str  # what the call is for (for the status line)


@dataclass(frozen=True)
class Program:
    """One probe program as the manifest declares it."""

    name: str
    file: str
    tiers: tuple[str, ...]
    summary: str
    tracepoints: tuple[str, ...] = ()
    raw_tracepoints: tuple[str, ...] = ()
    kfuncs: tuple[str, ...] = ()
    kfunc_variants: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> older names
    filtered_only: bool = False
    opt_in: bool = False  # loaded only when asked for (Session.open's `extra`)
    tail_calls: tuple[TailCall, ...] = ()  # program arrays the loader fills once it is compiled

    def source(self) -> str:
        return (PROBE_DIR / self.file).read_text()

    def needs(self) -> set[str]:
        """Kernel-derived macros this program's text uses, with the headers it includes."""
        return set(_MACRO.findall(inline_headers(self.source(), set()))) & kernel_macros()

    def resolve_kfuncs(self, btf: Btf) -> tuple[dict[str, str], list[str]]:
        """({manifest name: the function this kernel has under it}, names with no variant here)."""
        found: dict[str, str] = {}
        absent: list[str] = []
        for func in self.kfuncs:
            name = next((f for f in (func, *self.kfunc_variants.get(func, ())) if btf.has_function(f)), None)
            if name is None:
                absent.append(func)
            else:
                found[func] = name
        return found, absent



@dataclass
class AttachStatus:
    program: str
    target: str  # tracepoint or kernel function attached to (this kernel's name of it)
    attached: bool
    error: str = ""
    fn_name: str = ""  # the BPF function
    variant_of: str = ""  # the manifest's name of `target`, when this kernel calls it otherwise


def load_manifest() -> list[Program]:
    data = tomllib.loads((PROBE_DIR / "manifest.toml").read_text())
    return [Program(name=p["name"], file=p["file"], tiers=tuple(p["tiers"]), summary=p["summary"],
                    tracepoints=tuple(p.get("tracepoint", ())),
                    raw_tracepoints=tuple(p.get("raw_tracepoint", ())), kfuncs=tuple(p.get("kfunc", ())),
                    kfunc_variants={k: tuple(v) for k, v in p.get("kfunc_variants", {}).items()},
                    filtered_only=p.get("filtered_only", False), opt_in=p.get("opt_in", False),
                    tail_calls=tuple(TailCall(t["array"], t["program"], t["type"], t["caller"], t["purpose"])
                                     for t in p.get("tail_call", ())))
            for p in data["program"]]


def import_bcc():
    """bcc's BPF class with its name-based auto-attach turned off (we attach one by one)."""
    try:
        from bcc import BPF
    except ImportError as e:
        raise ZctraceError("bcc is not importable: run scripts/setup.sh (Debian's python3-bpfcc)") from e

    class Module(BPF):
        def _trace_autoload(self) -> None:
            pass

    return Module


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """libbcc prints verifier and attach noise straight to fd 2; keep it off the terminal."""
    saved = os.dup(2)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def ensure_tracefs() -> None:
    """bcc attaches tracepoints through tracefs; mount it where a minimal system did not."""
    for path, fstype in (("/sys/kernel/debug", "debugfs"), ("/sys/kernel/tracing", "tracefs")):
        if not os.path.ismount(path):
            os.system(f"mount -t {fstype} none {path} 2>/dev/null")
    if not os.path.exists("/sys/kernel/debug/tracing/events") and not os.path.exists(
            "/sys/kernel/tracing/events"):
        raise ZctraceError("tracefs is not mounted and could not be mounted (need root)")


CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39


def effective_caps() -> int:
    """This process's effective capability set, as a bit mask."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))


def has_caps(*caps: int) -> bool:
    """Does this process have every one of `caps` in its effective set?"""
    effective = effective_caps()
    return all(effective >> cap & 1 for cap in caps)


# The prefix of the name bcc gives a program of each kind (and attaches it by).
ENTRY_PREFIXES = {"tracepoint": "tracepoint__", "raw_tracepoint": "raw_tracepoint__", "fentry": "kfunc__",
                  "kprobe": "kprobe__"}


def entry_point(kind: str, target: str) -> str:
    """The name bcc gives the program of `kind` (tracepoint, raw_tracepoint, fentry, kprobe) for
    `target` ("category:event" for a tracepoint, else an event or kernel function)."""
    if kind == "tracepoint":
        return ENTRY_PREFIXES[kind] + "__".join(target.split(":"))
    return ENTRY_PREFIXES[kind] + target


def entry_kind(fn_name: str) -> str | None:
    """The kind of event program `fn_name` is attached to (entry_point's), or None for one no
    event runs (a tail call's target)."""
    return next((k for k, prefix in ENTRY_PREFIXES.items() if fn_name.startswith(prefix)), None)


def require_root() -> None:
    """Loading tracing programs needs CAP_BPF with CAP_PERFMON, or CAP_SYS_ADMIN."""
    if not (has_caps(CAP_SYS_ADMIN) or has_caps(CAP_BPF, CAP_PERFMON)):
        raise ZctraceError("zctrace needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) "
                           "to load BPF programs")


def _release_freed_memory() -> None:
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@dataclass
class Session:
    """Probes of one tier, compiled and attached; `bpf` holds the maps."""

    tier: str
    programs: list[Program]
    statuses: list[AttachStatus] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # program -> why it is not loaded
    kfuncs: dict[str, str] = field(default_factory=dict)  # manifest name -> this kernel's function
    fallbacks: dict[str, list[str]] = field(default_factory=dict)  # program -> what it does instead
    filtered: bool = False
    bpf: object = None

    @classmethod
    def open(cls, tier: str, btf: Btf, pids: list[int] | None = None,
             only: set[str] | None = None, latency_every: int = LATENCY_EVERY,
             extra: frozenset[str] = frozenset()) -> Session:
        """Compile and attach the tier's programs (and the opt-in ones named in `extra`); `pids`
        limits tracing to them and children; notification latency is timed for one send in
        `latency_every`."""
        if tier not in TIERS:
            raise ZctraceError(f"unknown tier {tier!r}: choose one of {', '.join(TIERS)}")
        require_root()
        ensure_tracefs()
        module = import_bcc()
        defines, missing, fallbacks = kernel_defines(btf)
        defines[f"ZC_TIER_{tier.upper()}"] = 1
        defines["ZC_LATENCY_EVERY"] = latency_every
        if pids is not None:
            defines["ZC_FILTER"] = 1
        session = cls(tier=tier, programs=[], filtered=pids is not None)
        for prog in load_manifest():
            if tier not in prog.tiers or (prog.filtered_only and pids is None):
                continue
            if (only is not None and prog.name not in only) or (prog.opt_in and prog.name not in extra):
                continue
            lacking = sorted(prog.needs() & missing.keys())
            if lacking:
                session.skipped[prog.name] = missing[lacking[0]]
                continue
            if tier != "tracepoint":
                found, absent = prog.resolve_kfuncs(btf)
                if absent:
                    names = " or ".join((absent[0], *prog.kfunc_variants.get(absent[0], ())))
                    session.skipped[prog.name] = f"kernel has no function {names}"
                    continue
                session.kfuncs.update(found)
            used = sorted(prog.needs() & fallbacks.keys())
            if used:
                session.fallbacks[prog.name] = sorted({fallbacks[m] for m in used})
            session.programs.append(prog)
        for func, name in session.kfuncs.items():
            if name != func:
                defines[func] = name
                defines[f"ZC_VIA_{name}"] = 1
        cflags = [f"-I{PROBE_DIR}", "-Wno-macro-redefined"] + [f"-D{k}={v}" for k, v in defines.items()]
        try:
            with interrupts.deferred():  # a stop signal lands once everything is attached
                session.bpf = session._compile(module, cflags)
                _release_freed_memory()  # clang's heap, freed but kept by malloc: ~30 MB of RSS
                session._attach()
                for pid in pids or ():
                    session.add_pid(pid)
        except BaseException:
            session.close()
            raise
        return session

    def _compile(self, module, cflags: list[str]):
        try:
            with quiet_stderr():
                return module(text=module_text(self.programs), cflags=cflags)
        except Exception:
            pass
        # Find which programs do not build here, drop them, keep the rest.
        good = []
        for prog in self.programs:
            try:
                with quiet_stderr():
                    module(text=module_text([prog]), cflags=cflags).cleanup()
                good.append(prog)
            except Exception as e:
                self.skipped[prog.name] = f"does not compile: {str(e).splitlines()[0][:200]}"
        self.programs = good
        try:
            with quiet_stderr():
                return module(text=module_text(good), cflags=cflags)
        except Exception as e:
            raise ZctraceError(f"probes do not compile together on this kernel: {e}") from e

    def _attach(self) -> None:
        b = self.bpf
        for prog in self.programs:
            for tp in prog.tracepoints:
                fn = entry_point("tracepoint", tp)
                self._try(prog, tp, lambda: b.attach_tracepoint(tp=tp, fn_name=fn), fn)
            for tp in prog.raw_tracepoints:
                fn = entry_point("raw_tracepoint", tp)
                self._try(prog, tp, lambda: b.attach_raw_tracepoint(tp=tp, fn_name=fn), fn)
            for func in prog.kfuncs:
                name = self.kfuncs[func]
                variant_of = func if name != func else ""
                if self.tier == "fentry":  # the program is named after the function it loads against
                    fn = entry_point("fentry", name)
                    self._try(prog, name, lambda: b.attach_kfunc(fn_name=fn), fn, variant_of)
                elif self.tier == "kprobe":
                    fn = entry_point("kprobe", func)
                    self._try(prog, name, lambda: b.attach_kprobe(event=name, fn_name=fn), fn, variant_of)
        self._link_tail_calls()
        if not any(s.attached for s in self.statuses):
            first = next((s for s in self.statuses if s.error), None)
            self.close()
            raise ZctraceError(f"no probe attached on the {self.tier} tier"
                               + (f": {first.target}: {first.error}" if first else ""))

    def _link_tail_calls(self) -> None:
        """Each program's tail-call targets (the manifest's `tail_call`: uring_notif's walkers of
        long chains of linked notifications, 6.10+, called by uring_send's notification CQE
        programs), loaded and put into their program arrays. An array the module lacks was not
        compiled in (no linked notifications, or the tracepoint tier): nothing to link."""
        b = self.bpf
        kinds = {"raw_tracepoint": b.RAW_TRACEPOINT, "tracepoint": b.TRACEPOINT}
        for prog in self.programs:
            for tc in prog.tail_calls:
                try:
                    array = b[tc.array.encode()]
                except KeyError:
                    continue

                def link(array=array, tc=tc) -> None:
                    array[array.Key(0)] = array.Leaf(b.load_func(tc.fn, kinds[tc.kind]).fd)

                self._try(prog, f"{tc.caller} (tail call: {tc.purpose})", link, tc.fn)

    def _try(self, prog: Program, target: str, attach, fn_name: str, variant_of: str = "") -> None:
        try:
            with quiet_stderr():
                attach()
            self.statuses.append(AttachStatus(prog.name, target, True, "", fn_name, variant_of))
        except Exception as e:
            self.statuses.append(AttachStatus(prog.name, target, False, str(e).splitlines()[0][:200],
                                              fn_name, variant_of))

    def detach(self) -> None:
        """Every attached program detached, kept loaded with its maps and its tail-call links:
        `reattach` puts them back without compiling again (the tests keep one session per tier
        and attach the tier they run)."""
        b = self.bpf
        with interrupts.deferred():
            for s in self.statuses:
                kind = entry_kind(s.fn_name) if s.attached else None
                if kind == "tracepoint":
                    b.detach_tracepoint(tp=s.target)
                elif kind == "raw_tracepoint":
                    b.detach_raw_tracepoint(tp=s.target)
                elif kind == "fentry":
                    b.detach_kfunc(fn_name=s.fn_name)
                elif kind == "kprobe":
                    b.detach_kprobe(event=s.target, fn_name=s.fn_name)
                # else not attached, or a tail-call target in its program array (run when called)
            self.statuses = []

    def reattach(self) -> None:
        """What `detach` took off, attached again (the statuses are this attach's)."""
        if self.statuses:
            raise ZctraceError("the session is attached")
        with interrupts.deferred():
            self._attach()

    def add_pid(self, pid: int) -> None:
        targets = self.bpf[maps.TARGETS.key]
        targets[targets.Key(pid)] = targets.Leaf(1)

    def clear(self) -> None:
        """Forget everything counted so far (between benchmark cells). Calls inside syscalls are
        kept; io_uring rings go with their counters (a ring is registered again at its next
        zerocopy send, and notifications of sends from before are not counted)."""
        for spec in maps.REGISTRY:
            if not spec.cleared:
                continue
            try:
                self.bpf[spec.key].clear()  # an array's entries are zeroed (bcc's ArrayBase)
            except KeyError:  # not loaded on this tier
                continue
        self.forget_skipped_runs()

    def forget_skipped_runs(self) -> None:
        """Count the runs the kernel skips (each program's recursion_misses, a counter since the
        program was loaded that nothing resets) from now: snapshot.take subtracts this baseline."""
        self.bpf.recursion_misses_base = bpfinfo.recursion_misses(self.bpf.funcs)

    def close(self) -> None:
        if self.bpf is not None:
            with interrupts.deferred():  # a detach cut short is retried, loudly, by bcc at exit
                self.bpf.cleanup()
                self.bpf = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
