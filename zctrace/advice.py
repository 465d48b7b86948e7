"""Advice: is zerocopy worth it for this workload, here? From a model.Report (never recomputing
its verdicts), the crossovers this host measured (`zctrace bench --suite crossover`, saved:
zctrace/crossover.py) and a few host facts (net.core.optmem_max, a process's RLIMIT_MEMLOCK and
CAP_IPC_LOCK).

Each piece of advice is {"code", "text", "evidence"}; the codes are a contract (docs/advice.md):

- `below_crossover`: most bytes go in requests below the measured crossover of their API on the
  path they take: the same sends would cost less CPU copied.
- `crossover_not_measured`: the question above cannot be answered for this flow: no crossover
  measured for its path on this kernel (or its path is not known); names the command to run.
- `always_copied`: zerocopy attempted on a path that always copies, with what the attempt costs.
- `fixable_not_attempted`: the kernel did not try zerocopy for a reason a setting fixes.
- `notifications_late`: completions slow enough, at the measured rate, to exhaust optmem
  (MSG_ZEROCOPY notifications) or RLIMIT_MEMLOCK (pinned pages).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import crossover
from .crossover import DevicePaths, NetPath, Saved
from .hostfacts import HostFacts
from .model import Flow, ProcessReport, Report

CODES = ("below_crossover", "crossover_not_measured", "always_copied", "fixable_not_attempted",
         "notifications_late")

# Copy reasons of a path that copies every zerocopy send, whatever the sender does. No reason
# zctrace reports names encryption or encapsulation yet (kTLS refuses zerocopy: `eopnotsupp`, a
# not-attempted reason); such reasons join this set when the probes report them.
ALWAYS_COPIES = frozenset({"local_delivery", "tun_tap", "software_crypto"})
# The bench targets whose path copies for a reason (where the attempt's cost can be measured).
MEASURED_ON = {"local_delivery": ("loopback", "netns")}
# A flow "always copied": at least this share of its decided requests copied for ALWAYS_COPIES reasons.
ALWAYS_SHARE = 0.9
# The API of a flow -> the crossover measured for it, and the baseline the advice compares with.
# io_uring flows are taken as SEND_ZC from pages pinned per request (the probes cannot tell
# registered buffers apart).
FLOW_API = {"msg_zerocopy": ("msg_zerocopy", "copy"), "io_uring": ("send_zc", "uring")}
# What one MSG_ZEROCOPY notification in flight holds of the socket's optmem: an skb's truesize,
# about 850 B (20 KiB of optmem held about 24 notifications on 6.1: tests/conftest.py). An estimate.
NOTIFICATION_OPTMEM = 850
LATE_SHARE = 0.5  # notifications_late: the estimate reaches this share of the limit
FIXABLE = ("enobufs_optmem", "enobufs_memlock", "so_zerocopy_unset")


@dataclass
class Advice:
    code: str
    text: str
    evidence: dict = field(default_factory=dict)


def _bytes(n: float) -> str:
    from .report import human_bytes
    return human_bytes(n)


# --- sizes -------------------------------------------------------------------------------------

def size_evidence(flow: Flow) -> dict:
    """The flow's request sizes: percentiles of its histogram (Flow.sizes) where the probes keep
    one, else its mean (bytes / requests)."""
    c = flow.counts
    if flow.sizes is not None and flow.sizes.count:
        h = flow.sizes
        return {"sizes": "histogram", "p50": h.quantile(0.5), "p90": h.quantile(0.9), "p99": h.quantile(0.99),
                "requests": h.count}
    return {"sizes": "mean", "mean": round(c.bytes / c.zc_requests, 1) if c.zc_requests else 0.0,
            "requests": c.zc_requests}


def typical_size(sizes: dict) -> float:
    return sizes["p50"] if sizes["sizes"] == "histogram" else sizes["mean"]


def bytes_below(flow: Flow, limit: float) -> float:
    """Share of the flow's bytes in requests smaller than `limit`: from the histogram (each log2
    bucket's requests taken at 3/4 of its upper bound; a bucket that straddles `limit` counts as
    not below: its requests may all be at or above it, and advice never rests on a guess), else
    1 or 0 by the mean."""
    h = flow.sizes
    if h is None or not h.count:
        mean = flow.counts.bytes / flow.counts.zc_requests if flow.counts.zc_requests else 0.0
        return 1.0 if mean < limit else 0.0
    below = total = 0.0
    for le, n in h.buckets:
        weight = n * 0.75 * le
        total += weight
        below += weight if le <= limit else 0.0
    return below / total if total else 0.0


# --- per flow ------------------------------------------------------------------------------------

class Advisor:
    """Advice for reports: `saved` measurements, `paths` of sockets' devices, `facts` of the host."""

    def __init__(self, saved: Saved, paths: DevicePaths | None = None, facts: HostFacts | None = None) -> None:
        self.saved = saved
        self.paths = paths
        self.facts = facts or HostFacts.read()

    def advise(self, report: Report, seconds: float | None = None) -> Report:
        """Fill report.advice (totals) and each process's advice; `seconds` the time the counts
        cover (for rates: notifications_late needs it). Returns the report."""
        for proc in report.processes:
            proc.advice = self.process(report, proc, seconds)
        report.advice = totals(report.processes)
        return report

    def process(self, report: Report, proc: ProcessReport, seconds: float | None) -> list[Advice]:
        out: list[Advice] = []
        for flow in proc.flows:
            out += self._fixable(proc, flow)
            copied = self._always_copied(report, proc, flow)
            out += copied
            if not copied and (flow.counts.zerocopied or flow.counts.unknown):  # zerocopy worked (or may have)
                out += self._size(report, proc, flow)
        out += self._late(report, proc, seconds)
        return out

    # fixable_not_attempted --------------------------------------------------------------------

    def _fixable(self, proc: ProcessReport, flow: Flow) -> list[Advice]:
        out = []
        reasons = flow.counts.not_attempted_reasons
        for reason in FIXABLE:
            n = reasons.get(reason, 0)
            if not n:
                continue
            ev = {"api": flow.api, "proto": flow.proto, "reason": reason, "requests": n}
            if reason == "enobufs_optmem":
                cur = self.facts.optmem_max
                ev["optmem_max"] = cur
                ev["suggested_optmem_max"] = suggest = 1 << max(20, (2 * (cur or 0)).bit_length())
                text = (f"{n} {flow.api} sends got ENOBUFS: the socket's notifications in flight exceeded "
                        f"net.core.optmem_max ({cur if cur is not None else 'unknown'} B); raise it "
                        f"(sysctl -w net.core.optmem_max={suggest}) or read notifications sooner")
            elif reason == "enobufs_memlock":
                limits = self.facts.memlock(proc.pid)
                ev["rlimit_memlock"] = ({"soft": limits[0], "hard": limits[1]} if limits else None)
                ev["cap_ipc_lock"] = self.facts.ipc_lock(proc.pid)
                now = "unknown (process gone)" if not limits else (
                    "unlimited" if limits[0] is None else _bytes(limits[0]))
                text = (f"{n} {flow.api} sends got ENOBUFS: pinned pages exceeded RLIMIT_MEMLOCK (now {now}); "
                        "raise it (LimitMEMLOCK= in its systemd unit, ulimit -l, or --ulimit memlock for a "
                        "container) or give the process CAP_IPC_LOCK")
            else:
                text = (f"{n} MSG_ZEROCOPY sends on sockets without SO_ZEROCOPY were plain copies: call "
                        "setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof one) before sending")
            out.append(Advice("fixable_not_attempted", text, ev))
        return out

    # always_copied ------------------------------------------------------------------------------

    def _always_copied(self, report: Report, proc: ProcessReport, flow: Flow) -> list[Advice]:
        c = flow.counts
        if c.bytes and c.sw_gso_bytes >= ALWAYS_SHARE * c.bytes:
            return [self._software_gso(flow)]
        always = {r: n for r, n in c.copied_reasons.items() if r in ALWAYS_COPIES}
        decided = c.zerocopied + c.copied
        if not always or sum(always.values()) < ALWAYS_SHARE * decided:
            return []
        reason = max(always, key=always.get)
        api, base = FLOW_API[flow.api]
        sizes = size_evidence(flow)
        ev = {"api": flow.api, "proto": flow.proto, "reason": reason, "copied": c.copied, "requests": c.zc_requests,
              **sizes}
        targets = MEASURED_ON.get(reason, ())
        m = crossover.match(self.saved, self.facts.kernel, flow.proto, api, None,
                  want=lambda rec: rec.get("target") in targets and rec["crossovers"].get(api, {}).get("always_copied"))
        what = f"{c.copied} of {decided} {flow.api} requests were copied ({reason}): this path always copies"
        if m.record:
            cost = crossover.measured_at(m.record, api, base, typical_size(sizes))
            ev.update(cost=cost, measurement=crossover.record_evidence(m.record))
            extra = cost.get("extra_cpu_us_per_request")
            text = (f"{what}; the failed attempt costs {extra:+.2f} us of sender CPU per request "
                    f"({cost['extra_percent']:+.0f} %) against {base} at {cost['size']} B, measured on "
                    f"{m.record['target']} ({m.record['date'][:10]}): send without zerocopy on this path"
                    if extra is not None else f"{what}: send without zerocopy on this path")
        else:
            command = crossover.command_for(targets[0] if targets else None, flow.proto)
            ev.update(cost=None, not_measured=(
                f"no {reason} path measured on this kernel: run {command}" if targets else
                f"zctrace bench has no target that copies for {reason}: its cost is not measured"),
                ignored=m.ignored)
            if targets:
                ev["command"] = command
            text = (f"{what}: the attempt costs pinning, a notification and its read per request for "
                    f"nothing; send without zerocopy on this path. What it costs here was not measured"
                    + (f": run {command}" if targets else ""))
        return [Advice("always_copied", text, ev)]

    def _software_gso(self, flow: Flow) -> Advice:
        """Most of the flow's bytes copied by software segmentation: the kernel said zero-copy for
        its requests, so their reasons do not show it (the flow's sw_gso counters do)."""
        c = flow.counts
        ev = {"api": flow.api, "proto": flow.proto, "reason": "software_gso", "copied": c.sw_gso_copies,
              "copied_bytes": c.sw_gso_bytes, "bytes": c.bytes, "requests": c.zc_requests, **size_evidence(flow),
              "cost": None, "not_measured": "zctrace bench has no target that copies for software_gso: "
                                            "its cost is not measured"}
        share = 100 * c.sw_gso_bytes / c.bytes
        text = (f"{_bytes(c.sw_gso_bytes)} of the {_bytes(c.bytes)} this flow sent ({share:.0f} %) were copied "
                f"by software segmentation without scatter-gather (software_gso) although the kernel reported "
                f"its {flow.api} requests zero-copy: the attempt costs pinning and notifications for nothing "
                f"on this path; send without zerocopy here, or use a path that keeps scatter-gather")
        return Advice("always_copied", text, ev)

    # below_crossover / crossover_not_measured --------------------------------------------------

    def _flow_path(self, report: Report, proc: ProcessReport, flow: Flow) -> tuple[NetPath | None, str, dict]:
        if flow.api != "msg_zerocopy":
            return None, ("path not known: zctrace sees no socket of io_uring sends (the probes keep "
                          "socket rows for MSG_ZEROCOPY only)"), {}
        socks = [s for s in report.sockets if s.pid == proc.pid and s.proto == flow.proto]
        if not socks:
            return None, "path not known: no socket row of this flow (only the most copied sockets are kept)", {}
        top = max(socks, key=lambda s: (s.bytes, s.requests))
        ev = {"netns": top.netns, "ifindex": top.ifindex, "sockets": len(socks)}
        if self.paths is None:
            return None, "path not known: the devices were not looked up", ev
        path, why = self.paths.get(top.netns, top.ifindex)
        return path, (f"path not known: {why}" if path is None else ""), ev

    def _size(self, report: Report, proc: ProcessReport, flow: Flow) -> list[Advice]:
        api, base = FLOW_API[flow.api]
        sizes = size_evidence(flow)
        path, why, sock = self._flow_path(report, proc, flow)
        ev = {"api": flow.api, "proto": flow.proto, **sizes, "path": path.to_json() if path else None, **sock}
        m = crossover.match(self.saved, self.facts.kernel, flow.proto, api, path) if path else crossover.Match(None, [])
        if m.record is None:
            target = crossover.target_for(path) if path is not None else None
            if path is not None:
                why = (f"no crossover measured on this flow's path, {path.describe()}, with kernel "
                       f"{self.facts.kernel}")
            command = crossover.command_for(target, flow.proto)
            measured = [{"target": r["target"], "path": r.get("path"), "crossover":
                         r["crossovers"].get(api, {}).get("vs", {}).get(base, {}).get("crossover")}
                        for r in self.saved.records
                        if r.get("kernel") == self.facts.kernel and r.get("proto") == flow.proto]
            ev.update(why=why, command=command, ignored=m.ignored, measured_elsewhere=measured,
                      unreadable=[{"file": f, "why": w} for f, w in self.saved.unreadable])
            text = (f"is zerocopy worth it for these {flow.api} sends? Not known: {why}. "
                    f"Measure it: {command}")
            if m.ignored:
                text += " (saved results not used: " + "; ".join(i["why"] for i in m.ignored) + ")"
            if measured and path is None:
                text += (". Measured on this host, for other paths: " + ", ".join(
                    f"{x['target']} from {x['crossover']} B" if x["crossover"] else f"{x['target']} never"
                    for x in measured) + " (not applied)")
            return [Advice("crossover_not_measured", text, ev)]
        rec = m.record
        api_rec = rec["crossovers"][api]
        cross = api_rec["vs"][base]["crossover"]
        limit = float(cross) if cross else float("inf")
        share = bytes_below(flow, limit)
        if share <= 0.5:
            return []
        at = crossover.measured_at(rec, api, base, typical_size(sizes))
        ev.update(crossover={"size": cross, "never_up_to": None if cross else api_rec["largest"],
                             "baseline": base, "by": "sender CPU per request"},
                  bytes_below_share=round(share, 3), measured=at, measurement=crossover.record_evidence(rec),
                  ignored=m.ignored)
        typical = (f"p50 {sizes['p50']:.0f} B" if sizes["sizes"] == "histogram" else f"mean {sizes['mean']:.0f} B")
        where = f"{cross} B" if cross else f"no size up to {api_rec['largest']} B"
        cost = ""
        if at.get("extra_cpu_us_per_request") is not None:
            cost = (f"; at {at['size']} B zerocopy took {at['zerocopy_cpu_us_per_request']:.2f} us of sender CPU "
                    f"per request, {base} {at['baseline_cpu_us_per_request']:.2f} us")
        most = (f"{share:.0%} of the {flow.api} bytes go in requests ({typical})" if sizes["sizes"] == "histogram"
                else f"the {flow.api} requests ({typical}; no size histogram yet) go")
        text = (f"{most} below where zerocopy pays "
                f"on this path: {where} (measured {rec['date'][:10]} on {rec['target']}){cost}: "
                f"{'copy' if base == 'copy' else 'io_uring send'} would cost less CPU")
        return [Advice("below_crossover", text, ev)]

    # notifications_late -------------------------------------------------------------------------

    def _late(self, report: Report, proc: ProcessReport, seconds: float | None) -> list[Advice]:
        if not seconds or seconds <= 0:
            return []
        out = []
        for api, flows in (("msg_zerocopy", [f for f in proc.flows if f.api == "msg_zerocopy"]),
                           ("io_uring", [f for f in proc.flows if f.api == "io_uring"])):
            h = report.notification_latency.get(api)
            reqs = sum(f.counts.zc_requests for f in flows)
            if not flows or not reqs or h is None or not h.count:
                continue
            if api == "msg_zerocopy" and not report.sees_completions:
                # The tracepoint tier times MSG_ZEROCOPY sends to the application's read of the
                # notification; optmem and pinned pages are released at the completion, earlier.
                continue
            p99 = h.quantile(0.99)
            rate = reqs / seconds
            nbytes = sum(f.counts.bytes for f in flows)
            base = {"api": api, "latency_p99_s": p99, "latency_scope": "all processes (one histogram per API)",
                    "requests_per_s": round(rate, 1), "seconds": round(seconds, 3)}
            if api == "msg_zerocopy" and self.facts.optmem_max:
                socks = max(1, len([s for s in report.sockets if s.pid == proc.pid]))
                in_flight = rate / socks * p99
                need = in_flight * NOTIFICATION_OPTMEM
                if need >= LATE_SHARE * self.facts.optmem_max:
                    out.append(Advice("notifications_late", (
                        f"MSG_ZEROCOPY notifications wait long (p99 <= {p99 * 1e3:.1f} ms): at {rate:,.0f} "
                        f"requests/s over {socks} socket(s) about {in_flight:,.0f} are in flight per socket, "
                        f"about {_bytes(need)} of optmem against net.core.optmem_max {_bytes(self.facts.optmem_max)}: "
                        "sends will fail with ENOBUFS; read the error queue sooner or raise optmem_max"),
                        {**base, "limit": "optmem_max", "optmem_max": self.facts.optmem_max, "sockets": socks,
                         "in_flight_per_socket": round(in_flight, 1),
                         "optmem_per_notification_estimate": NOTIFICATION_OPTMEM,
                         "optmem_needed_estimate": round(need),
                         "arithmetic": "requests/s / sockets x latency p99 = notifications in flight per socket; "
                                       "x ~850 B (an skb's truesize, an estimate) = optmem held"}))
            if self.facts.ipc_lock(proc.pid):
                continue
            limits = self.facts.memlock(proc.pid)
            if not limits or limits[0] is None:
                continue
            pinned_now = sum(f.counts.pinned_bytes for f in flows)
            need = max(float(pinned_now), nbytes / seconds * p99)
            if need >= LATE_SHARE * limits[0]:
                out.append(Advice("notifications_late", (
                    f"{api} sends stay pinned long (notification p99 <= {p99 * 1e3:.1f} ms): at "
                    f"{_bytes(nbytes / seconds)}/s about {_bytes(need)} is pinned at a time, against "
                    f"RLIMIT_MEMLOCK {_bytes(limits[0])}: sends will fail with ENOBUFS (ENOMEM for io_uring "
                    "registered buffers); reap notifications sooner, raise LimitMEMLOCK / ulimit -l, or give "
                    "CAP_IPC_LOCK"),
                    {**base, "limit": "rlimit_memlock", "rlimit_memlock": limits[0], "pinned_bytes_now": pinned_now,
                     "bytes_per_s": round(nbytes / seconds, 1), "pinned_estimate": round(need),
                     "arithmetic": "max(pinned bytes now, bytes/s x latency p99) = bytes pinned at a time"}))
        return out


def totals(processes: list[ProcessReport]) -> list[Advice]:
    """The totals' advice: per code, how many processes have it, which, and the first one's text."""
    by_code: dict[str, list[tuple[ProcessReport, Advice]]] = {}
    for p in processes:
        for a in p.advice:
            by_code.setdefault(a.code, []).append((p, a))
    out = []
    for code in CODES:
        got = by_code.get(code)
        if not got:
            continue
        pids = sorted({p.pid for p, _ in got})
        first_p, first = got[0]
        text = (f"{len(pids)} process{'es' if len(pids) > 1 else ''}: e.g. pid {first_p.pid} "
                f"({first_p.comm}): {first.text}")
        out.append(Advice(code, text, {"pids": pids, "count": len(got)}))
    return out


def for_session(paths: DevicePaths | None = None) -> Advisor:
    """An Advisor with the saved measurements of the state directory and this host's facts."""
    return Advisor(crossover.Saved.load(), paths if paths is not None else DevicePaths(), HostFacts.read())

