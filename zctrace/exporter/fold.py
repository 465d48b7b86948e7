"""Cap the process labels of the per-process counters without a counter ever going down.

The probes count per (pid, api, proto) row. Exported series are per (owner, api, proto), the
owner being the values of the process labels the exporter was asked for (comm, and with
attribution the cgroup, container and pod: the collector's `owner_of`; by default the comm, or
comm and pid with per_pid). At each scrape:

- the top N owners by bytes sent so far (then requests), their exited processes included, are
  *named*: their series count their increases;
- everyone else's increases since the previous scrape go to the owner `other`;
- an owner that drops out of the top N (its processes quieter than others, or all exited: the
  rows of exited processes leave the maps, zctrace/lifecycle.py) keeps its series, *frozen* at
  its value, so sums over owners never decrease; if it comes back its series resumes from
  there. At most N frozen owners are kept (the biggest); one evicted beyond that stops being
  exported (the only case where an instant sum over owners can drop; rate() and increase() are
  unaffected).
- with a `grace`, an owner none of whose processes has had a row for `grace` seconds (an exited
  container) is neither named nor frozen any more: its series, which kept their final values
  that long so every scraper saw them, go, its place is free for others, and it is forgotten
  (memory stays bounded by the owners seen within `grace`).
- an owner that stops being shown hands what no view (scrape) has shown of its counts yet to
  `other`: every count reaches some series, so rate() and increase() summed over owners equal
  the probes' counts (with one scraper; a second scraper may miss what the first one saw of a
  series that is dropped before its own scrape).

So every exported series is monotonic, there are at most 2N+1 owners (N named, N frozen,
`other`), and an owner entering the top N starts its series at its increase from then on (what
it sent before stays in `other`).

A series (and each counter of it) is exported as 0 the first time, and with its value from the
next scrape on: Prometheus ignores the first sample of a new series in rate() and increase(),
so a short-lived process would otherwise be invisible to them. Sums over owners therefore lag
by one scrape for new series, and never decrease.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..snapshot import StatsRow

OTHER = "other"
DORMANT = 1024  # owners not shown whose totals are kept, the most recently seen


@dataclass(frozen=True, order=True)
class Owner:
    """The process labels of a series ('' for a label not exported): comm, pid (--per-pid), and
    the workload's cgroup path, container id and pod UID (zctrace/workloads.py)."""

    comm: str
    pid: str = ""
    cgroup: str = ""
    container_id: str = ""
    pod_uid: str = ""


OTHER_OWNER = Owner(OTHER, cgroup=OTHER)
SeriesKey = tuple[Owner, str, str]  # (owner, api, proto)


@dataclass
class Folded:
    """One scrape's view: cumulative counters per exported series, and where each row's owner
    counts now (itself if named, else `other`)."""

    series: dict[SeriesKey, dict[str, int]]
    label_of: dict[Owner, Owner]


@dataclass
class Debut:
    """Remembers which series were exported: a new one shows 0 once (see the module doc)."""

    seen: set = field(default_factory=set)

    def value(self, key: object, value: float) -> float:
        if key in self.seen:
            return value
        self.seen.add(key)
        return 0

    def forget(self, keep) -> None:
        """Forget series for which `keep(key)` is false (bounded memory)."""
        self.seen = {k for k in self.seen if keep(k)}


@dataclass
class Folder:
    """Turns successive snapshots of monotonic per-row counters into capped, monotonic series."""

    top: int
    per_pid: bool = False
    owner_of: Callable[[StatsRow], Owner] | None = None  # default: comm (and pid with per_pid)
    grace: float | None = None  # seconds an owner without rows stays exported (None: for ever)
    clock: Callable[[], float] = time.monotonic
    _last: dict[tuple[int, str, str], tuple[str, dict[str, int]]] = field(default_factory=dict)
    _acc: dict[SeriesKey, dict[str, int]] = field(default_factory=dict)
    _frozen: set[Owner] = field(default_factory=set)
    _named: set[Owner] = field(default_factory=set)
    _debut: Debut = field(default_factory=Debut)
    _seen: dict[Owner, int] = field(default_factory=dict)  # owner -> the update it last had rows at
    _seen_at: dict[Owner, float] = field(default_factory=dict)  # owner -> when it last had rows (clock)
    _volume: dict[Owner, tuple[int, int]] = field(default_factory=dict)  # owner -> bytes, counts sent
    _label_of: dict[Owner, Owner] = field(default_factory=dict)
    _exported: dict[SeriesKey, dict[str, int]] = field(default_factory=dict)  # values the last view showed
    _tick: int = 0

    def owner(self, row: StatsRow) -> Owner:
        if self.owner_of is not None:
            return self.owner_of(row)
        return Owner(row.comm, str(row.pid) if self.per_pid else "")

    def update(self, rows: list[StatsRow]) -> Folded:
        """Fold `rows` in, then the view a scrape exports."""
        self.fold(rows)
        return self.view()

    def fold(self, rows: list[StatsRow]) -> None:
        """Take in a snapshot's rows: each row's increase since the previous fold goes to its
        owner's series (the daemon folds between scrapes too, before exited processes' rows
        leave the maps: zctrace/lifecycle.py)."""
        # A row deleted and reused by another process, or whose process was retired and whose
        # pid came back, starts from 0.
        last: dict[tuple[int, str, str], tuple[str, dict[str, int]]] = {}
        increases: list[tuple[Owner, StatsRow, dict[str, int]]] = []
        owners: dict[tuple[str, int], Owner] = {}
        for row in rows:
            owner = owners.get((row.comm, row.pid))
            if owner is None:
                owner = owners[(row.comm, row.pid)] = self.owner(row)
            key = (row.pid, row.api, row.proto)
            prev_comm, prev = self._last.get(key, (row.comm, {}))
            last[key] = (row.comm, row.counters)
            b, n = self._volume.get(owner, (0, 0))
            if prev_comm != row.comm:
                prev = {}
            elif prev == row.counters:  # nothing new: most rows, when thousands of processes exited
                increases.append((owner, row, {}))
                self._volume[owner] = (b, n)
                continue
            inc = {name: value - prev.get(name, 0) if value >= prev.get(name, 0) else value
                   for name, value in row.counters.items()}
            increases.append((owner, row, inc))
            self._volume[owner] = (b + inc.get("bytes", 0), n + sum(inc.values()))
        self._last = last
        # Owners rank by all they sent, their exited processes included, until `grace` expired.
        now = self.clock()
        self._seen_at.update(dict.fromkeys(owners.values(), now))
        expired = set() if self.grace is None else {
            o for o in self._volume if now - self._seen_at.get(o, now) >= self.grace}
        volume = {o: v for o, v in self._volume.items() if o not in expired}
        named = set(sorted(volume, key=lambda o: (-volume[o][0], -volume[o][1], o))[:self.top])
        self._label_of = {o: o if o in named else OTHER_OWNER for o in volume}
        for owner, row, inc in increases:
            series = (self._label_of[owner], row.api, row.proto)
            acc = self._acc.get(series)
            if acc is None:
                acc = self._acc[series] = dict.fromkeys(row.counters, 0)
            for name, n in inc.items():
                acc[name] = acc.get(name, 0) + n
        # An owner out of the top N stays frozen while among the N biggest such. Owners not shown
        # keep their totals (to resume from them if they come back) while among the DORMANT last
        # seen; the rest are forgotten (bounded memory). `other` is forever.
        self._tick += 1
        self._seen.update(dict.fromkeys(owners.values(), self._tick))
        was_shown = self._shown()
        self._frozen = self._keep_frozen((self._frozen | self._named) - named - expired)
        self._named = named
        shown = self._shown()
        self._hand_over(was_shown - shown)
        dormant = sorted(self._seen.keys() - shown - expired, key=lambda o: -self._seen[o])[:DORMANT]
        kept = shown | set(dormant)
        self._seen = {o: t for o, t in self._seen.items() if o in kept}
        self._seen_at = {o: t for o, t in self._seen_at.items() if o in kept}
        self._volume = {o: v for o, v in self._volume.items() if o in kept}
        self._acc = {k: v for k, v in self._acc.items() if k[0] in kept}
        self._exported = {k: v for k, v in self._exported.items() if k in self._acc}
        self._debut.forget(lambda k: k[0] in self._acc)

    def _hand_over(self, dropped: set[Owner]) -> None:
        """Owners no longer shown: what they counted that no view has shown yet (a series
        dropped within a scrape interval of its increases, or shown only as its debut 0) goes
        to `other`, so every count reaches some series; their totals stay at what was shown, so
        a series that comes back resumes from its last exported value."""
        for key, acc in list(self._acc.items()):
            if key[0] not in dropped:
                continue
            shown = self._exported.get(key, {})
            other = self._acc.setdefault((OTHER_OWNER, key[1], key[2]), dict.fromkeys(acc, 0))
            for name, n in acc.items():
                unseen = n - shown.get(name, 0)
                if unseen > 0:
                    other[name] = other.get(name, 0) + unseen
                    acc[name] = shown.get(name, 0)

    def view(self) -> Folded:
        """The exported series (a series new since the last view shows 0 once) and where each
        owner counts now."""
        series = {k: {name: self._debut.value((k, name), n) for name, n in v.items()}
                  for k, v in self._acc.items() if k[0] in self._shown()}
        self._exported.update({k: dict(v) for k, v in series.items()})
        return Folded(series, dict(self._label_of))

    def _shown(self) -> set[Owner]:
        return self._named | self._frozen | {OTHER_OWNER}

    def _keep_frozen(self, frozen: set[Owner]) -> set[Owner]:
        """The `top` biggest frozen owners."""
        size: dict[Owner, tuple[int, int]] = {}
        for (owner, _, _), c in self._acc.items():
            if owner in frozen:
                b, n = size.get(owner, (0, 0))
                size[owner] = (b + c.get("bytes", 0), n + sum(c.values()))
        return set(sorted(size, key=lambda o: (-size[o][0], -size[o][1], o))[:self.top])
