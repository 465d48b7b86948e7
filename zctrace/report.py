"""Human-readable tables and JSON files for reports (model -> text)."""

from __future__ import annotations

import json
import sys
from typing import Iterable, Sequence, TextIO

from .cost import describe
from .errors import ZctraceError
from .model import Counts, Report, SkippedRuns
from .reasons import ADVICE


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([fmt(headers)] + [fmt(r) for r in rows])


def human_bytes(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GiB"


def _na(c: Counts) -> str:
    if not c.not_attempted:
        return "0"
    return f"{c.not_attempted} ({', '.join(sorted(c.not_attempted_reasons))})"


_HEAD = ("PID", "COMM", "WORKLOAD", "API", "PROTO", "REQUESTS", "BYTES", "ZEROCOPIED", "COPIED", "UNKNOWN",
         "UNDECIDED", "NOT_ATTEMPTED", "VERDICT", "TOP REASON")


def _row(pid, comm, workload, api, proto, c: Counts) -> list[object]:
    return [pid, comm, workload, api, proto, c.zc_requests, human_bytes(c.bytes), c.zerocopied, c.copied,
            c.unknown, c.undecided, _na(c), c.verdict, c.top_reason]


def _seconds(s: float) -> str:
    return f"{s * 1e6:.0f} us" if s < 1e-3 else f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def render(report: Report, verbose: bool = False) -> str:
    """The report as text; `verbose` adds every late-copy call site with its kernel stack."""
    rows = [_row(p.pid, p.comm, p.workload.name, f.api, f.proto, f.counts) for p in report.processes for f in p.flows]
    rows.append(_row("TOTAL", "", "", "", "", report.totals))
    out = [table(_HEAD, rows)]
    t = report.totals
    if t.copied_reasons or t.not_attempted_reasons:
        out.append("\nwhy:")
        for reason, n in sorted({**t.copied_reasons, **t.not_attempted_reasons}.items(), key=lambda kv: -kv[1]):
            out.append(f"  {reason:<18} {n:>10}  {ADVICE.get(reason, '')}")
    if t.unknown:
        out.append("unknown: io_uring without IORING_SEND_ZC_REPORT_USAGE, whose verdict this tier cannot see "
                   "(set the flag, at no cost; the fentry/kprobe tiers see every completion)")
    if t.undecided:
        hint = ("notifications the application has not read, or completions still in flight"
                if not report.sees_completions else "completions still in flight")
        out.append(f"undecided: {hint}")
    if t.pinned_bytes:
        out.append(f"pinned: {human_bytes(t.pinned_bytes)} of zerocopy sends not completed yet "
                   "(user pages held by the kernel; charged to RLIMIT_MEMLOCK without CAP_IPC_LOCK)")
    if t.unread:
        out.append(f"error queue: {t.unread} notified requests never read by the application")
    for ring in report.rings:
        if ring.cq_pending or ring.cq_overflow:
            out.append(f"io_uring ring {ring.ino} of pid {ring.pid}: {ring.cq_pending} CQEs not consumed by "
                       f"the application, {ring.cq_overflow} in the overflow list (notification CQEs among "
                       "them keep their buffers in use)")
    if report.sockets:
        out.append("\nsockets (most copied first):")
        out.append(table(("  PID", "PROTO", "INODE", "NETNS", "IFINDEX", "REQUESTS", "ZEROCOPIED", "COPIED"),
                         [(f"  {s.pid}", s.proto, s.ino, s.netns, s.ifindex or "-",
                           s.requests, s.zerocopied, s.copied) for s in report.sockets[:10]]))
    for api, h in sorted(report.notification_latency.items()):
        if h.count:
            what = ("completion" if report.sees_completions else
                    "read by the application" if api == "msg_zerocopy" else "notification CQE")
            out.append(f"notification latency ({api}, send to {what}): p50 <= {_seconds(h.quantile(0.5))}, "
                       f"p99 <= {_seconds(h.quantile(0.99))} ({h.count} samples)")
    if report.notification_ranges and report.notification_ranges.count:
        h = report.notification_ranges
        out.append(f"requests per MSG_ZEROCOPY notification: p50 <= {h.quantile(0.5):.0f}, "
                   f"p99 <= {h.quantile(0.99):.0f}")
    if report.receive:
        out.append("\nreceive side (TCP_ZEROCOPY_RECEIVE):")
        out.append(table(("  PID", "COMM", "CALLS", "MAPPED", "COPIED", "LEFT TO RECV", "ERRORS"),
                         [(f"  {r.pid}", r.comm, r.calls, human_bytes(r.mapped),
                           human_bytes(r.copied), human_bytes(r.skipped), r.errors)
                          for r in report.receive]))
    if verbose and report.copy_sites:
        out.append("\nlate copies by kernel call site (skb_copy_ubufs, __pskb_pull_tail, skb_segment; "
                   "innermost frame first):")
        for site in report.copy_sites:
            out.append(f"  {site.reason:<18} {site.count:>10} copies {human_bytes(site.bytes):>9}  "
                       + " <- ".join(site.stack))
    out += _software_gso(report)
    full = {k: v for k, v in report.lost.items() if not isinstance(v, SkippedRuns)}
    if full:
        out.append("lost (BPF maps full): " + ", ".join(
            f"{k} {v.events} times, {v.requests} requests, {human_bytes(v.bytes)}" for k, v in full.items()))
    out += _skipped_runs(report)
    advice = [f"  pid {p.pid} {p.comm} [{a.code}] {a.text}" for p in report.processes for a in p.advice]
    if advice:
        out += ["\nadvice (docs/advice.md):", *advice]
    if not report.processes and not report.receive:
        out.append("no zerocopy sends seen")
    out.append(describe(report.cost))
    return "\n".join(out)


def text_stream(*outputs: str | None) -> TextIO:
    """Where a command's human text goes: stderr when one of its machine outputs (--json, --csv)
    is '-', so that stdout carries that output alone; else stdout."""
    return sys.stderr if "-" in outputs else sys.stdout


def _software_gso(report: Report) -> list[str]:
    """Copies the kernel's verdict does not count (kernel event sw_gso_copy), host-wide and by the
    flows they were counted for (a copy of a sender the probes did not see stays host-wide)."""
    hidden = report.kernel_events.get("sw_gso_copy")
    if not hidden:
        return []
    out = [f"copied although the kernel says zero-copy: {hidden.count} zerocopy packets "
           f"({human_bytes(hidden.bytes)}) segmented in software without scatter-gather (software_gso; "
           "their requests count as zero-copy, as the kernel's notifications say; --verbose: where)"]
    for p in report.processes:
        for f in p.flows:
            c = f.counts
            if c.sw_gso_copies:
                share = f", {100 * c.sw_gso_bytes / c.bytes:.0f} % of its bytes" if c.bytes else ""
                out.append(f"  pid {p.pid} {p.comm} {f.api}/{f.proto}: {c.sw_gso_copies} packets "
                           f"({human_bytes(c.sw_gso_bytes)}{share})")
    return out


def _skipped_runs(report: Report) -> list[str]:
    """The runs of the probes the kernel skipped (lost cause recursion_misses), or the note that
    this kernel cannot count them."""
    out = []
    skipped = report.lost.get("recursion_misses")
    if isinstance(skipped, SkippedRuns):
        out.append(f"lost (runs the kernel skipped: another BPF program was running on the CPU): recursion_misses "
                   f"{skipped.events} runs (" + ", ".join(f"{p} {n}" for p, n in skipped.programs.items())
                   + "): a verdict or reason may be missing")
    recovered = report.kernel_events.get("errqueue_verdict")
    if recovered:
        out.append(f"verdicts from the error queue: {recovered.count} MSG_ZEROCOPY requests whose completion "
                   "callback the kernel skipped, as the application read them (not lost)")
    recovered = report.kernel_events.get("report_usage_verdict")
    if recovered:
        out.append(f"verdicts from the kernel's REPORT_USAGE flags: {recovered.count} io_uring notifications "
                   "whose skb callback runs the kernel skipped (not lost)")
    if not report.recursion_misses_counted:
        out.append("skipped runs: this kernel (before 6.7) does not count the runs of kprobe and tracepoint "
                   "programs it skips while another BPF program runs on the CPU (a verdict or reason may be "
                   "missing uncounted; the fentry tier is the least exposed)")
    return out


def write_json(obj: dict, path: str) -> None:
    """Write `obj` to `path`, or to stdout for '-' (a path that became unwritable since it was
    checked is one error line)."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise ZctraceError(f"cannot write {path}: {e.strerror}") from None
