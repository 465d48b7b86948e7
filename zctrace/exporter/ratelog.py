"""A log that a flood cannot fill: one line per kind of event at most every `interval` seconds."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field


@dataclass
class RateLimitedLog:
    """Logs the first event of a kind at once, then at most one line per kind every `interval`
    seconds, saying how many like it were held back since the last line."""

    logger: logging.Logger
    interval: float = 60.0
    _last: dict[str, float] = field(default_factory=dict)
    _held: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def warning(self, kind: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self._held[kind] = self._held.get(kind, 0) + 1
                return
            held = self._held.pop(kind, 0)
            self._last[kind] = now
        more = f" (and {held} more like it in the last {now - last:.0f} s)" if held and last is not None else ""
        self.logger.warning("%s%s", message, more)
