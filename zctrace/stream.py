"""`zctrace trace --interval S`: what changed in each interval, as JSON lines or a human line.

`delta(current, previous)` subtracts two Report.to_json() documents (or parts of them)
generically, so fields added to the report later come along without a change here:

- dicts are walked key by key over both documents;
- numeric leaves are subtracted (current - previous; a key the previous one lacks counts from
  0, so a process new in the interval counts from 0), except identifiers (IDS, e.g. a process's
  cgroup id) and the keys of keyed lists, which are carried;
- lists named in KEYS (processes by pid, flows by api and proto) are matched item by item on
  their key; an item whose numeric leaves did not change is left out, so is a reason (MAPS)
  that did not;
- strings, booleans, None and other lists are carried from the current document unchanged;
- `top_reason` is worked out again from the interval's own reasons, and a histogram's (a flow's
  `sizes`) buckets are matched by `le` and its p50 and p99 worked out from the interval's.

Counters only grow; `undecided`, `unread` and `pinned_bytes` are gauges, so their delta can be
negative (requests decided, or pages released, in the interval). Summed over the intervals of a
run, every delta gives the final report's value.
"""

from __future__ import annotations

import json
import time
from typing import Callable, TextIO

from . import model
from .errors import ZctraceError
from .report import human_bytes

KEYS = {"processes": ("pid",), "flows": ("api", "proto"), "buckets": ("le",)}
IDS = frozenset({"pid", "cgroup", "cgroup_id"})  # numbers that name something: carried, never subtracted
MAPS = frozenset({"copied_reasons", "not_attempted_reasons", "lost", "kernel_events"})  # keyed by name
PARTS = ("totals", "processes", "lost")  # what an interval's delta covers
_MISSING = object()


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _changed(x: object) -> bool:
    """Does `x` (a delta) hold a non-zero number outside its identifiers?"""
    if isinstance(x, dict):
        return any(_changed(v) for k, v in x.items() if k not in IDS)
    if isinstance(x, list):
        return any(_changed(v) for v in x)
    return _number(x) and x != 0


def _key(item: dict, fields: tuple[str, ...]) -> tuple:
    return tuple(item.get(f) for f in fields)


def _sub(cur: object, prev: object, name: str | None = None) -> object:
    """cur - prev, either _MISSING (counted as nothing)."""
    here = cur if cur is not _MISSING else prev
    if isinstance(here, dict):
        c = cur if isinstance(cur, dict) else {}
        p = prev if isinstance(prev, dict) else {}
        out = {k: _sub(c.get(k, _MISSING), p.get(k, _MISSING), k) for k in (*c, *(k for k in p if k not in c))}
        if name in MAPS:
            out = {k: v for k, v in out.items() if _changed(v)}
        if "top_reason" in out:
            out["top_reason"] = _top_reason(out)
        if "buckets" in out and "p50" in out:  # a histogram (a flow's sizes): the interval's quantiles
            h = model.Histogram([(b["le"], b["count"]) for b in out["buckets"]])
            out.update(p50=h.quantile(0.5), p99=h.quantile(0.99))
        return out
    if isinstance(here, list) and name in KEYS:
        fields = KEYS[name]
        c = {_key(i, fields): i for i in (cur if isinstance(cur, list) else [])}
        p = {_key(i, fields): i for i in (prev if isinstance(prev, list) else [])}
        items = ({**_sub(c.get(k, _MISSING), p.get(k, _MISSING)), **dict(zip(fields, k))}  # type: ignore[dict-item]
                 for k in (*c, *(k for k in p if k not in c)))
        return [i for i in items if _changed(i)]
    if name not in IDS and _number(here) and all(_number(x) or x is _MISSING for x in (cur, prev)):
        return (cur if cur is not _MISSING else 0) - (prev if prev is not _MISSING else 0)
    return here


def _top_reason(counts: dict) -> str:
    """model.Counts.top_reason of a delta's reasons (those that grew in the interval)."""
    grew = lambda name: {k: v for k, v in counts.get(name, {}).items() if _number(v) and v > 0}  # noqa: E731
    return model.Counts(copied_reasons=grew("copied_reasons"),
                        not_attempted_reasons=grew("not_attempted_reasons")).top_reason


def delta(current: dict, previous: dict | None) -> dict:
    """`current` - `previous` (None: nothing before, as at the start of a trace); see the module doc."""
    return _sub(current, previous if previous is not None else {})  # type: ignore[return-value]


def interval(current: dict, previous: dict | None, start: float, end: float, seq: int) -> dict:
    """The JSON object of one interval from the reports (to_json()) at its end and its start:
    `delta` what changed in it, `cumulative` the totals since the trace began."""
    part = lambda doc: {k: doc[k] for k in PARTS if k in doc} if doc is not None else None  # noqa: E731
    return {"type": "interval", "seq": seq, "start": round(start, 6), "end": round(end, 6),
            "tier": current.get("tier"), "delta": delta(part(current), part(previous)),
            "cumulative": {"totals": current["totals"]}}


def human(obj: dict) -> str:
    """One interval (an interval() object) in one line."""
    t = obj["delta"]["totals"]
    final = ", ".join(f"{v} {t.get(v, 0)}" for v in model.VERDICTS)
    when = time.strftime("%H:%M:%S", time.localtime(obj["end"]))
    return (f"zctrace: {when} +{obj['end'] - obj['start']:.1f} s: {t.get('zc_requests', 0)} requests, "
            f"{human_bytes(t.get('bytes', 0))}: {final}; undecided {t.get('undecided', 0):+d}; "
            f"top reason {t.get('top_reason', '-')}")


class Stream:
    """The intervals of one trace, `every` seconds: at each sweep, `due()` says whether one is
    over, `emit()` writes it from the report (to_json()) at its end: a JSON line to `out`
    (flushed), else a human line to `note`. `finish()` writes the last, shorter interval and then
    the report itself."""

    def __init__(self, every: float, out: TextIO | None, note: TextIO | None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.every = every
        self._out, self._note = out, note
        self._clock, self._wall = clock, wall
        self._next = clock() + every
        self._start = wall()
        self._prev: dict | None = None
        self.seq = 0

    def due(self) -> bool:
        """Is an interval over? (Then the next one starts: emit() it now.)"""
        now = self._clock()
        if now < self._next:
            return False
        while self._next <= now:  # a late sweep skips the boundaries it missed: no empty intervals
            self._next += self.every
        return True

    def finish(self, report: dict) -> None:
        self.emit(report)
        if self._out is not None:
            self._write({"type": "report", **report})

    def emit(self, doc: dict) -> None:
        end = self._wall()
        self.seq += 1
        obj = interval(doc, self._prev, self._start, end, self.seq)
        self._prev, self._start = doc, end
        if self._out is not None:
            self._write(obj)
        if self._note is not None:
            print(human(obj), file=self._note, flush=True)

    def _write(self, obj: dict) -> None:
        try:
            self._out.write(json.dumps(obj) + "\n")
            self._out.flush()
        except OSError as e:
            raise ZctraceError(f"cannot write the JSON lines: {e.strerror or e}") from None
