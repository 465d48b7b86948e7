"""Signals while a target is set up or torn down: SIGTERM unwinds instead of killing (so the
target's namespace and devices are removed), and SIGINT/SIGTERM wait until a step is done."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager


def unwind_on_sigterm() -> ExitStack:
    """Until the returned stack is closed, SIGTERM unwinds (SystemExit) instead of killing the
    process on the spot, which would leave the target's namespace and veth behind. Only where
    SIGTERM still has its default action (main thread): a program's own handler is kept."""
    restore = ExitStack()
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
        def stop(signum: int, _frame: object) -> None:
            raise SystemExit(128 + signum)
        signal.signal(signal.SIGTERM, stop)
        restore.callback(signal.signal, signal.SIGTERM, signal.SIG_DFL)
    return restore


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM during the block (main thread only), then deliver them.

    A fork child made inside the block exits on them instead (pyroute2 stops its helper
    children with SIGTERM and waits for them).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()
    pending: list[int] = []

    def hold(signum: int, _frame: object) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        pending.append(signum)

    old = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for s in dict.fromkeys(pending):
            signal.raise_signal(s)
