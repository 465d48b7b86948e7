"""The suites' progress: a bar on a terminal, one plain line per cell otherwise."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


class Progress:
    """A progress bar on a terminal, one plain line per step otherwise."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.tty = stream.isatty()
        self.t0 = time.monotonic()

    def step(self, what: str) -> None:
        self.done += 1
        if not self.tty:
            print(f"zctrace: bench {self.done}/{self.total}: {what}", file=self.stream, flush=True)
            return
        filled = self.WIDTH * self.done // self.total
        elapsed = time.monotonic() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        line = (f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total} "
                f"{elapsed:.0f}s, ~{eta:.0f}s left  {what}")
        self.stream.write(line[:shutil.get_terminal_size().columns].ljust(40) + "\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.done:
            self.stream.write("\n")
            self.stream.flush()

